"""The package's public names all resolve (they are imported lazily, so a typo would only show on use)."""

import sia_monitor


def test_every_public_name_resolves() -> None:
    assert set(sia_monitor.__all__) == set(sia_monitor._EXPORTS)
    for name in sia_monitor.__all__:
        assert getattr(sia_monitor, name) is not None
