"""Loading GSM8K, SVAMP and ARC from the shared data directory, and the errors a user can run into."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import normalize_number, parse_answer
from sia_monitor.tasks.benchmarks import BENCHMARKS, Item, grade, load_benchmark
from sia_monitor.tasks.benchmarks import data_dir as resolve_data_dir  # the `data_dir` fixture takes the plain name

FULL_COUNTS = {"gsm8k": 1319, "svamp": 1000, "arc-easy": 2376, "arc-challenge": 1172}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_benchmark_loads_with_a_limit(name: str, data_dir: Path) -> None:
    items = load_benchmark(name, data_dir, limit=5)
    assert len(items) == 5
    assert all(isinstance(item, Item) and item.benchmark == name and item.question.strip() for item in items)
    assert len({item.item_id for item in items}) == 5
    assert all(item.space.kind == BENCHMARKS[name].kind for item in items)


@pytest.mark.parametrize(("name", "count"), sorted(FULL_COUNTS.items()))
def test_full_counts_and_golds_are_gradable(name: str, count: int, data_dir: Path) -> None:
    items = load_benchmark(name, data_dir)
    assert len(items) == count
    assert len({item.item_id for item in items}) == count
    for item in items:
        if item.space.kind == "numeric":
            assert normalize_number(item.gold) == item.gold
            assert parse_answer(f"The answer is {item.gold}.", item.space) == item.gold
        else:
            assert item.gold in item.space.labels
            assert parse_answer(f"The answer is ({item.gold})", item.space) == item.gold
            assert len(item.space.options) == len(item.space.labels) in (3, 4, 5)
        assert grade(item, item.gold)


def test_gsm8k_fields(data_dir: Path) -> None:
    first = load_benchmark("gsm8k", data_dir, limit=1)[0]
    assert first.item_id == "gsm8k-test-0"
    assert first.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.gold == "18" and grade(first, "18.0") and not grade(first, "17") and not grade(first, None)
    assert load_benchmark("gsm8k-train", data_dir, limit=1)[0].item_id == "gsm8k-train-0"
    golds = {item.gold for item in load_benchmark("gsm8k", data_dir)}
    assert "1450000" in golds and "-10" in golds  # "1,450,000" and negatives in the source


def test_svamp_joins_body_and_question_as_sentences(data_dir: Path) -> None:
    items = {item.item_id: item for item in load_benchmark("svamp", data_dir)}
    assert items["chal-1"].question == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on "
                                        "each pack. How much do you have to pay to buy each pack?")
    assert items["chal-1"].gold == "51"
    # The source text is kept as written: one body already ends in "..", one question ends in "3" not "?".
    doubled = [item.item_id for item in items.values() if ".." in item.question or ". ." in item.question]
    assert doubled == ["chal-410"]
    assert items["chal-774"].question.endswith("How many old games do they have 3")


def test_arc_numeric_labels_and_odd_option_counts(data_dir: Path) -> None:
    items = load_benchmark("arc-easy", data_dir)
    numeric = [item for item in items if item.space.labels == ("1", "2", "3", "4")]
    assert len(numeric) == 97
    assert all(item.gold in ("1", "2", "3", "4") for item in numeric)
    assert grade(numeric[0], parse_answer(f"The answer is ({numeric[0].gold})", numeric[0].space))
    assert {len(item.space.labels) for item in items} == {3, 4, 5}
    challenge = load_benchmark("arc-challenge", data_dir)
    assert any(item.space.labels == ("1", "2", "3") for item in challenge)
    first = load_benchmark("arc-easy", data_dir, limit=1)[0]
    assert first.item_id and first.question and first.space.options[0]


def test_limit_zero_and_negative(data_dir: Path) -> None:
    assert load_benchmark("svamp", data_dir, limit=0) == []
    with pytest.raises(SIAError, match="limit"):
        load_benchmark("svamp", data_dir, limit=-1)


def test_unknown_benchmark_lists_the_names(data_dir: Path) -> None:
    with pytest.raises(SIAError, match="Unknown benchmark 'gsm9k'") as err:
        load_benchmark("gsm9k", data_dir)
    assert all(name in str(err.value) for name in BENCHMARKS)


def test_missing_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="does not exist.*--data-dir"):
        load_benchmark("gsm8k", tmp_path / "nowhere")
    with pytest.raises(SIAError, match=r"'gsm8k/test.jsonl' is missing under .*--data-dir"):
        load_benchmark("gsm8k", tmp_path)


def test_data_dir_resolution(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIA_MONITOR_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert resolve_data_dir(data_dir) == data_dir  # explicit beats the environment
    monkeypatch.delenv("SIA_MONITOR_DATA")
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(SIAError, match="SIA_MONITOR_DATA"):
        resolve_data_dir(None)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert resolve_data_dir(None) == tmp_path / "shared" / "data"


def _write(root: Path, relative: str, lines: list[str]) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    good = json.dumps({"question": "What is 1+1?", "answer": "1+1=2\n#### 2"})
    _write(tmp_path, "gsm8k/test.jsonl", [good, good, '{"question": "broken'])
    assert len(load_benchmark("gsm8k", tmp_path, limit=2)) == 2  # the limit stops before the bad line
    with pytest.raises(SIAError, match=r"test\.jsonl line 3: not valid JSON"):
        load_benchmark("gsm8k", tmp_path)


@pytest.mark.parametrize(
    ("name", "relative", "record", "message"),
    [
        ("gsm8k", "gsm8k/test.jsonl", {"question": "q", "answer": "no final line"}, "####"),
        ("gsm8k", "gsm8k/test.jsonl", {"answer": "#### 2"}, "missing field 'question'"),
        ("gsm8k", "gsm8k/test.jsonl", {"question": "q", "answer": "#### two"}, "not a number"),
        ("arc-easy", "arc/ARC-Easy-test.jsonl",
         {"id": "x", "question": {"stem": "s", "choices": [{"text": "a", "label": "A"}, {"text": "b", "label": "B"}]},
          "answerKey": "C"}, "answerKey 'C'"),
        ("arc-easy", "arc/ARC-Easy-test.jsonl",
         {"id": "x", "question": {"stem": "s", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "A"},
         "at least two options"),
    ],
)
def test_malformed_records_name_the_line(tmp_path: Path, name: str, relative: str, record: dict, message: str) -> None:
    _write(tmp_path, relative, ["", json.dumps(record)])
    with pytest.raises(SIAError, match=rf"line 2: malformed {name} record .*{message}"):
        load_benchmark(name, tmp_path)


def test_malformed_svamp_names_the_record(tmp_path: Path) -> None:
    _write(tmp_path, "svamp/svamp.json", [json.dumps([{"ID": "a", "Body": "b.", "Question": "q?", "Answer": 1.0},
                                                      {"ID": "b", "Body": "b."}])])
    with pytest.raises(SIAError, match="record 2: malformed svamp record"):
        load_benchmark("svamp", tmp_path)
    _write(tmp_path, "svamp/svamp.json", ["[", "{oops"])
    with pytest.raises(SIAError, match="svamp.json line 2: not valid JSON"):
        load_benchmark("svamp", tmp_path)


def test_splits_partition_a_benchmark_by_the_fixed_hash(data_dir: Path) -> None:
    """train + heldout = all, each question on the side its group hash says, and `limit` counts within the split."""
    from sia_monitor.tasks.benchmarks import HELDOUT_FRACTION, is_heldout, item_group

    every = load_benchmark("svamp", data_dir)
    heldout = load_benchmark("svamp", data_dir, split="heldout")
    train = load_benchmark("svamp", data_dir, split="train")
    assert sorted(i.item_id for i in heldout + train) == sorted(i.item_id for i in every)
    assert all(is_heldout(item_group("svamp", i.item_id)) for i in heldout)
    assert not any(is_heldout(item_group("svamp", i.item_id)) for i in train)
    assert abs(len(heldout) / len(every) - HELDOUT_FRACTION) < 0.05
    assert load_benchmark("svamp", data_dir, limit=5, split="heldout") == heldout[:5]
    with pytest.raises(SIAError, match="Unknown split"):
        load_benchmark("svamp", data_dir, split="test")


def test_collection_plans_samples_question_by_question(data_dir: Path, tmp_path: Path) -> None:
    from sia_monitor.backends.base import GenerationSettings
    from sia_monitor.collect import plan_collection

    plan = plan_collection("svamp", tmp_path / "o.jsonl", "m", str(data_dir), limit=3, samples=4,
                           settings=GenerationSettings(temperature=0.7), split="heldout")
    heldout = [i.item_id for i in load_benchmark("svamp", data_dir, limit=3, split="heldout")]
    assert [(item.item_id, s) for item, s in plan.todo] == [(q, s) for q in heldout for s in range(4)]
