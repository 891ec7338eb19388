"""Reading the `sia` field from a server's replies, for clients: `sia_of(chunk)` and `sia_summaries(response)`.

The field's schema is defined here, once: the server builds its payloads from these classes
(`serve.protocol`), so what a client parses is what the server wrote. Pure Python, no torch: a chat app
that only talks to the server imports this and nothing heavy.

    for chunk in client.chat.completions.create(..., stream=True):
        sia = sia_of(chunk)
        if isinstance(sia, SiaStep):
            print(f"step {sia.step} · P(correct) {sia.p_correct}")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SiaStep:
    """A reasoning step just closed in choice `index`: the answer entropy after it (bits), the top answers with
    their probabilities, the probability mass the estimator covered, P(correct) (None without a calibrator),
    the tokens generated so far, and what the guardrail decided there (None: nothing)."""

    index: int
    step: int  # 1-based
    entropy_bits: float
    top: list[tuple[str, float]]
    covered: float
    p_correct: float | None
    tokens: int
    decision: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["top"] = [[answer, p] for answer, p in self.top]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SiaStep:
        return cls(index=int(data.get("index", 0)), step=int(data["step"]), entropy_bits=float(data["entropy_bits"]),
                   top=[(str(a), float(p)) for a, p in data.get("top", [])], covered=float(data.get("covered", 0.0)),
                   p_correct=None if data.get("p_correct") is None else float(data["p_correct"]),
                   tokens=int(data.get("tokens", 0)), decision=data.get("decision"))


@dataclass(frozen=True)
class SiaSummary:
    """Choice `index` finished: its parsed answer, steps, last P(correct) and entropy, the guardrail's
    decisions, tokens, why it ended (`length`, `eos`, `stopped`, ...: finer than OpenAI's finish_reason),
    the answer space, how many requests were generated with it in one batch, and (non-streaming) the steps."""

    index: int
    answer: str | None
    steps: int
    p_correct: float | None
    entropy_bits: float | None
    decisions: list[dict[str, Any]]
    tokens: int
    finish_reason: str
    answer_space: str
    batch: int = 1
    trace: list[SiaStep] = field(default_factory=list)

    def to_json(self, with_trace: bool = False) -> dict[str, Any]:
        data = {name: value for name, value in asdict(self).items() if name != "trace"}
        if with_trace:
            data["trace"] = [step.to_json() for step in self.trace]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SiaSummary:
        return cls(index=int(data.get("index", 0)), answer=data.get("answer"), steps=int(data.get("steps", 0)),
                   p_correct=data.get("p_correct"), entropy_bits=data.get("entropy_bits"),
                   decisions=list(data.get("decisions") or []), tokens=int(data.get("tokens", 0)),
                   finish_reason=str(data.get("finish_reason", "")), answer_space=str(data.get("answer_space", "")),
                   batch=int(data.get("batch", 1)), trace=[SiaStep.from_json(s) for s in data.get("trace") or []])


@dataclass(frozen=True)
class SiaDecision:
    """The guardrail acted in choice `index` at no step of its own (a decision at a step rides in that step's
    `SiaStep.decision`)."""

    index: int
    decision: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _extra(obj: Any) -> dict[str, Any]:
    """The fields beyond OpenAI's: `model_extra` of an `openai` object, or the dict itself."""
    if isinstance(obj, dict):
        return obj
    return dict(getattr(obj, "model_extra", None) or {})


def sia_of(chunk: Any) -> SiaStep | SiaSummary | SiaDecision | None:
    """The `sia` field of one streamed chunk (an `openai` chunk object or its parsed JSON): a `SiaStep` when
    the chunk closes a reasoning step, a `SiaSummary` when it ends a choice, a `SiaDecision` for a decision
    taken between steps, None for a plain text chunk."""
    data = _extra(chunk).get("sia")
    if not isinstance(data, dict):
        return None
    if "step" in data:
        return SiaStep.from_json(data)
    if "answer" in data:
        return SiaSummary.from_json(data)
    return SiaDecision(int(data.get("index", 0)), dict(data.get("decision") or {}))


def sia_summaries(response: Any) -> list[SiaSummary]:
    """The summaries (with each choice's steps in `trace`) of a non-streamed response, one per choice."""
    data = _extra(response).get("sia")
    return [SiaSummary.from_json(item) for item in data] if isinstance(data, list) else []
