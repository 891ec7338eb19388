"""The first-time conversion of a registry model, run as a new user's first command runs it.

A fresh cache directory forces the real path (sha256 check, GGUF read, bf16 save); the SmolLM2 fixture keeps it to
about 20 s. Run in a subprocess so the output checked is what a terminal would get, tqdm and warnings included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sia_monitor.models import FIXTURE_MODEL, REGISTRY


def test_first_conversion_prints_one_display_and_no_library_noise(tmp_path: Path) -> None:
    env = {**os.environ, "SIA_MONITOR_CACHE": str(tmp_path)}
    code = f"from sia_monitor.models import convert_if_needed; convert_if_needed({FIXTURE_MODEL!r})"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    # transformers' own tqdm loop printed ~30 lines of "Converting and de-quantizing GGUF tensors..." here.
    assert "de-quantizing" not in done.stderr and "it/s]" not in done.stderr, done.stderr
    assert "warn" not in done.stderr.lower(), done.stderr
    assert done.stdout == ""  # progress goes to stderr, so `--json` on stdout stays parseable
    target = tmp_path / "models" / FIXTURE_MODEL
    manifest = json.loads((target / "sia-monitor-manifest.json").read_text())
    assert manifest["source_sha256"] == REGISTRY[FIXTURE_MODEL].sha256
    assert list(target.glob("*.safetensors")) and not list(target.glob("*.gguf"))
    assert not (tmp_path / "models" / f"{FIXTURE_MODEL}.partial").exists()
