"""The wire format: OpenAI's request and response shapes, and the `sia` extension, in one place.

Why strict (`extra="forbid"`): a field we cannot honour must be refused with a clear 400, never silently
ignored, so an unknown field is an error that names it. Fields OpenAI defines but we do not implement are
declared and refused by value (e.g. `logprobs: true`), so a client that sends their neutral value still works.

The extension rides in the request's top-level `sia` object (`extra_body={"sia": {...}}` in the `openai`
client) and comes back as a top-level `sia` field of chunks and responses. Measured facts about the `openai`
3.x client shape these choices: unknown fields survive (`chunk.model_extra`, `model_dump()`), but a custom SSE
`event:` name or any `"error"` key inside a payload breaks it, so neither is used.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sia_monitor.client import SiaStep, SiaSummary
from sia_monitor.errors import SIAError
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.tasks.answers import NUMERIC, AnswerSpace, parse_choices, split_inline_choices
from sia_monitor.trajectory import StepRecord, Trajectory

PolicyMode = Literal["observe", "stop", "resample", "accept"]


class RequestError(Exception):
    """A request we refuse: becomes OpenAI's error body with `status`."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.kind = message, status, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiaOptions(_Strict):
    """The monitor's options for one request: answer space, step mode, guardrail policy, calibrator."""

    answer: Literal["auto", "numeric", "choice", "candidates"] = "auto"
    choices: list[str] | str | None = None  # ["red", "blue"] or "A) red B) blue"
    candidates: list[str] | None = None
    steps: Literal["line", "sentence", "regex"] | None = None  # None: the server's --steps
    step_regex: str | None = None
    policy: PolicyMode = "observe"
    stop_below: float | None = None
    patience: int | None = None
    min_steps: int | None = None
    accept_above: float | None = None
    max_resamples: int | None = None
    calibrator: bool = True

    def space_for(self, question: str) -> tuple[str, AnswerSpace]:
        """(question, answer space), as the CLI's `--answer-type` resolves them; options written after the
        question are cut off it."""
        try:
            if self.choices and self.answer in ("auto", "choice"):
                if isinstance(self.choices, str):
                    return question, parse_choices(self.choices)
                labels = tuple("ABCDEFGHIJ"[: len(self.choices)])
                return question, AnswerSpace("choice", labels=labels, options=tuple(self.choices))
            if self.candidates and self.answer in ("auto", "candidates"):
                return question, AnswerSpace("candidates", candidates=tuple(c.strip() for c in self.candidates))
            if self.answer in ("auto", "choice"):
                inline = split_inline_choices(question)
                if inline is not None:
                    return inline
                if self.answer == "choice":
                    raise RequestError("sia.answer 'choice' needs options: sia.choices, or 'A) ... B) ...' "
                                       "after the question.", param="sia.choices")
            if self.answer == "candidates":
                raise RequestError("sia.answer 'candidates' needs sia.candidates.", param="sia.candidates")
        except SIAError as exc:
            raise RequestError(str(exc), param="sia.choices") from exc
        return question, NUMERIC

    def guardrail(self) -> tuple[GuardrailPolicy, bool]:
        """(policy, whether it acts). `observe` only watches; `stop`, `resample` and `accept` act."""
        base = GuardrailPolicy()
        try:
            policy = GuardrailPolicy(
                min_steps=self.min_steps if self.min_steps is not None else base.min_steps,
                stop_below=self.stop_below if self.stop_below is not None else base.stop_below,
                patience=self.patience if self.patience is not None else base.patience,
                max_resamples=(self.max_resamples if self.max_resamples is not None else 1)
                if self.policy == "resample" else 0,
                accept_above=(self.accept_above if self.accept_above is not None else 0.5)
                if self.policy == "accept" else None,
            )
        except SIAError as exc:
            raise RequestError(str(exc), param="sia") from exc
        return policy, self.policy != "observe"


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text; content parts other than text are refused."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if part.get("type") != "text":
                raise RequestError(f"Content parts of type {part.get('type')!r} are not supported (text only).",
                                   param="messages")
            texts.append(str(part.get("text", "")))
        return "".join(texts)


class _Sampling(_Strict):
    """The fields chat and completions share."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # OpenAI fields we do not implement: accepted only at their neutral value (checked in `refuse_unsupported`)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | int | None = None
    logit_bias: dict[str, float] | None = None
    sia: SiaOptions = Field(default_factory=SiaOptions)

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise RequestError("stop takes up to 4 non-empty strings.", param="stop")
        return stops

    def refuse_unsupported(self) -> None:
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise RequestError(f"{name} is not supported (the monitored generation cannot apply it).",
                                   param=name)
        if self.logprobs not in (None, False, 0):
            raise RequestError("logprobs is not supported; the `sia` field carries the answer distribution.",
                               param="logprobs")
        if self.logit_bias:
            raise RequestError("logit_bias is not supported.", param="logit_bias")
        if self.stream_options is not None and not self.stream:
            raise RequestError("stream_options is only allowed with stream: true.", param="stream_options")
        if self.stream and self.sia.policy == "resample":
            raise RequestError("sia.policy 'resample' needs stream: false (a stream cannot take back the text it "
                               "has sent).", param="sia.policy")


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def question(self) -> str:
        """The question: the one user turn. The monitor writes its own system prompt (it defines what a step
        is and how the answer is stated, which the probe relies on), so other roles are refused."""
        if not self.messages:
            raise RequestError("messages is empty: send one user message with the question.", param="messages")
        users = [m for m in self.messages if m.role == "user"]
        others = sorted({m.role for m in self.messages} - {"user"})
        if others:
            raise RequestError(f"Only a single user message is supported for now (got {', '.join(others)} "
                               "messages too): the monitor writes its own system prompt.", param="messages")
        if len(users) != 1:
            raise RequestError(f"Send exactly one user message (got {len(users)}): multi-turn conversations are "
                               "not supported yet.", param="messages")
        question = users[0].text().strip()
        if not question:
            raise RequestError("The user message is empty.", param="messages")
        return question

    def budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def question(self) -> str:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise RequestError("prompt takes one string (batches of prompts are not supported).", param="prompt")
        if self.echo or self.suffix or (self.best_of not in (None, 1)):
            raise RequestError("echo, suffix and best_of are not supported.", param="prompt")
        question = prompts[0].strip()
        if not question:
            raise RequestError("prompt is empty.", param="prompt")
        return question

    def budget(self) -> int | None:
        return self.max_tokens


# -- what goes back -----------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def step_payload(index: int, step: StepRecord, decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `sia` field of a chunk that closes a reasoning step (`index`: the choice it belongs to)."""
    return _step(index, step, decision).to_json()


def _step(index: int, step: StepRecord, decision: dict[str, Any] | None = None) -> SiaStep:
    return SiaStep(index=index, step=step.index + 1, entropy_bits=step.entropy_bits, top=list(step.top),
                   covered=step.covered, p_correct=step.p_correct, tokens=step.tokens_so_far, decision=decision)


def summary_payload(index: int, trajectory: Trajectory, steps: bool = False) -> dict[str, Any]:
    """The `sia` summary of a finished choice; with `steps`, the per-step list too (non-streaming)."""
    last = trajectory.steps[-1] if trajectory.steps else None
    summary = SiaSummary(
        index=index, answer=trajectory.parsed_answer, steps=len(trajectory.steps),
        p_correct=last.p_correct if last else None, entropy_bits=last.entropy_bits if last else None,
        decisions=list(trajectory.decisions), tokens=trajectory.n_tokens, finish_reason=trajectory.finish_reason,
        answer_space=trajectory.answer_space.kind,
        batch=int(trajectory.generation.get("batch_size", 1) or 1),  # requests generated together with it
        trace=[_step(index, step) for step in trajectory.steps] if steps else [])
    return summary.to_json(with_trace=steps)


def finish_reason(trajectory: Trajectory, hit_stop: bool) -> str:
    """OpenAI's finish_reason: `length` when the budget ran out, else `stop` (the model ended, a stop string
    matched, or the guardrail ended the trace; `sia.finish_reason` says which)."""
    if hit_stop:
        return "stop"
    return "length" if trajectory.finish_reason == "length" else "stop"
