"""The trajectory record and the event type: what every consumer (CLI, collector, calibrator, TUI) reads.

One module reads and writes them so the on-disk schema has a single definition. Records are JSON objects,
one per line, optionally gzip-compressed (`.gz`); per-token arrays are rounded to 4 decimals to stay small.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sia_monitor.errors import SIAError, SIAWarning
from sia_monitor.tasks.answers import AnswerDistribution, AnswerSpace

SCHEMA = "sia-monitor/trajectory"
SCHEMA_VERSION = 2  # 2: steps may carry `hidden` (HiddenState), token_logprob and token_self_certainty; v1 reads
READABLE_VERSIONS = (1, 2)
_DIGITS = 4
_FLOAT16_MAX = 65504.0


@dataclass
class HiddenState:
    """A step's hidden states at the answer slot, projected (see `hidden_states.py`): for each of `layers`
    (indices into the model's `hidden_states`), `dims` numbers, stored as little-endian float16 in base64.

    The projection's name and seed travel with every vector, so a calibrator fitted on them can refuse
    vectors made another way instead of reading noise.
    """

    layers: list[int]
    dims: int
    seed: int
    projection: str
    data: str

    @classmethod
    def from_values(cls, values: list[list[float]], layers: list[int], seed: int, projection: str) -> HiddenState:
        dims = len(values[0]) if values else 0
        if len(values) != len(layers) or any(len(row) != dims for row in values):
            raise ValueError(f"expected {len(layers)} rows of equal length, got {[len(row) for row in values]}")
        flat = [min(max(x, -_FLOAT16_MAX), _FLOAT16_MAX) for row in values for x in row]
        data = base64.b64encode(struct.pack(f"<{len(flat)}e", *flat)).decode("ascii")
        return cls(layers=list(layers), dims=dims, seed=seed, projection=projection, data=data)

    def values(self) -> list[list[float]]:
        """(len(layers), dims) floats."""
        raw = base64.b64decode(self.data)
        count = len(self.layers) * self.dims
        if len(raw) != 2 * count:
            raise ValueError(f"hidden state holds {len(raw)} bytes, not {2 * count}")
        flat = struct.unpack(f"<{count}e", raw)
        return [list(flat[i * self.dims:(i + 1) * self.dims]) for i in range(len(self.layers))]


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
    hidden: HiddenState | None = None  # schema 2; only when the monitor was asked to record hidden states
    # engine backends: what the engine's own counters say this step cost (`backends/engine.py`): probe
    # requests, and prompt tokens taken from the prefix cache / evaluated anew, by the probe and by the
    # continuation that wrote the step; None in process
    engine: dict[str, int] | None = None

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
    # the sampled token's log-probability (natural log, before temperature): CISC weighs votes by their sum
    token_logprob: list[float] = field(default_factory=list)
    # self-certainty (Kang et al. 2025): KL(uniform || the token's distribution), nats; its mean ranks samples
    token_self_certainty: list[float] = field(default_factory=list)
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
        data["token_logprob"] = [round(x, _DIGITS) for x in self.token_logprob]
        data["token_self_certainty"] = [round(x, _DIGITS) for x in self.token_self_certainty]
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trajectory:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} record")
        if data.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"schema version {data.get('version')} is not supported (this reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
        fields = {k: v for k, v in data.items() if k not in ("schema", "version")}
        fields["answer_space"] = AnswerSpace.from_json(fields["answer_space"])
        fields["steps"] = [_step_from_json(step) for step in fields["steps"]]
        return cls(**fields)


def _step_from_json(step: dict[str, Any]) -> StepRecord:
    hidden = step.get("hidden")
    return StepRecord(**{**step, "top": [tuple(pair) for pair in step["top"]],
                         "hidden": HiddenState(**hidden) if hidden else None})


@dataclass
class MonitorEvent:
    """Everything a consumer hears from a running monitor, in order.

    `token`: a row produced text (`text`); `step`: a row finished a reasoning step (`step`);
    `final`: a row's generation ended (`trajectory`); `decision`: a policy acted (`detail`).
    `to_json()` is what `sia-monitor run --json` prints, with the same names (`"kind"`, `"row"`, ...); the
    schema, every kind with its keys, is documented once, in README.md, "`--json` events".
    """

    kind: Literal["token", "step", "final", "decision"]
    row: int = 0
    text: str = ""
    step: StepRecord | None = None
    trajectory: Trajectory | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "row": self.row}
        if self.kind == "token":
            data["text"] = self.text
        if self.step is not None:
            data["step"] = asdict(self.step)
        if self.trajectory is not None:
            data["trajectory"] = self.trajectory.to_json()
        if self.detail:
            data["detail"] = self.detail
        return data


def write_trajectories(path: str | Path, trajectories: Iterable[Trajectory], append: bool = True) -> None:
    """Append records (one JSON line each), or with `append=False` replace the whole file.

    Why so careful: trajectories cost minutes of generation each. An append is flushed and fsynced before
    this returns, so a later kill cannot take it back. A replacement is written to a new file beside the
    old one, fsynced, then moved over it with `os.replace`: a kill at any moment leaves either the old file
    or the new one, never a half-written mix (a `.gz` is a fresh gzip stream either way).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(trajectory.to_json(), ensure_ascii=False) + "\n" for trajectory in trajectories]
    if append:
        _write_lines(path, lines, "ab", compressed=path.suffix == ".gz")
        return
    _remove_stale_staging(path)
    staging = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        _write_lines(staging, lines, "wb", compressed=path.suffix == ".gz")
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _remove_stale_staging(path: Path) -> None:
    """Delete unfinished copies that a killed replacement left beside `path` (their writer is gone). They never
    hold the only copy of anything: the file they were to replace is still whole."""
    for staging in path.parent.glob(f".{path.stem}.partial-*{path.suffix}"):
        pid = staging.name.removeprefix(f".{path.stem}.partial-").removesuffix(path.suffix)
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            staging.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


def check_writable(path: str | Path) -> None:
    """Refuse a destination that cannot be written, before any generation is spent on it.

    Why by trying rather than `os.access`: as root, `os.access` says yes to /sys and to read-only mounts.
    The file is opened for appending (which changes nothing in it) or, if it does not exist, created
    and removed again; missing parent folders are created, as the later write would create them.
    """
    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SIAError(f"Cannot write {path}: {parent} is a file, not a folder.", "Choose another path.")
            break
    if path.is_dir():
        raise SIAError(f"Cannot write {path}: it is a folder.", "Name a .jsonl or .jsonl.gz file.")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as exc:
        raise SIAError(f"Cannot write {path} ({exc.strerror or exc}).", "Choose another path.") from None
    if not existed:
        path.unlink(missing_ok=True)


def rescue_path() -> Path:
    """Where a trajectory goes when its own destination fails: ./sia-monitor-runs/, else the temp folder."""
    name = f"rescued-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
    for folder in (Path("sia-monitor-runs"), Path(tempfile.gettempdir()) / "sia-monitor-runs"):
        try:
            check_writable(folder / name)
            return folder / name
        except SIAError:
            continue
    return Path(tempfile.gettempdir()) / name


def save_trajectories(path: str | Path, trajectories: Iterable[Trajectory], append: bool = True) -> None:
    """`write_trajectories`, but a failed write keeps the records: they go to `rescue_path()` and the error
    (one line, an SIAError) names both files, so the caller can exit non-zero without losing a generation."""
    records = list(trajectories)
    try:
        write_trajectories(path, records, append)
    except OSError as exc:
        rescued = rescue_path()
        write_trajectories(rescued, records)
        raise SIAError(f"Could not write {path} ({exc.strerror or exc}); "
                       f"{len(records)} trajectory record(s) kept in {rescued} instead.") from None


def _write_lines(path: Path, lines: list[str], mode: str, compressed: bool) -> None:
    data = "".join(lines).encode("utf-8")
    with path.open(mode) as raw:
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode=mode) as packed:  # closing writes the member's trailer
                packed.write(data)
        else:
            raw.write(data)
        raw.flush()
        os.fsync(raw.fileno())


_GZIP_MAGIC = b"\x1f\x8b"
_FIX = "Check the file, or delete the bad line."
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class TruncatedTrajectoryWarning(SIAWarning):
    """A trajectory file ends inside a record (a killed writer, a half-finished copy); the complete records
    before the cut were read. A warning, not an error: those records are whole and worth replaying."""


@dataclass
class TrajectoryFile:
    """The complete records of one trajectory file, and whether its tail was cut off.

    Why a result and not just the records: a reader that tolerates a cut-off tail must still tell its
    caller it dropped something, or a half-copied file is replayed (or fitted on) as if it were whole.
    """

    path: Path
    records: list[Trajectory]
    truncated: str | None = None  # what was cut off, e.g. "line 4 is cut off"; None when the file is whole


@dataclass
class _ReadState:
    truncated: str | None = None


def _lines(path: Path, skip_truncated_tail: bool, state: _ReadState) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, raw bytes, whether it is the last line) for each line; a cut-off gzip stream ends early
    (recorded in `state` when `skip_truncated_tail`, else an SIAError).

    Lines are decoded one at a time by the caller, so a last line cut inside a multi-byte character is a
    truncated line like any other (not an unreadable file), and a bad byte elsewhere names its line. The
    first bytes are checked first, so a file that is not gzip (or is gzip under a plain name) is called that,
    instead of reading as a file with no records.
    """
    compressed = path.suffix == ".gz"
    try:
        with path.open("rb") as raw:
            magic = raw.read(len(_GZIP_MAGIC))
    except OSError as exc:
        raise SIAError(f"Cannot read trajectory file {path}: {exc.strerror or exc}.") from exc
    if compressed and not _GZIP_MAGIC.startswith(magic):
        raise SIAError(f"{path} is not a gzip file.",
                       "A .gz trajectory file holds gzip-compressed JSON lines; name a plain one .jsonl.")
    if not compressed and magic == _GZIP_MAGIC:
        raise SIAError(f"{path} is gzip-compressed, but its name does not end in .gz.", f"Rename it to {path.name}.gz.")
    previous: tuple[int, bytes] | None = None
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as src:
            for number, line in enumerate(src, start=1):
                if previous:
                    yield previous[0], previous[1], False
                previous = (number, line)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        if not skip_truncated_tail:
            raise SIAError(f"Trajectory file {path} is truncated or corrupt ({exc}).") from exc
        if isinstance(exc, EOFError):
            state.truncated = "the gzip stream ends before its end marker"
        else:
            state.truncated = f"the gzip data is damaged after line {previous[0] if previous else 0} ({exc})"
        if previous:  # a complete line: the stream broke while reading the one after it
            yield previous[0], previous[1], False
        return
    except OSError as exc:
        raise SIAError(f"Cannot read trajectory file {path}: {exc.strerror or exc}.") from exc
    if previous:
        yield previous[0], previous[1], True


def _parse(path: Path, number: int, line: bytes) -> Trajectory:
    """One record, or an SIAError that says what the line is not (UTF-8, JSON, a record of ours) or what is
    wrong with it, with the file and line number."""
    where = f"{path}:{number}"
    try:
        data = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SIAError(f"{where} is not UTF-8 text ({exc}).", _FIX) from None
    except ValueError as exc:
        raise SIAError(f"{where} is not JSON ({exc}).", _FIX) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        if not isinstance(data, dict):
            what = f"it is a JSON {_JSON_TYPES.get(type(data), 'value')}, not an object"
        elif "schema" in data:
            what = f"its schema is {data['schema']!r}, not {SCHEMA!r}"
        else:
            what = 'it has no "schema" field'
        raise SIAError(f"{where} is not a sia-monitor trajectory record ({what}).", _FIX)
    try:
        return Trajectory.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SIAError(f"{where}: malformed trajectory record ({exc}).", _FIX) from exc


def _read(path: Path, skip_truncated_tail: bool, state: _ReadState) -> Iterator[Trajectory]:
    if not path.is_file():
        raise SIAError(f"Trajectory file {path} does not exist.")
    for number, line, is_last in _lines(path, skip_truncated_tail, state):
        if not line.strip():
            continue
        # A cut-off record: the last line, without its newline, begun as a JSON object. Any other bad line
        # (a terminated one, or text that never was a record) is damage, and is reported as such.
        cut = is_last and not line.endswith(b"\n") and line.lstrip().startswith(b"{")
        try:
            record = _parse(path, number, line)
        except SIAError as exc:
            if not cut:
                raise
            if skip_truncated_tail:
                state.truncated = f"line {number} is cut off"
                return
            raise SIAError(f"{path}:{number}: malformed trajectory record: the file ends inside it, so it is "
                           "truncated.", "Delete the cut-off last line to keep the records before it.") from exc
        yield record


def read_trajectories(path: str | Path, skip_truncated_tail: bool = False) -> Iterator[Trajectory]:
    """Read records; a malformed line raises SIAError naming the file and line.

    `skip_truncated_tail`: tolerate a half-written last line (what a killed writer leaves) instead of failing.
    This drops the tail silently; a caller that must say so uses `read_trajectory_file`.
    """
    yield from _read(Path(path), skip_truncated_tail, _ReadState())


def read_trajectory_file(path: str | Path) -> TrajectoryFile:
    """Every complete record of a file, tolerating (and reporting, in `truncated`) a cut-off tail.

    Damage anywhere but the tail still raises SIAError, as in `read_trajectories`.
    """
    state = _ReadState()
    records = list(_read(Path(path), True, state))
    return TrajectoryFile(Path(path), records, state.truncated)
