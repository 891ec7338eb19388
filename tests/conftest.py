"""Shared pytest fixtures.

The benchmark data is read in place, never copied into the repository: from `SIA_MONITOR_DATA` or the
`shared/data` folder next to the repo. Its absence is a failure, not a skip, so a broken setup cannot pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sia_monitor  # noqa: F401  (first: it sets the OpenMP wait default before any test imports torch)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("SIA_MONITOR_DATA") or REPO.parent / "shared" / "data")
    if not (path / "gsm8k").is_dir():
        pytest.fail(f"Benchmark data not found at {path}: "
                    "set SIA_MONITOR_DATA to the folder holding gsm8k/, svamp/ and arc/.")
    return path


# Models: both are converted once into the local cache (~/.cache/sia-monitor/models) and load offline in about a
# second; nothing here downloads. Session-scoped so every test shares one copy of each.


@pytest.fixture(scope="session")
def smol():
    """A `Monitor` over SmolLM2-135M-Instruct (bf16): the fast fixture model."""
    from sia_monitor.backends.in_process import Monitor
    from sia_monitor.models import FIXTURE_MODEL, load_model

    return Monitor(load_model(FIXTURE_MODEL))


@pytest.fixture(scope="session")
def qwen():
    """A `Monitor` over the default model, Qwen2.5-Coder-0.5B-Instruct (bf16); tests using it are `default_model`."""
    from sia_monitor.backends.in_process import Monitor
    from sia_monitor.models import DEFAULT_MODEL, load_model

    return Monitor(load_model(DEFAULT_MODEL))
