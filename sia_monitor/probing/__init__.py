"""The hook inside `generate`: where a reasoning step ends (`segmentation`), the one-forward tree probe on the
live cache (`probe`), which answers it scores (`estimators`), the hidden states it keeps (`hidden_states`),
the `SIAMonitor` LogitsProcessor that ties them together (`monitor`), and per-row stopping (`stopping`)."""
