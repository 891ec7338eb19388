"""`Monitor`: the convenience API around `SIAMonitor` — prompts in, trajectories or a live event stream out.

It owns the parts every consumer would otherwise repeat: chat-templating the question, left-padded batching,
the context-window check, seeding, the cache handed to both `generate` and the hook, cancellation, and the
worker thread behind `stream()`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessorList, StoppingCriteriaList

from sia_monitor.backends.base import GenerationSettings, as_batch, check_budgets
from sia_monitor.backends.decode import Schedule, decode
from sia_monitor.errors import SIAError
from sia_monitor.models import DEFAULT_MODEL, LoadedModel, load_model
from sia_monitor.probing.estimators import ProbeContext, make_estimator, recent_first
from sia_monitor.probing.hidden_states import HiddenStateProjector, HiddenStateSpec
from sia_monitor.probing.monitor import EventSink, SIAMonitor
from sia_monitor.probing.probe import run_probe
from sia_monitor.probing.segmentation import SegmenterMode
from sia_monitor.probing.stopping import CancelOnEvent, RowStopper
from sia_monitor.scoring import StepScorer
from sia_monitor.tasks.answers import NUMERIC, AnswerDistribution, AnswerSpace, parse_answer
from sia_monitor.tasks.prompts import build_messages, probe_suffix
from sia_monitor.trajectory import MonitorEvent, Trajectory
from sia_monitor.worker import stream_from_worker


class Monitor:
    """A loaded model plus the SIA hook: `generate()` for batches, `stream()` for one live generation.

    The in-process implementation of `backends.base.Backend`, the interface every consumer depends on.

    `scorer`: a fitted calibrator (`calibrators.load_calibrator`) that gives every step its live `p_correct`.
    `hidden_states`: also record each step's projected hidden states (`hidden_states.py`); `collect` does.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        segmenter: SegmenterMode = "line",
        step_regex: str | None = None,
        scorer: StepScorer | None = None,
        hidden_states: HiddenStateSpec | None = None,
    ) -> None:
        self.loaded = loaded
        self.segmenter = segmenter
        self.step_regex = step_regex
        self.scorer = scorer
        self.hidden_states = hidden_states
        if hidden_states is not None:  # refuse layers the model does not have now, not at the first step
            HiddenStateProjector.for_model(hidden_states, loaded.model)

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, **kwargs: Any) -> Monitor:
        return cls(load_model(model), **kwargs)

    @property
    def model_id(self) -> str:
        return self.loaded.model_id

    def with_options(self, segmenter: SegmenterMode, step_regex: str | None, scorer: StepScorer | None) -> Monitor:
        """The same loaded model with another step mode and scorer (a server's per-request choices)."""
        return Monitor(self.loaded, segmenter=segmenter, step_regex=step_regex, scorer=scorer,
                       hidden_states=self.hidden_states)

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def encode(
        self, questions: Sequence[str], spaces: Sequence[AnswerSpace], max_new_tokens: int
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Chat-template and left-pad the prompts; return the encoding and the max_new_tokens that fit."""
        texts = [
            self.tokenizer.apply_chat_template(build_messages(q, s), add_generation_prompt=True, tokenize=False)
            for q, s in zip(questions, spaces, strict=True)
        ]
        encoding = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        window = getattr(self.model.config, "max_position_embeddings", None) or 1 << 30
        prompt_len = encoding["input_ids"].shape[1]
        if prompt_len >= window - 16:
            raise SIAError(
                f"The prompt is {prompt_len} tokens long; the model's context window is {window}.",
                "Shorten the question.",
            )
        return dict(encoding), min(max_new_tokens, window - prompt_len - 16)

    def generate(
        self,
        questions: str | Sequence[str],
        spaces: AnswerSpace | Sequence[AnswerSpace] = NUMERIC,
        settings: GenerationSettings | None = None,
        on_event: EventSink | None = None,
        cancel: threading.Event | None = None,
        row_stopper: RowStopper | None = None,
        probe: bool = True,
        budgets: Sequence[int] | None = None,
    ) -> list[Trajectory]:
        """Generate (batched) with the monitor attached; one trajectory per question, in order. `budgets`: each
        question's own token budget, at most `settings.max_new_tokens` (default: that for every question)."""
        questions, space_list = as_batch(questions, spaces)
        if not questions:  # an empty batch (e.g. a filtered benchmark slice) is no work, not an error
            return []
        return self._decode(questions, space_list, settings, on_event, cancel, row_stopper, probe, budgets=budgets)

    def sample(
        self,
        question: str,
        space: AnswerSpace,
        settings: GenerationSettings | None = None,
        first: int = 1,
        schedule: Schedule | None = None,
        on_event: EventSink | None = None,
        cancel: threading.Event | None = None,
        row_stopper: RowStopper | None = None,
    ) -> list[Trajectory]:
        """Samples of one question: `first` start together; after every token `schedule(running)` says how many
        more to start in the rows that ended (None: stop them all now). One trajectory per sample, in the
        order they started; sample k is batch row k for `on_event` and `row_stopper`."""
        if first < 1:
            raise SIAError("A vote starts at least one sample.")
        return self._decode([question] * first, [space] * first, settings, on_event, cancel, row_stopper, True,
                            schedule)

    def _decode(
        self,
        questions: list[str],
        spaces: list[AnswerSpace],
        settings: GenerationSettings | None,
        on_event: EventSink | None,
        cancel: threading.Event | None,
        row_stopper: RowStopper | None,
        probe: bool,
        schedule: Schedule | None = None,
        budgets: Sequence[int] | None = None,
    ) -> list[Trajectory]:
        settings = settings or GenerationSettings()
        encoding, max_new = self.encode(questions, spaces, settings.max_new_tokens)
        if budgets is not None:
            check_budgets(budgets, len(questions), settings.max_new_tokens)
            budgets = [min(budget, max_new) for budget in budgets]  # the context window may leave less
        cache = DynamicCache(config=self.model.config)
        cancel = cancel or threading.Event()
        row_stopper = row_stopper or RowStopper()
        monitor = SIAMonitor(
            self.model, self.tokenizer, cache, spaces, questions,
            segmenter=self.segmenter, step_regex=self.step_regex, on_event=on_event, probe=probe,
            model_id=self.loaded.model_id, row_stopper=row_stopper, scorer=self.scorer,
            hidden_states=self.hidden_states,
        )
        record = {**asdict(settings), "max_new_tokens": max_new, "batch_size": len(questions),
                  "dtype": str(self.model.dtype).removeprefix("torch.")}
        monitor.begin(encoding["attention_mask"], generation=record)
        torch.manual_seed(settings.seed)

        def ended(input_ids: torch.Tensor, rows: list[int]) -> None:
            monitor.complete_rows(input_ids, rows, "cancelled" if cancel.is_set() else "length")

        def added(masks: torch.Tensor) -> None:
            monitor.add_rows(masks, spaces[:1] * len(masks), questions[:1] * len(masks))

        # our loop, not model.generate: a row that ends (EOS, stopped, killed) leaves the batch and frees its
        # compute, and a vote can start new samples in the rows that freed up
        sequences = decode(
            self.model, encoding["input_ids"], encoding["attention_mask"], cache,
            replace(settings, max_new_tokens=max_new), self.tokenizer.pad_token_id, monitor.eos_token_ids,
            processors=LogitsProcessorList([monitor]),
            stopping=StoppingCriteriaList([CancelOnEvent(cancel), row_stopper]),
            on_rows_changed=monitor.set_cache_rows, on_rows_ended=ended, schedule=schedule, on_rows_added=added,
            budgets=budgets,
        )
        reasons = []
        for index in range(sequences.shape[0]):
            if index in row_stopper.stopped:
                reasons.append("stopped")
            elif cancel.is_set() or schedule is not None:
                reasons.append("cancelled")  # a vote ends its running samples when it is decided
            else:
                reasons.append("length")
        return monitor.finish(sequences, reasons)

    def stream(
        self,
        question: str,
        space: AnswerSpace = NUMERIC,
        settings: GenerationSettings | None = None,
        cancel: threading.Event | None = None,
        row_stopper: RowStopper | None = None,
    ) -> Iterator[MonitorEvent]:
        """Yield token, step and final events while `generate` runs in a worker thread.

        Closing the iterator early (or setting `cancel`) stops the generation within one token.
        """
        cancel = cancel or threading.Event()
        return stream_from_worker(
            lambda put: self.generate(question, space, settings, on_event=put, cancel=cancel, row_stopper=row_stopper),
            cancel.set, "sia-monitor-generate")

    def distribution_after(self, question: str, space: AnswerSpace, tokens: Sequence[int],
                           at_line_start: bool = True) -> AnswerDistribution:
        """The answer distribution a probe reads after the chat prompt and these generated `tokens`: what a
        step ending there records (`at_line_start`: the tokens end a line, so no newline goes first)."""
        encoding, _ = self.encode([question], [space], 1)
        ids = torch.cat([encoding["input_ids"], torch.tensor([list(tokens)], dtype=torch.long)], dim=1)
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        estimator = make_estimator(self.tokenizer, space)
        suffix_text = probe_suffix(space) if at_line_start else "\n" + probe_suffix(space)
        context = ProbeContext(recent_numbers=recent_first(recent_first([], question),
                                                           self.tokenizer.decode(list(tokens))))
        tree, plan = estimator.plan(list(self.tokenizer.encode(suffix_text, add_special_tokens=False)), context)
        result = run_probe(self.model, cache, torch.ones_like(ids), {0: tree}, self.tokenizer.pad_token_id or 0)
        return estimator.read(plan, result.log_probs[0])

    def force_answer(
        self, question: str, space: AnswerSpace, reasoning: str, max_new_tokens: int = 16
    ) -> tuple[str, str | None, int]:
        """Make the model state its answer now, after `reasoning` (the text generated so far).

        One short greedy `generate` on the chat prompt + the reasoning + a new line + the probe suffix: the
        same words the probe scored the answers after, so the answer it writes is the one the last step's
        distribution put first (up to ties). Used when a guardrail accepts a converged trace early.
        Returns the answer line, the parsed answer and the number of tokens generated.
        """
        encoding, max_new = self.encode([question], [space], max_new_tokens)
        tail = (reasoning.rstrip() + "\n" if reasoning.strip() else "") + probe_suffix(space)
        extra = self.tokenizer(tail, return_tensors="pt", add_special_tokens=False)["input_ids"]
        input_ids = torch.cat([encoding["input_ids"], extra.to(encoding["input_ids"].device)], dim=1)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max(1, max_new),
                pad_token_id=self.tokenizer.pad_token_id,
                **GenerationSettings(temperature=0.0).generate_kwargs(),
            )
        generated = out[0, input_ids.shape[1]:]
        continuation = self.tokenizer.decode(generated, skip_special_tokens=True)
        line = (probe_suffix(space) + continuation.split("\n", 1)[0]).rstrip()
        return line, parse_answer(line, space), int(generated.shape[0])
