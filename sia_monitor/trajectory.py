"""The trajectory record and the event type: what every consumer (CLI, collector, calibrator, TUI) reads.

One module reads and writes them so the on-disk schema has a single definition. Records are JSON objects,
one per line, optionally gzip-compressed (`.gz`); per-token arrays are rounded to 4 decimals to stay small.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from .answers import AnswerDistribution, AnswerSpace
from .errors import SIAError

SCHEMA = "sia-monitor/trajectory"
SCHEMA_VERSION = 1
_DIGITS = 4


@dataclass
class StepRecord:
    """The answer distribution right after one reasoning step."""

    index: int
    token_start: int
    token_end: int
    text: str
    entropy_bits: float
    top: list[tuple[str, float]]
    covered: float
    tokens_so_far: int
    p_correct: float | None = None

    @classmethod
    def from_distribution(
        cls, index: int, token_start: int, token_end: int, text: str, dist: AnswerDistribution, top_k: int = 5
    ) -> StepRecord:
        return cls(
            index=index,
            token_start=token_start,
            token_end=token_end,
            text=text,
            entropy_bits=round(dist.entropy_bits, _DIGITS),
            top=[(answer, round(p, _DIGITS)) for answer, p in dist.top(top_k)],
            covered=round(dist.covered, _DIGITS),
            tokens_so_far=token_end,
        )


@dataclass
class Trajectory:
    """One monitored generation: its steps, per-token signals, final answer and (when known) its grade."""

    model_id: str
    question: str
    answer_space: AnswerSpace
    suffix: str
    segmenter: str
    steps: list[StepRecord] = field(default_factory=list)
    token_entropy: list[float] = field(default_factory=list)  # bits, of the distribution each token came from
    token_confidence: list[float] = field(default_factory=list)  # DeepConf: -mean of the top-20 logprobs
    final_text: str = ""
    parsed_answer: str | None = None
    finish_reason: str = ""  # eos | length | stopped | cancelled; guarded runs: accepted | resampled
    n_tokens: int = 0
    elapsed_s: float = 0.0
    generation: dict[str, Any] = field(default_factory=dict)
    benchmark: str | None = None
    item_id: str | None = None
    gold: str | None = None
    correct: bool | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["answer_space"] = self.answer_space.to_json()
        data["token_entropy"] = [round(x, _DIGITS) for x in self.token_entropy]
        data["token_confidence"] = [round(x, _DIGITS) for x in self.token_confidence]
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trajectory:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} record")
        if data.get("version") != SCHEMA_VERSION:
            raise ValueError(f"schema version {data.get('version')} is not supported (this is {SCHEMA_VERSION})")
        fields = {k: v for k, v in data.items() if k not in ("schema", "version")}
        fields["answer_space"] = AnswerSpace.from_json(fields["answer_space"])
        fields["steps"] = [
            StepRecord(**{**step, "top": [tuple(pair) for pair in step["top"]]}) for step in fields["steps"]
        ]
        return cls(**fields)


@dataclass
class MonitorEvent:
    """Everything a consumer hears from a running monitor, in order.

    `token`: a row produced text (`text`); `step`: a row finished a reasoning step (`step`);
    `final`: a row's generation ended (`trajectory`); `decision`: a policy acted (`detail`).
    """

    kind: Literal["token", "step", "final", "decision"]
    row: int = 0
    text: str = ""
    step: StepRecord | None = None
    trajectory: Trajectory | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.kind, "row": self.row}
        if self.kind == "token":
            data["text"] = self.text
        if self.step is not None:
            data["step"] = asdict(self.step)
        if self.trajectory is not None:
            data["trajectory"] = self.trajectory.to_json()
        if self.detail:
            data["detail"] = self.detail
        return data


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8")


def write_trajectories(path: str | Path, trajectories: Iterable[Trajectory], append: bool = True) -> None:
    """Append (or write) records, one JSON line each; flushed per call so an interruption loses nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path, "a" if append else "w") as out:
        for trajectory in trajectories:
            out.write(json.dumps(trajectory.to_json(), ensure_ascii=False) + "\n")


def _lines(path: Path, skip_truncated_tail: bool) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, raw bytes, whether it is the last line) for each line; a cut-off gzip stream ends early.

    Lines are decoded one at a time by the caller, so a last line cut inside a multi-byte character is a
    truncated line like any other (not an unreadable file), and a bad byte elsewhere names its line.
    """
    previous: tuple[int, bytes] | None = None
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as src:
            for number, line in enumerate(src, start=1):
                if previous:
                    yield previous[0], previous[1], False
                previous = (number, line)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        if not skip_truncated_tail:
            raise SIAError(f"Trajectory file {path} is truncated or corrupt ({exc}).") from exc
        if previous:  # a complete line: the stream broke while reading the one after it
            yield previous[0], previous[1], False
        return
    except OSError as exc:
        raise SIAError(f"Cannot read trajectory file {path}: {exc}.") from exc
    if previous:
        yield previous[0], previous[1], True


def read_trajectories(path: str | Path, skip_truncated_tail: bool = False) -> Iterator[Trajectory]:
    """Read records; a malformed line raises SIAError naming the file and line.

    `skip_truncated_tail`: tolerate a half-written last line (what a killed writer leaves) instead of failing.
    """
    path = Path(path)
    if not path.is_file():
        raise SIAError(f"Trajectory file {path} does not exist.")
    for number, line, is_last in _lines(path, skip_truncated_tail):
        if not line.strip():
            continue
        try:
            yield Trajectory.from_json(json.loads(line.decode("utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if skip_truncated_tail and is_last:
                return
            raise SIAError(
                f"{path}:{number}: malformed trajectory record ({exc}).", "Check the file, or delete the bad line."
            ) from exc
