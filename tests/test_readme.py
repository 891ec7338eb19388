"""The README's code works as written: every ```python block runs on the real default model, every `sia-monitor`
command in a ```bash block (and after `$ ` in a ```text block) parses with the CLI's own parser, and the
`--json` event table names every event kind and every step and trajectory field, and the benchmark list
is the registry's.

Nothing is patched: a renamed option, an undefined name or a missing `max_new_tokens` in the README fails here.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import typing
from pathlib import Path

import pytest

from sia_monitor.cli import build_parser
from sia_monitor.tasks.benchmarks import BENCHMARKS
from sia_monitor.trajectory import MonitorEvent, StepRecord, Trajectory

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(README) if lang == language]


def commands() -> list[str]:
    """Every `sia-monitor ...` line of the README's bash blocks and `$ sia-monitor ...` line of its text blocks."""
    lines = [line for body in blocks("bash") for line in body.splitlines()]
    lines += [line.removeprefix("$ ") for body in blocks("text") for line in body.splitlines() if line.startswith("$ ")]
    found = []
    for line in lines:
        words = shlex.split(line, comments=True)  # drops a trailing `# comment`
        if words and words[0] in ("sia-monitor", ".venv/bin/sia-monitor"):
            found.append(line)
    return found


def test_readme_has_code() -> None:
    assert len(blocks("python")) >= 2
    assert len(commands()) >= 6


@pytest.mark.parametrize("line", commands())
def test_readme_command_parses(line: str) -> None:
    args = shlex.split(line, comments=True)[1:]
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exit:  # argparse reports an unknown option or a bad value by exiting
        pytest.fail(f"README command does not parse ({exit.code}): {line}")
    assert parsed.command == args[0]


def test_readme_activates_the_venv_before_the_first_command() -> None:
    first = README.index("sia-monitor run")
    assert ". .venv/bin/activate" in README[:first]


def test_readme_event_table_matches_the_code() -> None:
    section = README[README.index("### `--json` events"):]
    section = section[: section.index("\n#")]
    kinds = typing.get_args(typing.get_type_hints(MonitorEvent)["kind"])
    assert set(kinds) == {"token", "step", "final", "decision"}
    fields = [f.name for record in (StepRecord, Trajectory) for f in dataclasses.fields(record)]
    for name in (*kinds, *fields, "kind", "row", "schema", "version"):
        assert f"`{name}`" in section, f"the --json event table does not mention `{name}`"
    assert MonitorEvent("token").to_json()["kind"] == "token"  # the key the table documents


def test_readme_lists_exactly_the_benchmarks() -> None:
    sentence = README[README.index("Benchmarks (`--benchmark`):"):]
    sentence = sentence[: sentence.index("\n\n")]
    assert re.findall(r"`([a-z0-9-]+)`", sentence.removeprefix("Benchmarks (`--benchmark`):")) == list(BENCHMARKS)


def library_blocks() -> list[str]:
    """The python blocks that use the library; a block that talks to `sia-monitor serve` (it names the
    server's URL) runs against a real server in `test_readme_client_block_runs_against_the_server`."""
    return [code for code in blocks("python") if SERVER_URL not in code]


SERVER_URL = "http://127.0.0.1:8000/v1"


@pytest.mark.default_model
@pytest.mark.parametrize("index", range(len(library_blocks())))
def test_readme_python_block_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = library_blocks()[index]
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {index + 1}", "exec"), namespace)  # noqa: S102 - our own README
    printed = capsys.readouterr().out
    results = [namespace[name] for name in ("trajectory", "trajectories") if name in namespace]
    trajectories = [t for r in results for t in (r if isinstance(r, list) else [r])]
    assert trajectories, "a README python block should end with a trajectory (or trajectories) to look at"
    for trajectory in trajectories:
        assert len(trajectory.steps) >= 2, (trajectory.finish_reason, trajectory.n_tokens, trajectory.final_text)
        assert trajectory.parsed_answer is not None, trajectory.final_text
        assert all(0.0 <= s.entropy_bits <= 8 and s.top for s in trajectory.steps)
    assert printed.strip(), "the block prints what it shows"


@pytest.mark.default_model
def test_readme_client_block_runs_against_the_server(qwen, capsys: pytest.CaptureFixture[str]) -> None:
    """The "Chat applications" block, as written, against `sia-monitor serve`'s app on its default address."""
    from sia_monitor.serve.app import create_app
    from sia_monitor.serve.background import running_server

    (code,) = [code for code in blocks("python") if SERVER_URL in code]
    with running_server(create_app(qwen), port=8000):
        exec(compile(code, "README.md client block", "exec"), {"__name__": "__readme__"})  # noqa: S102
    printed = capsys.readouterr().out
    assert "SiaStep(" in printed and "SiaSummary(" in printed and "p_correct=0." in printed
