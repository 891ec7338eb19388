"""`SIAMonitor`: a LogitsProcessor that measures the conditional answer entropy after every reasoning step.

It drops into any `model.generate(...)`:

    cache = DynamicCache(config=model.config)
    monitor = SIAMonitor(model, tokenizer, cache, NUMERIC, questions=[question])
    out = model.generate(**inputs, cache=cache, logits_processor=[monitor])
    trajectories = monitor.finish(out)

At each call it sees the token just generated for every row (the live cache then holds exactly
`input_ids.shape[1]` tokens). When a row's token closes a reasoning step, the rows that need it are probed in
one forward pass (`probe.run_probe`) on top of that cache, which is restored before returning. It returns
`scores` untouched, so generation is token-for-token what it would have been without it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import Cache, LogitsProcessor

from sia_monitor.errors import SIAError
from sia_monitor.probing.estimators import Estimator, ProbeContext, make_estimator, recent_first
from sia_monitor.probing.hidden_states import HiddenStateProjector, HiddenStateSpec
from sia_monitor.probing.probe import ProbeTree, run_probe
from sia_monitor.probing.segmentation import (
    SEGMENTER_MODES,
    CompletedStep,
    SegmenterMode,
    StepSegmenter,
    TokenText,
)
from sia_monitor.probing.stopping import RowStopper
from sia_monitor.scoring import Prefix, StepScorer
from sia_monitor.tasks.answers import AnswerDistribution, AnswerSpace, parse_answer
from sia_monitor.tasks.prompts import probe_suffix
from sia_monitor.trajectory import MonitorEvent, StepRecord, Trajectory

EventSink = Callable[[MonitorEvent], None]
_TOP_K_CONFIDENCE = 20


@dataclass
class _Row:
    """Everything the monitor tracks for one batch row."""

    space: AnswerSpace
    question: str
    estimator: Estimator
    segmenter: StepSegmenter
    tokens: list[int] = field(default_factory=list)
    token_entropy: list[float] = field(default_factory=list)
    token_confidence: list[float] = field(default_factory=list)
    token_logprob: list[float] = field(default_factory=list)
    token_self_certainty: list[float] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    context: ProbeContext = field(default_factory=ProbeContext)
    answered: bool = False  # the final-answer line was written: no more probes
    done: bool = False  # EOS generated
    stopped: bool = False  # ended by the RowStopper: `generate` now writes only padding for it
    held_bytes: list[int] = field(default_factory=list)  # tokens whose text is an incomplete UTF-8 character
    prompt_mask: torch.Tensor | None = None  # attention mask of the row's prompt, left padding included
    start: int = 0  # sequence length when the row's first token is drawn (its prompt's end)
    started: float = field(default_factory=time.perf_counter)
    trajectory: Trajectory | None = None  # built as soon as the row ends, so consumers can save it at once


class SIAMonitor(LogitsProcessor):
    """Step-wise conditional answer entropy, computed on the live KV cache while `generate` runs.

    `spaces` / `questions`: one per batch row (a single value is used for every row). `questions` seed the
    numeric candidates with the numbers of the question. `on_event` receives token, step and final events as
    they happen (called from the generating thread). `probe=False` records per-token signals only.
    `row_stopper`: the `RowStopper` passed to the same `generate`, so that the padding `generate` writes for a
    row it stopped is not read as that row's tokens. `scorer` (a fitted calibrator, see `scoring.StepScorer`)
    fills each step's `p_correct` before its event is sent. `hidden_states`: record each step's projected
    hidden states at the answer slot (`StepRecord.hidden`), read from the same probe forward.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: object,
        cache: Cache,
        spaces: AnswerSpace | Sequence[AnswerSpace],
        questions: Sequence[str] = (),
        segmenter: SegmenterMode = "line",
        step_regex: str | None = None,
        on_event: EventSink | None = None,
        probe: bool = True,
        model_id: str = "",
        row_stopper: RowStopper | None = None,
        scorer: StepScorer | None = None,
        hidden_states: HiddenStateSpec | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cache = cache
        self.spaces = [spaces] if isinstance(spaces, AnswerSpace) else list(spaces)
        self.questions = list(questions)
        self.segmenter_mode = segmenter
        self.step_regex = step_regex
        self.on_event = on_event
        self.probe_enabled = probe
        self.row_stopper = row_stopper
        self.scorer = scorer
        self.projector = HiddenStateProjector.for_model(hidden_states, model) if hidden_states else None
        self.model_id = model_id or getattr(getattr(model, "config", None), "name_or_path", "")
        self.text = TokenText(tokenizer)
        self.eos_token_ids = self._eos_ids()  # the tokens that end a row (the model's and the tokenizer's)
        self._suffix_tokens: dict[tuple[str, bool], list[int]] = {}
        self._estimators: dict[AnswerSpace, Estimator] = {}
        self.rows: list[_Row] = []
        self.prompt_mask: torch.Tensor | None = None
        self._prompt_len = 0
        self._seen_len = -1
        self._started = 0.0
        self._generation: dict[str, object] = {}
        self.probe_calls = 0
        self.probe_seconds = 0.0
        self._last_log_probs: torch.Tensor | None = None  # the distribution each row's next token is drawn from
        self.cache_rows: list[int] | None = None  # batch row of each cache row, once finished rows left it
        StepSegmenter(segmenter, step_regex)  # validate the mode and pattern now, not mid-generation

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        config = getattr(self.model, "generation_config", None)
        for value in (getattr(config, "eos_token_id", None), getattr(self.tokenizer, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(value)
        return ids

    def _estimator(self, space: AnswerSpace) -> Estimator:
        if space not in self._estimators:
            self._estimators[space] = make_estimator(self.tokenizer, space)
        return self._estimators[space]

    def begin(self, attention_mask: torch.Tensor, generation: dict[str, object] | None = None) -> None:
        """Reset for a new generation whose prompt has this (batch, prompt length) mask (left padding = 0).

        `generation`: the decoding settings every trajectory records (a row that reaches EOS mid-batch gets
        its trajectory, and its final event, right then).
        """
        batch = attention_mask.shape[0]
        spaces = self.spaces * batch if len(self.spaces) == 1 else self.spaces
        questions = self.questions * batch if len(self.questions) == 1 else (self.questions or [""] * batch)
        if len(spaces) != batch or len(questions) != batch:
            raise ValueError(f"got {len(spaces)} answer spaces and {len(questions)} questions for {batch} rows")
        self.prompt_mask = attention_mask.detach().to(torch.long)
        self.rows = [self._new_row(space, question, mask)
                     for space, question, mask in zip(spaces, questions, self.prompt_mask, strict=True)]
        self._prompt_len = attention_mask.shape[1]
        self._seen_len = self._prompt_len - 1  # the first call sees the bare prompt
        self._started = time.perf_counter()
        self._generation = dict(generation or {})
        self._last_log_probs = None
        self.cache_rows = None

    def _new_row(self, space: AnswerSpace, question: str, prompt_mask: torch.Tensor) -> _Row:
        return _Row(
            space=space,
            question=question,
            estimator=self._estimator(space),
            segmenter=StepSegmenter(self.segmenter_mode, self.step_regex),
            context=ProbeContext(recent_numbers=recent_first([], question)),
            prompt_mask=prompt_mask,
            start=len(prompt_mask),
        )

    def add_rows(self, masks: torch.Tensor, spaces: Sequence[AnswerSpace], questions: Sequence[str]) -> None:
        """New rows joined the generation (`backends.decode`'s `schedule`): their (rows, current length) attention
        masks, their prompt left-padded to the length the others have reached. They are batch rows
        `len(self.rows)` onwards; their first token comes with the next call."""
        for mask, space, question in zip(masks.detach().to(torch.long), spaces, questions, strict=True):
            self.rows.append(self._new_row(space, question, mask))

    def complete_rows(self, input_ids: torch.Tensor, rows: Sequence[int], reason: str = "length") -> None:
        """These rows ended with the token `input_ids` ends with (`backends.decode`'s `on_rows_ended`): feed
        it, and build their trajectories now, each with its final event, rather than when the batch ends.

        The reason is "eos" for a row that drew EOS, "stopped" for one the RowStopper ended, else `reason`.
        A step that the last token closes is not probed: the row has left the cache."""
        for index in rows:
            row = self.rows[index]
            if row.trajectory is not None:
                continue
            if not (row.done or self._stopped(index, row, input_ids.shape[1])):
                self._feed(index, row, int(input_ids[index, -1]))
            stopped = self.row_stopper is not None and index in self.row_stopper.stopped
            self._complete(index, "eos" if row.done else "stopped" if stopped else reason)

    def set_cache_rows(self, rows: list[int]) -> None:
        """The decoding loop dropped finished rows from the cache: `rows` are the batch rows it still holds, in
        cache order (`backends.decode`). Probes then address those cache rows; everything else is unchanged."""
        self.cache_rows = list(rows)

    def _infer_begin(self, input_ids: torch.Tensor) -> None:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        mask = torch.ones_like(input_ids)
        if pad is not None:
            mask = (input_ids != pad).long().cumsum(1).clamp(max=1)  # only leading pads count as padding
        self.begin(mask)

    # -- the hook -----------------------------------------------------------------------------------------
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        if self.prompt_mask is None or length <= self._seen_len or len(self.rows) != input_ids.shape[0]:
            self._infer_begin(input_ids)  # used without begin(), or reused for a new generate call
        if length > self._prompt_len:
            closed: dict[int, CompletedStep] = {}
            for index, row in enumerate(self.rows):
                if row.trajectory is not None or row.done or length <= row.start or self._stopped(index, row, length):
                    continue
                step = self._feed(index, row, int(input_ids[index, -1]))
                if step is not None:
                    closed[index] = step
            if closed:
                self._probe(closed, length)
            for index, row in enumerate(self.rows):
                if row.done and row.trajectory is None:  # EOS mid-batch: the row's record is final now
                    self._complete(index, "eos")
        self._seen_len = length
        self._record_token_signals(scores)
        return scores

    def _stopped(self, index: int, row: _Row, length: int) -> bool:
        """Whether the row's token at position `length - 1` is padding written after the RowStopper ended it."""
        if not row.stopped and self.row_stopper is not None:
            stop_length = self.row_stopper.stopped_at.get(index)
            row.stopped = stop_length is not None and length > stop_length
        return row.stopped

    def _feed(self, index: int, row: _Row, token: int) -> CompletedStep | None:
        if self._last_log_probs is not None:
            row.token_logprob.append(float(self._last_log_probs[index, token]))
        if token in self.eos_token_ids:
            row.done = True
            return None
        row.tokens.append(token)
        step = feed_step(row.segmenter, row.context, self._emit_text(index, row, token))
        if step is None:
            return None
        row.answered = row.answered or step.is_answer
        return None if (row.answered or not self.probe_enabled) else step

    def _emit_text(self, index: int, row: _Row, token: int) -> str:
        row.held_bytes.append(token)
        piece = self.text.piece(token) if len(row.held_bytes) == 1 else self.text.decode(row.held_bytes)
        if piece.endswith("\ufffd") and len(row.held_bytes) < 4:
            return ""
        row.held_bytes.clear()
        if self.on_event:
            self.on_event(MonitorEvent("token", row=index, text=piece))
        return piece

    def _record_token_signals(self, scores: torch.Tensor) -> None:
        log_probs = scores.float().log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).nan_to_num().sum(-1) / math.log(2)
        confidence = -log_probs.topk(_TOP_K_CONFIDENCE, dim=-1).values.mean(-1)
        self_certainty = -log_probs.clamp(min=-1e4).mean(-1) - math.log(log_probs.shape[-1])
        self._last_log_probs = log_probs  # the next call reads the drawn token's log-probability from it
        for index, row in enumerate(self.rows):
            if not (row.done or row.stopped or row.trajectory is not None):
                row.token_entropy.append(float(entropy[index]))
                row.token_confidence.append(float(confidence[index]))
                row.token_self_certainty.append(float(self_certainty[index]))

    def _suffix(self, space: AnswerSpace, at_line_start: bool) -> list[int]:
        key = (space.kind, at_line_start)
        if key not in self._suffix_tokens:
            text = probe_suffix(space) if at_line_start else "\n" + probe_suffix(space)
            self._suffix_tokens[key] = list(self.tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]
        return self._suffix_tokens[key]

    def _probe(self, closed: dict[int, CompletedStep], length: int) -> None:
        started = time.perf_counter()
        plans = {}
        trees: dict[int, ProbeTree] = {}
        for index, step in closed.items():
            row = self.rows[index]
            tree, plan = row.estimator.plan(self._suffix(row.space, step.at_line_start), row.context)
            trees[index], plans[index] = tree, plan
        in_cache = self.cache_rows if self.cache_rows is not None else list(range(len(self.rows)))
        prefix_mask = torch.stack([self._mask(self.rows[r], length) for r in in_cache])
        pad = getattr(self.tokenizer, "pad_token_id", None) or 0
        layers = self.projector.layers if self.projector else ()
        at = {row: in_cache.index(row) for row in trees}  # cache row of each probed batch row
        result = run_probe(self.model, self.cache, prefix_mask, {at[r]: tree for r, tree in trees.items()}, pad,
                           hidden_layers=layers)
        self.probe_calls += 1
        for index, step in closed.items():
            row = self.rows[index]
            dist: AnswerDistribution = row.estimator.read(plans[index], result.log_probs[at[index]])
            row.context.previous = dist
            record = StepRecord.from_distribution(len(row.steps), step.token_start, step.token_end, step.text, dist)
            if self.projector is not None:
                record.hidden = self.projector.project(result.hidden[at[index]])
            row.steps.append(record)
            if self.scorer is not None:
                record.p_correct = round(self.scorer.p_correct(self._prefix(row)), 4)
            if self.on_event:
                self.on_event(MonitorEvent("step", row=index, step=record))
        self.probe_seconds += time.perf_counter() - started

    @staticmethod
    def _mask(row: _Row, length: int) -> torch.Tensor:
        """The row's attention mask over a sequence of `length`: its prompt's, then ones."""
        assert row.prompt_mask is not None
        return torch.cat([row.prompt_mask, row.prompt_mask.new_ones(length - row.start)])

    @staticmethod
    def _prefix(row: _Row) -> Prefix:
        # token signals are recorded one call behind the tokens, so after token n the first n are known
        tokens = row.steps[-1].tokens_so_far
        return Prefix(row.question, row.space, list(row.steps), row.token_entropy[:tokens],
                      row.token_confidence[:tokens])

    # -- after generate -----------------------------------------------------------------------------------
    def finish(
        self,
        sequences: torch.Tensor,
        finish_reasons: Sequence[str] | None = None,
        generation: dict[str, object] | None = None,
    ) -> list[Trajectory]:
        """Feed the tokens `generate` produced after the last call and build one trajectory per row.

        `finish_reasons` say why each row that did not reach EOS ended (stopped, cancelled, length).
        """
        if generation is not None:
            self._generation = dict(generation)
        if sequences.shape[1] > self._seen_len >= self._prompt_len:
            for index, row in enumerate(self.rows):
                if row.trajectory is None and not (row.done or self._stopped(index, row, self._seen_len + 1)):
                    self._feed(index, row, int(sequences[index, self._seen_len]))
        trajectories = []
        for index, row in enumerate(self.rows):
            if row.trajectory is None:
                reason = "eos" if row.done else "stopped" if row.stopped else (
                    finish_reasons[index] if finish_reasons else "length")
                self._complete(index, reason)
            assert row.trajectory is not None
            trajectories.append(row.trajectory)
        self.prompt_mask = None
        return trajectories

    def _complete(self, index: int, reason: str) -> None:
        """Build row `index`'s trajectory once, when it ends, and send its final event."""
        row = self.rows[index]
        if row.held_bytes and self.on_event:
            self.on_event(MonitorEvent("token", row=index, text=self.text.decode(row.held_bytes)))
        row.held_bytes.clear()
        row.trajectory = finished_trajectory(
            model_id=self.model_id, question=row.question, space=row.space,
            segmenter=segmenter_label(self.segmenter_mode, self.step_regex), steps=row.steps,
            signals=TokenSignals(row.token_entropy, row.token_confidence, row.token_logprob,
                                 row.token_self_certainty),
            final_text=self.tokenizer.decode(row.tokens, skip_special_tokens=True),  # type: ignore[attr-defined]
            n_tokens=len(row.tokens), done=row.done, answered=row.answered, reason=reason,
            elapsed_s=time.perf_counter() - max(self._started, row.started),
            generation={**self._generation, "prompt_tokens": int(row.prompt_mask.sum()) if row.prompt_mask is not None
                        else 0},
        )
        if self.on_event:
            self.on_event(MonitorEvent("final", row=index, trajectory=row.trajectory))


def feed_step(segmenter: StepSegmenter, context: ProbeContext, piece: str) -> CompletedStep | None:
    """Feed a token's text to the row's segmenter; a step it closes also gives the next probe its numbers."""
    step = segmenter.feed(piece)
    if step is not None:
        context.recent_numbers = recent_first(context.recent_numbers, step.text)
    return step


@dataclass
class TokenSignals:
    """The per-token signals of one row, one entry per drawn token (the EOS draw included)."""

    entropy: list[float] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    logprob: list[float] = field(default_factory=list)
    self_certainty: list[float] = field(default_factory=list)


def segmenter_label(mode: str, step_regex: str | None) -> str:
    """How a trajectory records its step mode: the mode, or "regex:PATTERN"."""
    return mode if mode != "regex" else f"regex:{step_regex}"


def segmenter_from_label(label: str) -> tuple[SegmenterMode, str | None]:
    """The step mode and pattern a trajectory's `segmenter` label records (`segmenter_label` inverted)."""
    mode, _, pattern = label.partition(":")
    if mode not in SEGMENTER_MODES or (mode == "regex") != bool(pattern):
        raise SIAError(f"Unknown step mode {label!r} in a trajectory.")
    return mode, pattern or None  # type: ignore[return-value]


def finished_trajectory(
    *, model_id: str, question: str, space: AnswerSpace, segmenter: str, steps: list[StepRecord],
    signals: TokenSignals, final_text: str, n_tokens: int, done: bool, answered: bool, reason: str,
    elapsed_s: float, generation: dict[str, object],
) -> Trajectory:
    """One row's trajectory as it ended, the same for every backend. `done`: it drew EOS (whose signals are
    then the last entry); `answered`: it wrote its answer line."""
    # A trace cut short before its answer line has no answer: the prose fallback would read the last
    # number of unfinished reasoning as one (and could grade it correct).
    states = done or answered or reason == "length"
    kept = n_tokens + int(done)
    return Trajectory(
        model_id=model_id,
        question=question,
        answer_space=space,
        suffix=probe_suffix(space),
        segmenter=segmenter,
        steps=steps,
        token_entropy=signals.entropy[:kept],
        token_confidence=signals.confidence[:kept],
        token_logprob=signals.logprob[:kept],
        token_self_certainty=signals.self_certainty[:kept],
        final_text=final_text,
        parsed_answer=parse_answer(final_text, space) if states else None,
        finish_reason=reason,
        n_tokens=n_tokens,
        elapsed_s=round(elapsed_s, 3),
        generation=dict(generation),
    )
