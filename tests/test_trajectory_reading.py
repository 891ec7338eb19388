"""Reading a trajectory file that is damaged or is not one: the error says what it is not, and a file cut off
mid-record still replays its complete records, with one warning that says so.

Real files in tmp_path, made from real saved records; the error cases go through the `sia-monitor tui`
command line (they end before the app starts), the truncation through `load_replay`.
"""

from __future__ import annotations

import gzip
import random
import re
import warnings
import zlib
from pathlib import Path

import pytest
from replay_data import svamp_records

from sia_monitor.cli import main
from sia_monitor.errors import SIAError
from sia_monitor.guardrail.replay import load_replay
from sia_monitor.trajectory import (
    Trajectory,
    TruncatedTrajectoryWarning,
    read_trajectories,
    read_trajectory_file,
    write_trajectories,
)


@pytest.fixture(scope="module")
def records() -> list[Trajectory]:
    return svamp_records(5)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # Rich wraps stderr at 80 columns; tmp paths are long


def tui_error(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of `sia-monitor tui --replay PATH`, which must fail with exit status 2."""
    assert main(["tui", "--replay", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_random_bytes_are_not_a_gzip_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.jsonl.gz"
    path.write_bytes(b"\x00" + random.Random(3).randbytes(4096))
    assert f"{path} is not a gzip file." in tui_error(path, capsys)


def test_gzip_under_a_plain_name_is_called_that(tmp_path: Path, records: list[Trajectory],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    packed = tmp_path / "runs.jsonl.gz"
    write_trajectories(packed, records[:2], append=False)
    path = packed.rename(tmp_path / "runs.jsonl")
    assert f"{path} is gzip-compressed, but its name does not end in .gz. Rename it to runs.jsonl.gz." in (
        tui_error(path, capsys))


@pytest.mark.parametrize(("text", "says"), [
    ("hello, this is a text file\n", ":1 is not JSON ("),
    ("hello, without a newline", ":1 is not JSON ("),  # an unterminated last line that never was a record
    ('{"answer": 15}\n', ':1 is not a sia-monitor trajectory record (it has no "schema" field)'),
    ("[1, 2]\n", ":1 is not a sia-monitor trajectory record (it is a JSON array, not an object)"),
])
def test_a_text_file_says_what_its_line_is_not(tmp_path: Path, text: str, says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text(text, encoding="utf-8")
    assert f"{path}{says}" in tui_error(path, capsys)


def test_a_non_json_line_among_records_is_named(tmp_path: Path, records: list[Trajectory],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.jsonl.gz"
    write_trajectories(path, records[:2], append=False)
    with gzip.open(path, "ab") as out:
        out.write(b"this is not JSON\n")
    write_trajectories(path, records[2:3])
    line = tui_error(path, capsys)
    assert re.search(re.escape(f"{path}:3 is not JSON (") + r"Expecting value", line), line


def halved(tmp_path: Path, records: list[Trajectory]) -> tuple[Path, int]:
    """A .jsonl.gz of real records cut in half, and how many records survived the cut whole."""
    path = tmp_path / "runs.jsonl.gz"
    write_trajectories(path, records, append=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    complete = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[: len(data) // 2]).count(b"\n")
    assert 0 < complete < len(records)
    return path, complete


def test_half_a_gzip_file_replays_its_complete_records_and_warns(tmp_path: Path, records: list[Trajectory]) -> None:
    path, complete = halved(tmp_path, records)
    with pytest.warns(TruncatedTrajectoryWarning) as caught:
        replayed = load_replay(path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"Trajectory file {path} is truncated (") and "\n" not in message
    assert f"replaying the {complete} complete record{'s' if complete != 1 else ''} before the cut" in message
    assert replayed[0].item_id == records[0].item_id and replayed[0].final_text == records[0].final_text

    read = read_trajectory_file(path)
    assert [r.item_id for r in read.records] == [r.item_id for r in records[:complete]]
    assert read.truncated == "the gzip stream ends before its end marker"


def test_a_cut_plain_file_warns_naming_the_cut_line(tmp_path: Path, records: list[Trajectory]) -> None:
    path = tmp_path / "runs.jsonl"
    write_trajectories(path, records[:3], append=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.warns(TruncatedTrajectoryWarning, match=re.escape("(line 3 is cut off): replaying the 2 complete")):
        load_replay(path)


def test_a_whole_file_replays_without_a_warning(tmp_path: Path, records: list[Trajectory]) -> None:
    path = tmp_path / "runs.jsonl.gz"
    write_trajectories(path, records, append=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_replay(path)[0].item_id == records[0].item_id
    assert read_trajectory_file(path).truncated is None


def test_cut_before_the_first_record_is_an_error(tmp_path: Path, records: list[Trajectory],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.jsonl.gz"
    write_trajectories(path, records[:1], append=False)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SIAError, match="is truncated .* before its first complete record"):
        load_replay(path)
    assert "before its first complete record" in tui_error(path, capsys)


def test_read_trajectories_keeps_skipping_a_cut_tail_silently(tmp_path: Path, records: list[Trajectory]) -> None:
    """The generator API is unchanged for the readers that repair or pool files (collect, fit)."""
    path, complete = halved(tmp_path, records)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(read_trajectories(path, skip_truncated_tail=True))) == complete
    with pytest.raises(SIAError, match="truncated or corrupt"):
        list(read_trajectories(path))


def test_tui_says_a_replay_is_truncated_in_one_line(tmp_path: Path, records: list[Trajectory]) -> None:
    """What `sia-monitor tui --replay` prints before the app starts (the app itself is not run here)."""
    import io

    from rich.console import Console

    from sia_monitor.cli import build_parser
    from sia_monitor.cli.output import one_line_warnings
    from tui.command import source_from_args

    path, complete = halved(tmp_path, records)
    err = io.StringIO()
    args = build_parser().parse_args(["tui", "--replay", str(path), "--speed", "0", "--calibrator", "none"])
    console = Console(file=err, width=400)
    with warnings.catch_warnings(), one_line_warnings(console):  # what `main` wraps every command in
        warnings.simplefilter("always")
        source = source_from_args(args, console)
    assert source.question == records[0].question
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: Trajectory file {path} is truncated"), lines
    assert f"replaying the {complete} complete" in lines[0]
