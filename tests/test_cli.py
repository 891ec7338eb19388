"""The `sia-monitor` command line: streamed JSON events, saved trajectories, and one clear line per user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sia_monitor.cli import main
from sia_monitor.trajectory import read_trajectories

FIXTURE = ["--model", "smollm2-135m-instruct", "--max-new-tokens", "48"]


def test_run_json_streams_events_and_saves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save = tmp_path / "run.jsonl"
    code = main(["run", "Tom has 3 apples and buys 4 more. How many apples does he have?", "--json",
                 "--save", str(save), *FIXTURE])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[-1] == "final" and "token" in kinds
    text = "".join(e["text"] for e in events if e["kind"] == "token")
    (saved,) = list(read_trajectories(save))
    assert saved.final_text.strip() == text.strip() or text.startswith(saved.final_text[:10])
    assert events[-1]["trajectory"]["n_tokens"] == saved.n_tokens


def test_run_text_prints_step_rows_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "What is the boiling point of water at sea level?", "--choices",
                 "A) 50 C B) 100 C C) 150 C", "--steps", "sentence", *FIXTURE])
    assert code == 0
    out = capsys.readouterr().out
    assert "answer:" in out and "tokens/s:" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "   "], "question is empty"),
        (["run", "What is 2+3?", "--model", "no-such-model"], "Unknown model"),
        (["run", "What is 2+3?", "--choices", "just some words"], "Could not parse the choices"),
        (["run", "What is 2+3?", "--answer-type", "candidates"], "needs --candidates"),
        (["run", "What is 2+3?", "--steps", "regex", *FIXTURE], "needs a pattern"),
        (["run", "What is 2+3?", "--steps", "regex", "--step-regex", "(", *FIXTURE], "invalid"),
        (["collect", "--benchmark", "svamp", "--out", "x.jsonl", "--data-dir", "/nonexistent", *FIXTURE],
         "/nonexistent"),
    ],
)
def test_bad_input_is_one_clear_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err.replace("\n", " ")
    assert "Traceback" not in err


def test_not_a_model_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    assert main(["run", "What is 2+3?", "--model", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_help_reads_like_the_docs() -> None:
    result = subprocess.run([sys.executable, "-m", "sia_monitor.cli", "run", "--help"],
                            capture_output=True, text=True, check=True)
    for option in ("--model", "--answer-type", "--choices", "--save", "--json", "--steps"):
        assert option in result.stdout


def test_every_command_has_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` of each command says what it does, not just its usage line (`models --help` once said nothing)."""
    for command in ("run", "vote", "serve", "collect", "regrade", "fit", "evaluate", "models", "tui"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        usage, _, rest = capsys.readouterr().out.partition("\n\n")
        description = rest.split("\n\n")[0]
        assert usage.startswith("usage:") and not description.startswith(("options:", "positional")), command
        assert len(description) > 60, command


def test_hub_id_offline_is_a_clear_error() -> None:
    """A hub id is accepted, but offline it must fail with one line (HF_HUB_OFFLINE keeps the test off the network)."""
    result = subprocess.run(
        [sys.executable, "-m", "sia_monitor.cli", "run", "What is 2+3?", "--model", "someorg/some-model"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "model hub" in result.stderr and "Traceback" not in result.stderr
