"""What the engine backend needs from a serving engine, whichever one it is.

Why so small: no engine lets a logits processor run extra forwards, so the probe becomes separate requests
that hit the engine's prefix cache. Everything the backend does is built from four calls: render the chat
prompt to token ids, stream a continuation of token ids (closing the stream aborts it, which is how a
generation pauses at a step end), ask for the next token's top-N log-probabilities after some token ids (one
probe node), and encode a short text. Token ids go in and out, never re-tokenised text, so the probe sees
exactly the tokens the model generated.

Each engine reports its own prefix-cache reuse (`Usage`), so a step record can prove a probe did not
re-prefill. Engines return only the top N log-probabilities of a position: a `TopLogprobs` is truncated, and
the backend says so in `covered`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class TopLogprobs:
    """The top-N next-token log-probabilities (natural log, before sampling) at one position, most likely
    first: `pieces[token]` is the token's text (the engine's rendering), for tokens the estimators read."""

    logprobs: dict[int, float]
    pieces: dict[int, str] = field(default_factory=dict)

    @property
    def floor(self) -> float:
        """The lowest log-probability listed: every token not listed is at most this likely."""
        return min(self.logprobs.values()) if self.logprobs else 0.0


@dataclass(frozen=True)
class Usage:
    """What one request cost the engine: prompt tokens taken from its prefix cache, and evaluated anew."""

    cached: int = 0
    evaluated: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.cached + other.cached, self.evaluated + other.evaluated)


@dataclass(frozen=True)
class GeneratedToken:
    """One token of a streamed continuation, with the distribution it was drawn from."""

    token: int
    text: bytes  # the token's bytes (a piece of a UTF-8 character stays a piece)
    logprob: float  # of the drawn token
    top: TopLogprobs
    usage: Usage | None = None  # what the stream's prompt cost, where the engine says it with every token


@dataclass(frozen=True)
class StreamEnd:
    """The last item of a stream that ran to its end: why it ended ("eos", "length") and what it cost."""

    reason: str
    usage: Usage


class EngineClient(Protocol):
    """One serving engine, addressed by token ids (see the module docstring)."""

    url: str
    model_id: str  # the name the engine serves the model under
    vocab_size: int

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The model's chat template applied to `messages`, generation prompt added, as token ids."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def stream(
        self,
        prompt: Sequence[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        top_n: int,
        slot: int = 0,
    ) -> Iterator[GeneratedToken | StreamEnd]:
        """Continue `prompt`; closing the iterator aborts the request on the engine."""
        ...

    def next_tokens(self, prompt: Sequence[int], top_n: int, count: int = 1, slot: int = 0
                    ) -> tuple[list[TopLogprobs], list[int], Usage]:
        """Greedy `count` tokens after `prompt` (fewer at EOS): the top-N log-probabilities at each position,
        the tokens drawn, and the cost. One request reads a probe's most likely answer whole, node by node."""
        ...

    def close(self) -> None: ...
