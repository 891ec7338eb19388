"""`collect`: graded trajectories appended per batch, and a killed run resumes without redoing or duplicating."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.cli import main
from sia_monitor.collect import collect, regrade
from sia_monitor.errors import SIAError
from sia_monitor.trajectory import read_trajectories, write_trajectories

SETTINGS = GenerationSettings(max_new_tokens=24)


def test_collect_grades_and_skips_done_items(smol, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "svamp.jsonl"
    plan = collect(smol, "svamp", out, str(data_dir), limit=3, batch_size=2, settings=SETTINGS)
    assert len(plan.todo) == 3
    records = list(read_trajectories(out))
    assert [r.item_id for r in records] == ["chal-1", "chal-2", "chal-3"]
    assert all(r.benchmark == "svamp" and r.gold is not None and isinstance(r.correct, bool) for r in records)
    again = collect(smol, "svamp", out, str(data_dir), limit=4, batch_size=2, settings=SETTINGS)
    assert [item.item_id for item, _ in again.todo] == ["chal-4"]
    assert [r.item_id for r in read_trajectories(out)] == ["chal-1", "chal-2", "chal-3", "chal-4"]


def test_collect_refuses_a_file_of_another_model(smol, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "svamp.jsonl"
    collect(smol, "svamp", out, str(data_dir), limit=1, batch_size=1, settings=SETTINGS)
    records = list(read_trajectories(out))
    records[0].model_id = "some-other-model"
    write_trajectories(out, records, append=False)
    with pytest.raises(SIAError, match="another model"):
        collect(smol, "svamp", out, str(data_dir), limit=2, batch_size=1, settings=SETTINGS)


def test_several_samples_need_sampling(smol, data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="--temperature"):
        collect(smol, "svamp", tmp_path / "x.jsonl", str(data_dir), limit=1, samples=2, settings=SETTINGS)


def _line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_killed_collection_resumes_without_duplicates(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "svamp.jsonl.gz"
    command = [sys.executable, "-m", "sia_monitor.cli", "collect", "--benchmark", "svamp", "--limit", "5",
               "--batch-size", "1", "--max-new-tokens", "24", "--model", "smollm2-135m-instruct",
               "--data-dir", str(data_dir), "--out", str(out)]
    env = {**os.environ, "SIA_MONITOR_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            if out.exists() and len(list(read_trajectories(out, skip_truncated_tail=True))) >= 2:
                break
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    first = list(read_trajectories(out, skip_truncated_tail=True))
    assert 2 <= len(first) < 5, "the run should have been killed part-way"
    with out.open("ab") as damaged:  # what a kill in the middle of a write leaves behind
        damaged.write(b"\x1f\x8b\x08\x00garbage")

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert finished.returncode == 0, finished.stderr
    records = list(read_trajectories(out))
    ids = [r.item_id for r in records]
    assert sorted(ids) == sorted({*ids}) == ["chal-1", "chal-2", "chal-3", "chal-4", "chal-5"]
    assert [r.final_text for r in records[: len(first)]] == [r.final_text for r in first]


@pytest.mark.parametrize("flag", [None, "--no-hidden-states"])
def test_collect_command_records_hidden_states_by_default(data_dir: Path, tmp_path: Path, flag: str | None) -> None:
    """Every trajectory collected from now on can train a hidden-state calibrator: schema 2, a vector per step."""
    out = tmp_path / "svamp.jsonl"
    args = ["collect", "--benchmark", "svamp", "--limit", "1", "--max-new-tokens", "80", "--model",
            "smollm2-135m-instruct", "--data-dir", str(data_dir), "--out", str(out)]
    assert main(args + ([flag] if flag else [])) == 0
    (record,) = read_trajectories(out)
    assert record.steps and json.loads(out.read_text())["version"] == 2
    if flag:
        assert all(step.hidden is None for step in record.steps)
    else:
        assert all(step.hidden is not None and step.hidden.layers == [15, 22, 30] for step in record.steps)


def test_regrade_rereads_answers_in_place(smol, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "svamp.jsonl.gz"
    collect(smol, "svamp", out, str(data_dir), limit=2, batch_size=2, settings=SETTINGS)
    records = list(read_trajectories(out))
    records[0].final_text = f"So the answer is {records[0].gold}."
    records[1].final_text = "Therefore, she has 123456 left."
    write_trajectories(out, records, append=False)
    total, _ = regrade(out)
    assert total == 2
    first, second = read_trajectories(out)
    assert (first.parsed_answer, first.correct) == (records[0].gold, True)
    assert (second.parsed_answer, second.correct) == ("123456", False)
