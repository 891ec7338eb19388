"""The trajectory file format: round trips, appending, and every way a file can be damaged."""

from __future__ import annotations

import gzip
import json
import random
import re
import zlib
from pathlib import Path

import pytest

from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import NUMERIC, AnswerDistribution, AnswerSpace
from sia_monitor.trajectory import (
    SCHEMA,
    SCHEMA_VERSION,
    MonitorEvent,
    StepRecord,
    Trajectory,
    read_trajectories,
    write_trajectories,
)

CHOICE = AnswerSpace("choice", labels=("A", "B", "C"), options=("red", "blue", "green"))


def make_trajectory(index: int, seed: int = 0) -> Trajectory:
    rng = random.Random(seed * 1000 + index)
    dist = AnswerDistribution.from_masses({"B": 0.6, "A": 0.25, "C": 0.05})
    steps = [StepRecord.from_distribution(0, 0, 7, "The sky scatters blue light.", dist)]
    return Trajectory(
        model_id="test-model",
        question=f"Question {index}: what colour is the sky? (°C, 3×4, “quotes”)",
        answer_space=CHOICE if index % 2 else NUMERIC,
        suffix="The answer is (",
        segmenter="line",
        steps=steps,
        token_entropy=[rng.random() * 3 for _ in range(40)],
        token_confidence=[rng.random() * 10 for _ in range(40)],
        final_text="The sky scatters blue light.\nThe answer is (B)",
        parsed_answer="B",
        finish_reason="eos",
        n_tokens=39,
        elapsed_s=1.5,
        generation={"max_new_tokens": 64, "temperature": 0.0},
        benchmark="arc-easy",
        item_id=f"item-{index}",
        gold="B",
        correct=True,
        decisions=[{"policy": "none", "at_step": 0}],
    )


def rounded(trajectory: Trajectory) -> Trajectory:
    """What reading back gives: per-token arrays rounded to 4 decimals."""
    return Trajectory.from_json(json.loads(json.dumps(trajectory.to_json())))


@pytest.mark.parametrize("name", ["runs.jsonl", "runs.jsonl.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / "sub" / name
    originals = [make_trajectory(i) for i in range(3)]
    write_trajectories(path, originals, append=False)
    back = list(read_trajectories(path))
    assert back == [rounded(t) for t in originals]
    assert back[1].answer_space == CHOICE and back[0].answer_space == NUMERIC
    assert back[0].steps[0].top == [("B", 0.6667), ("A", 0.2778), ("C", 0.0556)]
    assert isinstance(back[0].steps[0].top[0], tuple)
    assert back[0].token_entropy == [round(x, 4) for x in originals[0].token_entropy]
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as src:
            first = json.loads(src.readline())
    else:
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["schema"] == SCHEMA and first["version"] == SCHEMA_VERSION


@pytest.mark.parametrize("name", ["runs.jsonl", "runs.jsonl.gz"])
def test_append_mode_adds_and_overwrite_replaces(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_trajectories(path, [make_trajectory(0)])
    write_trajectories(path, [make_trajectory(1), make_trajectory(2)])  # append is the default
    assert [t.item_id for t in read_trajectories(path)] == ["item-0", "item-1", "item-2"]
    write_trajectories(path, [make_trajectory(3)], append=False)
    assert [t.item_id for t in read_trajectories(path)] == ["item-3"]


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    write_trajectories(path, [make_trajectory(0)])
    with path.open("a", encoding="utf-8") as out:
        out.write("\n   \n")
    write_trajectories(path, [make_trajectory(1)])
    assert len(list(read_trajectories(path))) == 2


@pytest.mark.parametrize(("bad", "says"), [
    ("{not json", ":2 is not JSON ("),
    ('{"schema": "something-else", "version": 1}', ":2 is not a sia-monitor trajectory record (its schema is"),
    ("[1, 2]", ":2 is not a sia-monitor trajectory record (it is a JSON array"),
    ('{"schema": "sia-monitor/trajectory", "version": 1, "model_id": "x"}', ":2: malformed trajectory record ("),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str, says: str) -> None:
    path = tmp_path / "runs.jsonl"
    write_trajectories(path, [make_trajectory(0)])
    with path.open("a", encoding="utf-8") as out:
        out.write(bad + "\n")
    write_trajectories(path, [make_trajectory(1)])
    with pytest.raises(SIAError, match=re.escape(f"{path}{says}")):
        list(read_trajectories(path))
    with pytest.raises(SIAError, match=re.escape(f"{path}{says}")):  # only a bad *last* line may be skipped
        list(read_trajectories(path, skip_truncated_tail=True))


def test_invalid_utf8_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    write_trajectories(path, [make_trajectory(0)])
    with path.open("ab") as out:
        out.write(b'{"schema": "\xff\xfe"}\n')
    write_trajectories(path, [make_trajectory(1)])
    with pytest.raises(SIAError, match=re.escape(f"{path}:2 is not UTF-8 text")):
        list(read_trajectories(path))


def test_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    write_trajectories(path, [make_trajectory(i) for i in range(3)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])  # a killed writer: the last record is half written
    with pytest.raises(SIAError, match=re.escape(f"{path}:3: malformed")):
        list(read_trajectories(path))
    assert [t.item_id for t in read_trajectories(path, skip_truncated_tail=True)] == ["item-0", "item-1"]


def test_truncated_inside_a_multibyte_character(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    write_trajectories(path, [make_trajectory(i) for i in range(3)])  # written with ensure_ascii=False
    data = path.read_bytes()
    cut = data.rfind("×".encode()) + 1  # inside the two bytes of '×' on the last line
    path.write_bytes(data[:cut])
    with pytest.raises(SIAError, match=re.escape(f"{path}:3: malformed")):
        list(read_trajectories(path))
    assert [t.item_id for t in read_trajectories(path, skip_truncated_tail=True)] == ["item-0", "item-1"]


def test_truncated_gzip_keeps_every_complete_record(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl.gz"
    originals = [make_trajectory(i, seed=7) for i in range(6)]
    write_trajectories(path, originals, append=False)
    data = path.read_bytes()
    plain = gzip.decompress(data)
    for cut in (len(data) - 4, len(data) * 3 // 4, len(data) // 2):
        path.write_bytes(data[:cut])
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        complete = decoder.decompress(data[:cut]).count(b"\n")  # lines whose bytes survived the cut
        assert 0 < complete <= len(originals) and plain.count(b"\n") == len(originals)
        with pytest.raises(SIAError, match="truncated or corrupt"):
            list(read_trajectories(path))
        back = list(read_trajectories(path, skip_truncated_tail=True))
        assert [t.item_id for t in back] == [t.item_id for t in originals[:complete]]


def test_wrong_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    record = make_trajectory(0).to_json()
    record["version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(record) + "\n" + json.dumps(make_trajectory(1).to_json()) + "\n", encoding="utf-8")
    expected = re.escape(f"{path}:1: ") + rf".*schema version {SCHEMA_VERSION + 1} is not supported"
    with pytest.raises(SIAError, match=expected):
        list(read_trajectories(path))


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="does not exist"):
        list(read_trajectories(tmp_path / "nope.jsonl"))
    with pytest.raises(SIAError, match="does not exist"):
        list(read_trajectories(tmp_path))  # a directory is not a trajectory file
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text("hello\n")
    with pytest.raises(SIAError):
        list(read_trajectories(not_gzip))


def test_event_to_json() -> None:
    trajectory = make_trajectory(1)
    step = trajectory.steps[0]
    assert MonitorEvent("token", row=2, text="Hi").to_json() == {"kind": "token", "row": 2, "text": "Hi"}
    step_json = MonitorEvent("step", row=1, step=step).to_json()
    assert step_json["kind"] == "step" and step_json["row"] == 1 and "text" not in step_json
    assert step_json["step"]["entropy_bits"] == step.entropy_bits and step_json["step"]["index"] == 0
    assert step_json["step"]["top"][0] == ("B", 0.6667)
    final = MonitorEvent("final", trajectory=trajectory).to_json()
    assert final["kind"] == "final" and final["trajectory"] == trajectory.to_json()
    assert Trajectory.from_json(final["trajectory"]) == rounded(trajectory)
    decision = MonitorEvent("decision", row=0, detail={"action": "stop", "step": 3}).to_json()
    assert decision == {"kind": "decision", "row": 0, "detail": {"action": "stop", "step": 3}}
    for event in (step_json, final, decision):
        json.dumps(event)  # every event is plain JSON
