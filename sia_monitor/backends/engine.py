"""`EngineBackend`: the SIA monitor on a serving engine (llama.cpp's server, vLLM, SGLang), through its API.

Why separate requests: no engine lets a logits processor run extra forwards, so a generation is streamed as a
token-id continuation and closed (aborted on the engine) the moment a token ends a reasoning step; the probe
is then a few one-token requests on the same token ids plus the answer-forcing suffix, and the generation
resumes from the step's end. Each request hits the engine's prefix cache, so a probe evaluates only the
suffix and the answer's tokens, and resuming evaluates one token; the step record keeps the engine's own
counters to prove it (`StepRecord.engine`).

How a probe reads the answer distribution from top-N lists: the estimators' `ProbeTree` (suffix, then a trie
of candidate answers) is walked one level at a time, asking the engine only about nodes whose path is still
likely (at least `min_path` probability, and every token on it in its parent's list). Everything below is
read from those lists (`estimators.SparseLogProbs`): an unlisted token counts as 0, so `covered` is a lower
bound, and for numbers the probability that the answer ends is an upper bound.

Token signals come from the top-20 list of each drawn token: `token_confidence` (DeepConf's mean of the
top-20 log-probabilities) and `token_logprob` are exact; `token_entropy` counts the mass outside the list as
one outcome (a lower bound), and `token_self_certainty` spreads it evenly over the rest of the vocabulary.
Engines give no hidden states. Rows of a batch run concurrently, each in its own engine slot (whose cache
holds its prefix), so the engine batches them.
"""

from __future__ import annotations

import codecs
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sia_monitor.backends.base import GenerationSettings, as_batch, check_budgets
from sia_monitor.engines.base import EngineClient, GeneratedToken, StreamEnd, TopLogprobs, Usage
from sia_monitor.errors import SIAError
from sia_monitor.probing.estimators import Estimator, ProbeContext, SparseLogProbs, make_estimator, recent_first
from sia_monitor.probing.monitor import TokenSignals, feed_step, finished_trajectory, segmenter_label
from sia_monitor.probing.segmentation import CompletedStep, SegmenterMode, StepSegmenter
from sia_monitor.probing.stopping import RowStopper
from sia_monitor.scoring import Prefix, StepScorer
from sia_monitor.tasks.answers import NUMERIC, AnswerDistribution, AnswerSpace, parse_answer
from sia_monitor.tasks.prompts import build_messages, probe_suffix
from sia_monitor.trajectory import MonitorEvent, StepRecord, Trajectory
from sia_monitor.worker import stream_from_worker

EventSink = Callable[[MonitorEvent], None]
TOKEN_TOP_N = 20  # DeepConf's confidence reads the top 20, so it is exact at this width


class _EncodeCache:
    """The engine's tokenizer, memoised, with the `encode` signature the estimators call."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client
        self._memo: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        with self._lock:
            if text not in self._memo:
                self._memo[text] = self.client.encode(text)
            return list(self._memo[text])


@dataclass
class _Row:
    """One generation in flight on the engine."""

    index: int
    question: str
    space: AnswerSpace
    prompt: list[int]
    estimator: Estimator
    segmenter: StepSegmenter
    slot: int
    tokens: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    signals: TokenSignals = field(default_factory=TokenSignals)
    steps: list[StepRecord] = field(default_factory=list)
    context: ProbeContext = field(default_factory=ProbeContext)
    answered: bool = False
    done: bool = False
    started: float = field(default_factory=time.perf_counter)
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    resumed: Usage = field(default_factory=Usage)  # what the continuation that wrote the current step cost
    last_was_textless: bool = False  # the last token had no text (a special token: maybe an unnamed EOS)


class EngineBackend:
    """A model served by an engine, with the SIA probe run through prefix-cached requests (`Backend`).

    `client`: the engine (`engines.connect`). `model_id`: the id trajectories record and calibrators are
    matched against (default: the name the engine serves the model under). `concurrency`: rows in flight at
    once (default: the engine's slots). `probe_top_n` / `min_path`: how wide each probe node's list is, and
    how likely a candidate's path must stay to be followed (see the module docstring). `probe=False` records
    the token signals only.
    """

    def __init__(
        self,
        client: EngineClient,
        segmenter: SegmenterMode = "line",
        step_regex: str | None = None,
        scorer: StepScorer | None = None,
        model_id: str | None = None,
        concurrency: int | None = None,
        probe_top_n: int = 20,
        min_path: float = 1e-3,
        probe: bool = True,
    ) -> None:
        StepSegmenter(segmenter, step_regex)  # validate the mode and pattern now, not mid-generation
        self.client = client
        self.segmenter = segmenter
        self.step_regex = step_regex
        self.scorer = scorer
        self._model_id = model_id or engine_model_id(client)
        self.concurrency = max(1, concurrency or getattr(client, "slots", 1))
        self.probe_top_n = probe_top_n
        self.probe_enabled = probe  # False: stream without pausing at step ends (the benchmark's plain run)
        self.min_log_path = math.log(min_path)
        self.tokenizer = _EncodeCache(client)
        self.eos_token_ids: set[int] = set(getattr(client, "eos_token_ids", ()))
        self._estimators: dict[AnswerSpace, Estimator] = {}
        self._suffixes: dict[tuple[str, bool], list[int]] = {}
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    def with_options(self, segmenter: SegmenterMode, step_regex: str | None, scorer: StepScorer | None
                     ) -> EngineBackend:
        """The same engine with another step mode and scorer (a server's per-request choices)."""
        other = EngineBackend(self.client, segmenter, step_regex, scorer, self._model_id, self.concurrency,
                              self.probe_top_n, math.exp(self.min_log_path))
        other.tokenizer, other._estimators, other._suffixes = self.tokenizer, self._estimators, self._suffixes
        return other

    # -- the Backend interface ----------------------------------------------------------------------------
    def generate(
        self,
        questions: str | Sequence[str],
        spaces: AnswerSpace | Sequence[AnswerSpace] = NUMERIC,
        settings: GenerationSettings | None = None,
        on_event: EventSink | None = None,
        cancel: threading.Event | None = None,
        row_stopper: RowStopper | None = None,
        budgets: Sequence[int] | None = None,
    ) -> list[Trajectory]:
        questions, space_list = as_batch(questions, spaces)
        if not questions:
            return []
        settings = settings or GenerationSettings()
        check_budgets(budgets, len(questions), settings.max_new_tokens)
        run = _Run(self, settings, on_event, cancel or threading.Event(), row_stopper or RowStopper(),
                   len(questions))
        jobs = [(index, question, space, budgets[index] if budgets else settings.max_new_tokens)
                for index, (question, space) in enumerate(zip(questions, space_list, strict=True))]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)),
                                thread_name_prefix="sia-engine-row") as pool:
            return list(pool.map(lambda job: run.row(*job), jobs))

    def sample(
        self,
        question: str,
        space: AnswerSpace,
        settings: GenerationSettings | None = None,
        first: int = 1,
        schedule: Callable[[int], int | None] | None = None,
        on_event: EventSink | None = None,
        cancel: threading.Event | None = None,
        row_stopper: RowStopper | None = None,
    ) -> list[Trajectory]:
        """Samples of one question, `first` at once; `schedule(running)` is asked after every token of any
        sample (and after a sample ends) how many more to start, or None to end the rest (`cancelled`)."""
        if first < 1:
            raise SIAError("A vote starts at least one sample.")
        settings = settings or GenerationSettings()
        cancel = cancel or threading.Event()
        run = _Run(self, settings, on_event, cancel, row_stopper or RowStopper(), first, schedule=schedule)
        return run.samples(question, space, first)

    def stream(
        self,
        question: str,
        space: AnswerSpace = NUMERIC,
        settings: GenerationSettings | None = None,
        cancel: threading.Event | None = None,
        row_stopper: RowStopper | None = None,
    ) -> Iterator[MonitorEvent]:
        cancel = cancel or threading.Event()
        return stream_from_worker(
            lambda put: self.generate(question, space, settings, on_event=put, cancel=cancel, row_stopper=row_stopper),
            cancel.set, "sia-monitor-engine")

    def force_answer(
        self, question: str, space: AnswerSpace, reasoning: str, max_new_tokens: int = 16
    ) -> tuple[str, str | None, int]:
        """The model's answer line now, after `reasoning`: the probe's words, then greedy to the line's end."""
        tail = (reasoning.rstrip() + "\n" if reasoning.strip() else "") + probe_suffix(space)
        prompt = self.client.chat_prompt(build_messages(question, space)) + self.tokenizer.encode(tail)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text, count = "", 0
        stream = self.client.stream(prompt, max_new_tokens, 0.0, 1.0, 0, 1)
        try:
            for item in stream:
                if isinstance(item, StreamEnd) or item.token in self.eos_token_ids:
                    break
                count += 1
                text += decoder.decode(item.text)
                if "\n" in text:
                    break
        finally:
            stream.close()  # type: ignore[attr-defined]
        line = (probe_suffix(space) + text.split("\n", 1)[0]).rstrip()
        return line, parse_answer(line, space), count

    def distribution_after(self, question: str, space: AnswerSpace, tokens: Sequence[int],
                           at_line_start: bool = True) -> AnswerDistribution:
        """The answer distribution a probe reads after the chat prompt and these generated `tokens` (as
        `Monitor.distribution_after`, so the two backends can be compared on the same prefix)."""
        prompt = self.client.chat_prompt(build_messages(question, space))
        row = _Row(0, question, space, prompt, self.estimator(space), StepSegmenter(self.segmenter, self.step_regex),
                   slot=0, tokens=list(tokens))
        text = self.client.detokenize(list(tokens)) if tokens else ""
        row.context = ProbeContext(recent_numbers=recent_first(recent_first([], question), text))
        step = CompletedStep("", 0, len(tokens), is_answer=False, at_line_start=at_line_start)
        return self.probe(row, step)[0]

    # -- shared per-space state -----------------------------------------------------------------------------
    def estimator(self, space: AnswerSpace) -> Estimator:
        with self._lock:
            if space not in self._estimators:
                self._estimators[space] = make_estimator(self.tokenizer, space)
            return self._estimators[space]

    def suffix(self, space: AnswerSpace, at_line_start: bool) -> list[int]:
        key = (space.kind, at_line_start)
        if key not in self._suffixes:
            text = probe_suffix(space) if at_line_start else "\n" + probe_suffix(space)
            self._suffixes[key] = self.tokenizer.encode(text)
        return self._suffixes[key]

    def probe(self, row: _Row, step: CompletedStep) -> tuple[AnswerDistribution, dict[str, int]]:
        """The answer distribution after the row's current tokens, and what it cost the engine.

        Each request asks for the greedy path below a node, as deep as the tree goes there, so one request
        reads the most likely answer's every node; a branch is asked about only if its path stays likely."""
        tree, plan = row.estimator.plan(self.suffix(row.space, step.at_line_start), row.context)
        anchor = tree.anchor % len(tree)
        children: dict[int, dict[int, int]] = {}
        for node, parent in enumerate(tree.parents):
            children.setdefault(parent, {})[tree.tokens[node]] = node
        height = [0] * len(tree)
        for node in range(len(tree) - 1, -1, -1):  # parents precede children
            if tree.parents[node] >= 0:
                height[tree.parents[node]] = max(height[tree.parents[node]], height[node] + 1)
        depth = {anchor: 0}
        for node in range(anchor + 1, len(tree)):
            depth[node] = depth[tree.parents[node]] + 1
        # how deep the likely answers go (the estimator lists them first: the previous probe's top answers):
        # a request reads no further, so no decode is spent past the answer the model is about to give
        likely = max((len(form) for forms in list(plan.forms.values())[:3] for form in forms), default=1)
        reach = likely + int(bool(plan.end_nodes))
        nodes: list[TopLogprobs | None] = [None] * len(tree)
        path_logprob = {anchor: 0.0}
        paths = {anchor: row.prompt + row.tokens + tree.tokens[: anchor + 1]}
        pending, requests, usage = [anchor], 0, Usage()
        while pending:
            start = pending.pop(0)
            count = max(1, min(height[start] + 1, reach - depth[start]))
            tops, drawn, cost = self.client.next_tokens(paths[start], self.probe_top_n, count, row.slot)
            requests, usage = requests + 1, usage + cost
            node = start
            for top, token in zip(tops, drawn, strict=False):
                nodes[node] = top
                following = children.get(node, {}).get(token)
                if following is None:
                    break
                path_logprob[following] = path_logprob[node] + top.logprobs.get(token, -math.inf)
                paths[following] = paths[node] + [token]
                node = following
            for known in [n for n in range(len(tree)) if nodes[n] is not None]:
                for token, child in children.get(known, {}).items():
                    if nodes[child] is not None or child in pending or known < anchor:
                        continue
                    logprob = nodes[known].logprobs.get(token)  # type: ignore[union-attr]
                    if logprob is None or path_logprob[known] + logprob < self.min_log_path:
                        continue  # below the list, or too unlikely to move the distribution
                    path_logprob[child] = path_logprob[known] + logprob
                    paths[child] = paths[known] + [token]
                    pending.append(child)
        cost = {"probe_requests": requests, "probe_cached": usage.cached, "probe_evaluated": usage.evaluated,
                "continue_cached": row.resumed.cached, "continue_evaluated": row.resumed.evaluated}
        return row.estimator.read(plan, SparseLogProbs(nodes)), cost


@dataclass
class _Run:
    """One `generate` or `sample` call: its settings, sinks and the rows' shared stop signals."""

    backend: EngineBackend
    settings: GenerationSettings
    on_event: EventSink | None
    cancel: threading.Event
    row_stopper: RowStopper
    batch_size: int
    schedule: Callable[[int], int | None] | None = None
    started: float = field(default_factory=time.perf_counter)
    _emit_lock: threading.RLock = field(default_factory=threading.RLock)
    _running: int = 0
    _free_slots: queue.SimpleQueue[int] = field(default_factory=queue.SimpleQueue)

    def __post_init__(self) -> None:
        for slot in range(self.backend.concurrency):  # a row takes a free slot and gives it back when it ends
            self._free_slots.put(slot)

    def emit(self, event: MonitorEvent) -> None:
        """Hand an event on, one at a time (rows run in threads; consumers expect one caller at a time), and
        ask a vote's schedule after every token."""
        with self._emit_lock:
            if self.on_event is not None:
                self.on_event(event)
            if self.schedule is not None and event.kind in ("token", "final"):
                if event.kind == "final":
                    self._running -= 1  # the schedule hears of a row's end after its final event
                self._ask_schedule()

    # -- votes --------------------------------------------------------------------------------------------
    def samples(self, question: str, space: AnswerSpace, first: int) -> list[Trajectory]:
        results: dict[int, Trajectory] = {}
        self._threads: list[threading.Thread] = []
        self._question, self._space = question, space
        self._results = results
        self._errors: list[BaseException] = []
        with self._emit_lock:
            for _ in range(first):
                self._start_sample()
        while True:
            with self._emit_lock:
                pending = [t for t in self._threads if t.is_alive()]
            if not pending:
                break
            pending[0].join()
        if self._errors:
            raise self._errors[0]
        return [results[index] for index in range(len(self._threads))]

    def _start_sample(self) -> None:
        index = len(self._threads)
        self._running += 1
        budget = self.settings.max_new_tokens

        def work() -> None:
            try:
                self._results[index] = self.row(index, self._question, self._space, budget)
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread by samples()
                self._errors.append(exc)

        thread = threading.Thread(target=work, name=f"sia-engine-sample-{index}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _ask_schedule(self) -> None:
        if self.cancel.is_set() or self.schedule is None:
            return
        more = self.schedule(self._running)
        if more is None:
            self.cancel.set()  # the vote is decided: the running samples end as cancelled
            return
        for _ in range(more):
            self._start_sample()

    # -- one row ------------------------------------------------------------------------------------------
    def row(self, index: int, question: str, space: AnswerSpace, budget: int) -> Trajectory:
        slot = self._free_slots.get()
        try:
            return self._row(index, question, space, budget, slot)
        except BaseException:
            self.cancel.set()  # one row failed (the engine went away): the others end now, and the error is raised
            raise
        finally:
            self._free_slots.put(slot)

    def _row(self, index: int, question: str, space: AnswerSpace, budget: int, slot: int) -> Trajectory:
        backend = self.backend
        prompt = backend.client.chat_prompt(build_messages(question, space))
        window = getattr(backend.client, "context_size", 0) or 1 << 30
        if len(prompt) >= window - 16:
            raise SIAError(f"The prompt is {len(prompt)} tokens long; the engine's context window is {window}.",
                           "Shorten the question.")
        budget = min(budget, window - len(prompt) - 16)
        row = _Row(index, question, space, prompt, backend.estimator(space),
                   StepSegmenter(backend.segmenter, backend.step_regex), slot=slot,
                   context=ProbeContext(recent_numbers=recent_first([], question)))
        reason = ""
        while not reason:
            step, reason = self._continue(row, budget)
            if step is not None:
                dist, cost = backend.probe(row, step)
                self._record_step(row, step, dist, cost)
        return self._finish(row, reason)

    def _continue(self, row: _Row, budget: int) -> tuple[CompletedStep | None, str]:
        """Stream from where the row stands until a token closes a step that needs a probe (returned, the
        stream aborted) or the row ends (its finish reason returned)."""
        settings = self.settings
        # each row draws its own numbers, and a resumed stream does not replay the draws of the one before
        seed = (settings.seed + 1_000_003 * row.index + 7919 * len(row.tokens)) % (1 << 31)
        stream = self.backend.client.stream(row.prompt + row.tokens, budget - len(row.tokens), settings.temperature,
                                            settings.top_p, seed, TOKEN_TOP_N, row.slot)
        first = True
        try:
            for item in stream:
                if self.cancel.is_set():
                    return None, "cancelled"
                if row.index in self.row_stopper.stopped:
                    return None, "stopped"
                if isinstance(item, StreamEnd):
                    if first:
                        row.resumed = item.usage
                    if item.reason == "eos" and not row.done and row.tokens and row.last_was_textless:
                        self._retract_eos(row)
                    return None, "eos" if row.done else "length"
                if first and item.usage is not None:
                    row.resumed = item.usage  # what resuming at the step's end cost: the prefix should be cached
                first = False
                step = self._feed(row, item)
                if row.done:
                    return None, "eos"
                if step is not None and len(row.tokens) < budget:
                    return step, ""
            return None, "length" if len(row.tokens) >= budget else "cancelled"
        finally:
            stream.close()  # type: ignore[attr-defined]

    def _feed(self, row: _Row, item: GeneratedToken) -> CompletedStep | None:
        _record_signals(row.signals, item.top, item.logprob, self.backend.client.vocab_size)
        if item.token in self.backend.eos_token_ids:
            row.done = True
            return None
        row.tokens.append(item.token)
        row.text.extend(item.text)
        row.last_was_textless = not item.text
        piece = row.decoder.decode(item.text)
        if piece:
            self.emit(MonitorEvent("token", row=row.index, text=piece))
        step = feed_step(row.segmenter, row.context, piece)
        if step is None:
            return None
        row.answered = row.answered or step.is_answer
        return None if (row.answered or not self.backend.probe_enabled) else step

    @staticmethod
    def _retract_eos(row: _Row) -> None:
        """The engine ended at EOS on a textless token it did not name as EOS: that token was the EOS draw."""
        row.tokens.pop()
        row.done = True

    def _record_step(self, row: _Row, step: CompletedStep, dist: AnswerDistribution, cost: dict[str, int]) -> None:
        row.context.previous = dist
        record = StepRecord.from_distribution(len(row.steps), step.token_start, step.token_end, step.text, dist)
        record.engine = cost
        row.steps.append(record)
        scorer = self.backend.scorer
        if scorer is not None:
            tokens = record.tokens_so_far
            prefix = Prefix(row.question, row.space, list(row.steps), row.signals.entropy[:tokens],
                            row.signals.confidence[:tokens])
            record.p_correct = round(scorer.p_correct(prefix), 4)
        self.emit(MonitorEvent("step", row=row.index, step=record))

    def _finish(self, row: _Row, reason: str) -> Trajectory:
        tail = row.decoder.decode(b"", final=True)
        if tail:
            self.emit(MonitorEvent("token", row=row.index, text=tail))
        backend = self.backend
        text = bytes(row.text).decode("utf-8", errors="replace")
        generation = {**asdict(self.settings), "batch_size": self.batch_size,
                      "engine": getattr(backend.client, "url", ""), "dtype": "engine", "prompt_tokens": len(row.prompt)}
        trajectory = finished_trajectory(
            model_id=backend.model_id, question=row.question, space=row.space,
            segmenter=segmenter_label(backend.segmenter, backend.step_regex), steps=row.steps,
            signals=row.signals, final_text=text, n_tokens=len(row.tokens), done=row.done, answered=row.answered,
            reason=reason, elapsed_s=time.perf_counter() - max(self.started, row.started), generation=generation,
        )
        self.emit(MonitorEvent("final", row=row.index, trajectory=trajectory))
        return trajectory


def _record_signals(signals: TokenSignals, top: TopLogprobs, logprob: float, vocab_size: int) -> None:
    """The drawn token's signals from its top-N list (module docstring: which are exact, which bounds)."""
    logprobs = sorted(top.logprobs.values(), reverse=True)
    probs = [math.exp(lp) for lp in logprobs]
    rest = max(0.0, 1.0 - sum(probs))
    entropy = -sum(p * lp for p, lp in zip(probs, logprobs, strict=True))
    if rest > 1e-12:
        entropy -= rest * math.log(rest)
    signals.entropy.append(entropy / math.log(2))
    signals.confidence.append(-sum(logprobs[:TOKEN_TOP_N]) / max(1, len(logprobs[:TOKEN_TOP_N])))
    unlisted = max(1, vocab_size - len(logprobs))
    mean_log = (sum(logprobs) + unlisted * math.log(max(rest, 1e-30) / unlisted)) / max(vocab_size, 1)
    signals.self_certainty.append(-mean_log - math.log(max(vocab_size, 1)))
    signals.logprob.append(logprob)


def engine_model_id(client: EngineClient) -> str:
    """The id an engine's model goes by here: its served name, or for a bare .gguf path (llama-server's
    default name) the file's stem, as `--model FILE.gguf` names it in process."""
    name = client.model_id
    return Path(name).stem if name.endswith(".gguf") else name
