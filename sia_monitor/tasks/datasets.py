"""A user's own questions, from a JSONL or CSV file, as benchmark items: what `collect --dataset` generates on
and `fit --data` calibrates from.

Why checked whole, up front: collecting costs minutes per hundred questions, so a bad row found at row 900
would waste the 899 before it. Every row is read and checked before anything is generated, and the first bad
one is refused with its file and line.

A row: `question` and `answer` (a number), or `question`, `choices` (a list of option texts, or one string
"A) red B) blue") and `answer` (an option's label or its text); `id` is optional (default: the row's line).
Other fields are ignored, so a file exported from elsewhere can keep its own columns. In CSV, `choices` is the
"A) ... B) ..." string or a JSON list.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import NUMERIC, AnswerSpace, normalize_number, parse_choices
from sia_monitor.tasks.benchmarks import Item, in_split, json_lines

DATASET_SUFFIXES = (".jsonl", ".csv")
LABELS = "ABCDEFGHIJ"


def dataset_name(path: Path) -> str:
    """The benchmark name a dataset's trajectories carry: `dataset:<file stem>` (never a built-in's name)."""
    return f"dataset:{path.name.split('.')[0]}"


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-empty row."""
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "question" not in reader.fieldnames:
                raise SIAError(f"{path} line 1: the CSV header has no 'question' column.",
                               "The header names the columns: question,answer[,choices][,id].")
            for row in reader:
                if any((value or "").strip() for value in row.values() if isinstance(value, str)):
                    yield reader.line_num, row
        return
    for number, row in json_lines(path):
        if not isinstance(row, dict):
            raise SIAError(f"{path} line {number}: a row must be a JSON object with 'question' and 'answer'.")
        yield number, row


def _space(choices: Any) -> AnswerSpace:
    if isinstance(choices, str) and choices.strip().startswith("["):
        try:
            choices = json.loads(choices)
        except json.JSONDecodeError:
            raise ValueError("'choices' starts with '[' but is not a JSON list") from None
    if isinstance(choices, str):
        try:
            return parse_choices(choices)
        except SIAError as err:
            raise ValueError(str(err).rstrip(".")) from None
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(LABELS):
        raise ValueError(f"'choices' must be 2 to {len(LABELS)} options (a list, or \"A) ... B) ...\")")
    options = tuple(str(option).strip() for option in choices)
    if not all(options):
        raise ValueError("an option in 'choices' is empty")
    return AnswerSpace("choice", labels=tuple(LABELS[: len(options)]), options=options)


def _gold(answer: Any, space: AnswerSpace) -> str:
    text = str(answer).strip() if answer is not None else ""
    if not text:
        raise ValueError("'answer' is missing or empty")
    if space.kind == "choice":
        for label, option in zip(space.labels, space.options, strict=True):
            if text.upper().strip("()") == label.upper() or text.casefold() == option.casefold():
                return label
        raise ValueError(f"answer {text!r} is neither an option's label ({', '.join(space.labels)}) nor its text")
    gold = normalize_number(text)
    if gold is None:
        raise ValueError(f"answer {text!r} is not a number (give 'choices' for a multiple-choice question)")
    return gold


def load_dataset(path: str | Path, limit: int | None = None, split: str = "all") -> list[Item]:
    """Every row of a dataset file as an `Item`, checked; the first `limit` of `split` (see `in_split`)."""
    path = Path(path)
    if path.suffix not in DATASET_SUFFIXES:
        raise SIAError(f"{path}: a dataset is a .jsonl or .csv file.")
    if not path.is_file():
        raise SIAError(f"The dataset {path} does not exist.")
    name = dataset_name(path)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, row in _rows(path):
        try:
            question = str(row.get("question") or "").strip()
            if not question:
                raise ValueError("'question' is missing or empty")
            choices = row.get("choices")
            space = _space(choices) if choices not in (None, "", []) else NUMERIC
            gold = _gold(row.get("answer"), space)
            item_id = str(row.get("id") or "").strip() or f"line-{number}"
        except ValueError as err:
            raise SIAError(f"{path} line {number}: {err}.") from None
        if item_id in seen:
            raise SIAError(f"{path} line {number}: id {item_id!r} is used again (first on line {seen[item_id]}).",
                           "Every row needs its own id (or none: the line number is used).")
        seen[item_id] = number
        items.append(Item(name, item_id, question, space, gold))
    if not items:
        raise SIAError(f"{path} holds no rows.")
    chosen = [item for item in items if in_split(item, split)]
    return chosen if limit is None else chosen[:limit]
