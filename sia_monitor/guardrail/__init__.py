"""Acting on P(correct): the policy that decides stop / resample / accept (`policy`), the guarded run that
applies it attempt by attempt (`guarded`), over a live backend (`live`) or a saved trace (`replay`), and the
vote over many samples with kills and an adaptive stop (`vote`)."""
