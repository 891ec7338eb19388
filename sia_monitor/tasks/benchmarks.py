"""Benchmark items (GSM8K, SVAMP, ARC) read from the shared data directory, and their grading.

Why here: an experiment is only comparable to another if both read the same question text, the same option
labels and the same normalised gold answer; every loader and the grader go through `answers`, so "correct"
means the same thing in the probe, the report and the calibration. The data is read in place (never copied
into the repository) from a directory given explicitly, by `SIA_MONITOR_DATA`, or found next to the repo.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import NUMERIC, AnswerKind, AnswerSpace, normalize_number, same_answer

DATA_ENV = "SIA_MONITOR_DATA"


@dataclass(frozen=True)
class Item:
    """One question with its answer space and normalised gold answer (numbers via `normalize_number`)."""

    benchmark: str
    item_id: str
    question: str
    space: AnswerSpace
    gold: str


# A parser turns one record (and its 0-based position in the file) into (item_id, question, space, gold).
Parser = Callable[[dict[str, Any], int, str], tuple[str, str, AnswerSpace, str]]


def _number(text: object) -> str:
    gold = normalize_number(str(text))
    if gold is None:
        raise ValueError(f"gold answer {text!r} is not a number")
    return gold


def _gsm8k(record: dict[str, Any], index: int, id_prefix: str) -> tuple[str, str, AnswerSpace, str]:
    solution = record["answer"]
    if "####" not in solution:
        raise ValueError("the 'answer' field has no '#### <number>' line")
    return f"{id_prefix}{index}", record["question"], NUMERIC, _number(solution.rsplit("####", 1)[1])


def _svamp(record: dict[str, Any], index: int, id_prefix: str) -> tuple[str, str, AnswerSpace, str]:
    # 358 of the 1000 bodies end without a period ("... If he had $ 4 at the start"); a bare space would
    # run the condition into the question, so close the sentence first.
    body, question = record["Body"].strip(), record["Question"].strip()
    joiner = " " if body.endswith((".", "?", "!")) else ". "
    return str(record["ID"]), body + joiner + question, NUMERIC, _number(record["Answer"])


def _arc(record: dict[str, Any], index: int, id_prefix: str) -> tuple[str, str, AnswerSpace, str]:
    # Labels are kept as written: about 4% of items use "1".."4" (and a few have 3 or 5 options).
    choices = record["question"]["choices"]
    labels = tuple(str(c["label"]) for c in choices)
    space = AnswerSpace("choice", labels=labels, options=tuple(c["text"] for c in choices))
    if record["answerKey"] not in labels:
        raise ValueError(f"answerKey {record['answerKey']!r} is not one of the labels {labels}")
    return record["id"], record["question"]["stem"], space, record["answerKey"]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives under the data directory and how to read one record of it."""

    path: str
    parse: Parser
    kind: AnswerKind
    id_prefix: str = ""


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "gsm8k": BenchmarkSpec("gsm8k/test.jsonl", _gsm8k, "numeric", "gsm8k-test-"),
    "gsm8k-train": BenchmarkSpec("gsm8k/train.jsonl", _gsm8k, "numeric", "gsm8k-train-"),
    "svamp": BenchmarkSpec("svamp/svamp.json", _svamp, "numeric"),
    "arc-easy": BenchmarkSpec("arc/ARC-Easy-test.jsonl", _arc, "choice"),
    "arc-easy-dev": BenchmarkSpec("arc/ARC-Easy-dev.jsonl", _arc, "choice"),
    "arc-easy-train": BenchmarkSpec("arc/ARC-Easy-train.jsonl", _arc, "choice"),
    "arc-challenge": BenchmarkSpec("arc/ARC-Challenge-test.jsonl", _arc, "choice"),
    "arc-challenge-dev": BenchmarkSpec("arc/ARC-Challenge-dev.jsonl", _arc, "choice"),
    "arc-challenge-train": BenchmarkSpec("arc/ARC-Challenge-train.jsonl", _arc, "choice"),
}


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: `explicit`, else `$SIA_MONITOR_DATA`, else `../shared/data` from the working dir.

    An explicitly named directory that does not exist is an error rather than a silent fallback, so a typo
    never makes a run read different data than the user asked for.
    """
    for source, value in (("--data-dir", explicit), (DATA_ENV, os.environ.get(DATA_ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise SIAError(f"The data directory {str(path)!r} (from {source}) does not exist.",
                               "Point --data-dir or SIA_MONITOR_DATA at the folder holding gsm8k/, svamp/ and arc/.")
            return path
    fallback = Path.cwd().parent / "shared" / "data"
    if fallback.is_dir():
        return fallback
    raise SIAError(f"No data directory given and {str(fallback)!r} does not exist.",
                   "Pass --data-dir DIR or set SIA_MONITOR_DATA to the folder holding gsm8k/, svamp/ and arc/.")


_resolve_data_dir = data_dir  # `load_benchmark`'s parameter shadows the function name


def _records(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(0-based index, where, record); `where` ("line 7", "record 7") is what an error message points at."""
    if path.suffix == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise SIAError(f"{path} line {err.lineno}: not valid JSON ({err.msg}).",
                           "Restore the file from the source named in its SOURCE.md.") from None
        if not isinstance(records, list):
            raise SIAError(f"{path} is not a JSON array of records.", "Restore the file from its source.")
        for index, record in enumerate(records):
            yield index, f"record {index + 1}", record
        return
    for number, record in json_lines(path, "Restore the file from the source named in its SOURCE.md."):
        yield number - 1, f"line {number}", record


def json_lines(path: Path, hint: str | None = None) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed value) of every non-empty line of a JSONL file; a line that is not JSON is
    refused with its number (and `hint`, what to do about it)."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise SIAError(f"{path} line {number}: not valid JSON ({err.msg}).", hint) from None
            yield number, value


# The fixed split every calibrator, benchmark and collection agrees on: a question is held out when a stable hash
# of its group id says so (not a random draw), so the split never depends on file order and never changes when
# more trajectories are collected. Calibrators are fitted on "train" and judged on "heldout".
HELDOUT_FRACTION = 0.3
SPLITS = ("all", "train", "heldout")


def item_group(benchmark: str, item_id: str) -> str:
    """The group id of a benchmark question: all its samples, and every prefix of them, share it."""
    return f"{benchmark}:{item_id}"


def is_heldout(group: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Whether a question is in the fixed held-out split (a stable hash of its group id)."""
    digest = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < fraction


def in_split(item: Item, split: str) -> bool:
    """Whether `item` is in `split` (one of SPLITS)."""
    return split == "all" or is_heldout(item_group(item.benchmark, item.item_id)) == (split == "heldout")


def load_benchmark(
    name: str, data_dir: Path | str | None = None, limit: int | None = None, split: str = "all"
) -> list[Item]:
    """The first `limit` items (all when None) of a benchmark's `split`, in file order so runs are reproducible."""
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise SIAError(f"Unknown benchmark {name!r}.", f"Use one of: {', '.join(BENCHMARKS)}.")
    if limit is not None and limit < 0:
        raise SIAError(f"The item limit must be zero or more, not {limit}.")
    if split not in SPLITS:
        raise SIAError(f"Unknown split {split!r}.", f"Use one of: {', '.join(SPLITS)}.")
    root = _resolve_data_dir(data_dir)
    path = root / spec.path
    if not path.is_file():
        raise SIAError(f"The {name} file {spec.path!r} is missing under {str(root)!r}.",
                       "Point --data-dir or SIA_MONITOR_DATA at the folder holding gsm8k/, svamp/ and arc/.")
    items: list[Item] = []
    if limit == 0:
        return items
    for index, where, record in _records(path):
        try:
            item_id, question, space, gold = spec.parse(record, index, spec.id_prefix)
        except (KeyError, TypeError, ValueError, AttributeError, SIAError) as err:
            detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise SIAError(f"{path} {where}: malformed {name} record ({detail}).",
                           "Restore the file from the source named in its SOURCE.md.") from None
        item = Item(name, item_id, question, space, gold)
        if in_split(item, split):
            items.append(item)
        if len(items) == limit:  # stop before reading further, so a bad line past the limit never matters
            break
    return items


def grade(item: Item, predicted: str | None) -> bool:
    """Whether a parsed prediction is correct; the same comparison the probe uses, so labels cannot drift."""
    return same_answer(predicted, item.gold, item.space)
