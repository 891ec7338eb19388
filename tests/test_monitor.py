"""`SIAMonitor` inside `generate`, and the `Monitor` API around it.

The central property: probing never changes what is generated. Greedy output with the monitor (probes on) is
compared token for token with plain greedy output at the same batch size and dtype, on SmolLM2 (fast) and on
the default model (`default_model`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import DynamicCache, LogitsProcessorList

import sia_monitor.probing.monitor as monitor_module
from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.probing.hidden_states import HiddenStateSpec
from sia_monitor.probing.monitor import SIAMonitor
from sia_monitor.probing.stopping import RowStopper
from sia_monitor.tasks.answers import NUMERIC, AnswerSpace, parse_choices
from sia_monitor.tasks.benchmarks import Item, load_benchmark
from sia_monitor.trajectory import MonitorEvent, Trajectory

# Three questions of different lengths (so the batch is left-padded); on SmolLM2 their steps end at different
# tokens, and one row ends with EOS while the others run to the token limit.
SMOL_QUESTIONS = [
    "What is 2+3?",
    "Tom has 12 apples and gives away 5, then buys 7 more. How many apples does he have now?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
]
EASY_CHOICE_QUESTION = "What is 2 + 2?"
EASY_CHOICE = parse_choices("A) 3 B) 5 C) 4 D) 22")
ARC_EASY_ID = "Mercury_7239733"  # an ARC-Easy test item the default model answers correctly (D)
SVAMP_ID = "chal-4"  # a SVAMP item; the batch-2 identity test needs only its steps, not where it ends
# A short SVAMP item for the covered-mass test. Greedy traces differ between CPUs (bf16 kernels), so its budget
# leaves room for any of them: measured with batch 1 on AMD EPYC (AVX-512): eos at 96 tokens; with torch forced
# onto its AVX2 kernels (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2): 221; on the default kernels: 96.
SHORT_SVAMP_ID, SHORT_SVAMP_BUDGET = "chal-8", 512
# The 2+2 choice trace ends after 56-66 tokens on those kernel paths: 200 leaves 3x room.
CHOICE_BUDGET = 200


@dataclass
class GreedyRun:
    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...]
    monitor: SIAMonitor | None
    trajectories: list[Trajectory] = field(default_factory=list)
    probed_rows: list[tuple[list[int], int]] = field(default_factory=list)  # (rows probed, batch) per probe call


@contextmanager
def recording_probes() -> Iterator[list[tuple[list[int], int]]]:
    """Record which rows each probe call ran (a strict subset takes the scratch-copy path)."""
    calls: list[tuple[list[int], int]] = []
    original = monitor_module.run_probe

    def spy(model: Any, cache: Any, prefix_mask: torch.Tensor, trees: dict, pad: int, **kwargs: Any) -> Any:
        calls.append((sorted(trees), prefix_mask.shape[0]))
        return original(model, cache, prefix_mask, trees, pad, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(monitor_module, "run_probe", spy)
        yield calls


def greedy(
    monitor: Monitor,
    questions: list[str],
    spaces: list[AnswerSpace],
    max_new_tokens: int,
    attach: bool,
    begin: bool = True,
    scores: bool = False,
) -> GreedyRun:
    """Plain `model.generate`, greedy, with our own cache; with `attach` an SIAMonitor (probes on, recording
    hidden states as `collect` does) rides along."""
    model, tokenizer = monitor.model, monitor.tokenizer
    encoding, max_new = monitor.encode(questions, spaces, max_new_tokens)
    cache = DynamicCache(config=model.config)
    sia = None
    processors = LogitsProcessorList()
    if attach:
        sia = SIAMonitor(model, tokenizer, cache, spaces, questions, hidden_states=HiddenStateSpec())
        if begin:
            sia.begin(encoding["attention_mask"])
        processors.append(sia)
    with recording_probes() as calls:
        out = model.generate(
            **encoding, cache=cache, max_new_tokens=max_new, logits_processor=processors,
            do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True, output_scores=scores,
        )
    run = GreedyRun(out.sequences, out.scores or (), sia, probed_rows=calls)
    if sia is not None:
        run.trajectories = sia.finish(out.sequences)
    return run


def assert_same_tokens(plain: GreedyRun, monitored: GreedyRun) -> None:
    assert plain.sequences.shape == monitored.sequences.shape
    assert torch.equal(plain.sequences, monitored.sequences)


def assert_signal_lengths(trajectory: Trajectory) -> None:
    """One entry per generated token, plus the one for the EOS token when the row ended with it."""
    expected = trajectory.n_tokens + (1 if trajectory.finish_reason == "eos" else 0)
    assert len(trajectory.token_entropy) == expected
    assert len(trajectory.token_confidence) == expected
    assert len(trajectory.token_logprob) == expected
    assert len(trajectory.token_self_certainty) == expected
    assert all(x <= 0 for x in trajectory.token_logprob) and all(x >= -1e-4 for x in trajectory.token_self_certainty)


def steps_summary(trajectory: Trajectory) -> list[tuple[int, float, float]]:
    return [(s.token_end, s.entropy_bits, s.covered) for s in trajectory.steps]


# -- SmolLM2: token identity and what the monitor records -----------------------------------------------------


@pytest.fixture(scope="module")
def smol_batch3(smol: Monitor) -> tuple[GreedyRun, GreedyRun]:
    spaces = [NUMERIC] * 3
    plain = greedy(smol, SMOL_QUESTIONS, spaces, 100, attach=False)
    monitored = greedy(smol, SMOL_QUESTIONS, spaces, 100, attach=True, scores=True)
    return plain, monitored


def test_probe_does_not_change_tokens_batch1(smol: Monitor) -> None:
    question = [SMOL_QUESTIONS[1]]
    plain = greedy(smol, question, [NUMERIC], 100, attach=False)
    # No begin(): the monitor infers the prompt from the first call, as in the docstring example.
    monitored = greedy(smol, question, [NUMERIC], 100, attach=True, begin=False)
    assert_same_tokens(plain, monitored)
    assert monitored.monitor is not None and monitored.monitor.probe_calls >= 2
    assert all(rows == [0] and batch == 1 for rows, batch in monitored.probed_rows)  # the crop-back path
    (trajectory,) = monitored.trajectories
    assert len(trajectory.steps) == monitored.monitor.probe_calls
    assert trajectory.finish_reason == "eos"
    assert_signal_lengths(trajectory)
    generated = plain.sequences[0, smol.encode(question, [NUMERIC], 100)[0]["input_ids"].shape[1]:].tolist()
    assert generated[trajectory.n_tokens] == smol.tokenizer.eos_token_id  # n_tokens excludes the EOS
    assert trajectory.final_text == smol.tokenizer.decode(generated[: trajectory.n_tokens])


def test_probe_does_not_change_tokens_left_padded_batch3(
    smol: Monitor, smol_batch3: tuple[GreedyRun, GreedyRun]
) -> None:
    plain, monitored = smol_batch3
    encoding, _ = smol.encode(SMOL_QUESTIONS, [NUMERIC] * 3, 100)
    assert (encoding["attention_mask"] == 0).any()  # really left-padded
    assert_same_tokens(plain, monitored)


def test_probes_ran_in_several_rows_at_different_tokens(smol_batch3: tuple[GreedyRun, GreedyRun]) -> None:
    _, monitored = smol_batch3
    assert monitored.monitor is not None and monitored.monitor.probe_calls > 0
    assert len(monitored.probed_rows) == monitored.monitor.probe_calls
    rows_with_steps = [i for i, t in enumerate(monitored.trajectories) if t.steps]
    assert len(rows_with_steps) >= 2
    ends = [{s.token_end for s in monitored.trajectories[i].steps} for i in rows_with_steps]
    assert any(a != b for a in ends for b in ends)
    # Rows closed steps at different times, so probes ran on a subset of the batch (the scratch-copy path).
    assert any(len(rows) < batch for rows, batch in monitored.probed_rows)
    assert sum(len(rows) for rows, _ in monitored.probed_rows) == sum(len(t.steps) for t in monitored.trajectories)
    for trajectory in monitored.trajectories:
        for index, step in enumerate(trajectory.steps):
            assert step.index == index and 0 <= step.token_start < step.token_end <= trajectory.n_tokens
            assert step.tokens_so_far == step.token_end and step.text.strip() == step.text and step.text
            assert 0.0 <= step.entropy_bits and 0.0 < step.covered <= 1.0
            assert sum(p for _, p in step.top) <= 1.0 + 1e-3


def test_token_signals_match_the_scores_generate_used(smol_batch3: tuple[GreedyRun, GreedyRun]) -> None:
    _, monitored = smol_batch3
    reasons = {t.finish_reason for t in monitored.trajectories}
    assert reasons == {"eos", "length"}  # both branches of the length rule are exercised
    for row, trajectory in enumerate(monitored.trajectories):
        assert_signal_lengths(trajectory)
        for i, (entropy, confidence) in enumerate(zip(trajectory.token_entropy, trajectory.token_confidence)):
            log_probs = monitored.scores[i][row].float().log_softmax(-1)
            expected_entropy = float(-(log_probs.exp() * log_probs).nan_to_num().sum()) / math.log(2)
            assert entropy == pytest.approx(expected_entropy, abs=1e-3)
            assert confidence == pytest.approx(float(-log_probs.topk(20).values.mean()), abs=1e-3)
            # the drawn token's log-probability (CISC) and the self-certainty (KL from uniform), same scores
            token = int(monitored.sequences[row, -len(monitored.scores) + i])
            assert trajectory.token_logprob[i] == pytest.approx(float(log_probs[token]), abs=1e-3)
            uniform_kl = float(-log_probs.mean()) - math.log(log_probs.shape[-1])
            assert trajectory.token_self_certainty[i] == pytest.approx(uniform_kl, abs=1e-3)


def test_whole_batch_probe_of_several_rows(smol: Monitor) -> None:
    """Two identical rows close every step together: the probe appends to the live cache and crops it back."""
    questions = [SMOL_QUESTIONS[1]] * 2
    plain = greedy(smol, questions, [NUMERIC] * 2, 70, attach=False)
    monitored = greedy(smol, questions, [NUMERIC] * 2, 70, attach=True)
    assert_same_tokens(plain, monitored)
    assert monitored.probed_rows and all(rows == [0, 1] and batch == 2 for rows, batch in monitored.probed_rows)


def test_begin_mask_is_kept(smol: Monitor) -> None:
    """An explicit prompt mask from `begin` is used, not one re-inferred from pad tokens at the first call."""
    tokenizer = smol.tokenizer
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad, pad, 1, 5, 6]])
    mask = torch.tensor([[0, 1, 1, 1, 1]])  # the second token is real although it has the pad id
    sia = SIAMonitor(smol.model, tokenizer, DynamicCache(config=smol.model.config), NUMERIC, ["What is 1+1?"])
    sia.begin(mask)
    scores = torch.zeros((1, smol.model.config.vocab_size))
    assert sia(ids, scores) is scores
    assert sia.prompt_mask is not None and torch.equal(sia.prompt_mask, mask)
    assert len(sia.rows[0].token_entropy) == 1 and not sia.rows[0].tokens


# -- Monitor.generate / stream ---------------------------------------------------------------------------------


def test_stream_event_order_and_text(smol: Monitor) -> None:
    events = list(smol.stream(SMOL_QUESTIONS[1], NUMERIC, GenerationSettings(max_new_tokens=80)))
    kinds = [e.kind for e in events]
    assert kinds[0] == "token" and kinds[-1] == "final" and kinds.count("final") == 1
    assert set(kinds) == {"token", "step", "final"}
    final = events[-1].trajectory
    assert final is not None
    tokens_so_far = 0
    steps = []
    for event in events[:-1]:
        if event.kind == "token":
            tokens_so_far += 1
        else:
            assert event.kind == "step" and event.step is not None
            assert event.step.token_end == tokens_so_far  # emitted right after the token that closed it
            steps.append(event.step)
    assert steps == final.steps
    assert "".join(e.text for e in events if e.kind == "token") == final.final_text
    assert tokens_so_far == final.n_tokens
    assert_signal_lengths(final)
    assert final.generation["batch_size"] == 1 and final.generation["max_new_tokens"] == 80


def test_stream_cancel_stops_quickly(smol: Monitor) -> None:
    cancel = threading.Event()
    cancelled_at = None
    seen = 0
    final = None
    for event in smol.stream(SMOL_QUESTIONS[2], NUMERIC, GenerationSettings(max_new_tokens=400), cancel=cancel):
        if event.kind == "token":
            seen += 1
            if seen == 5:
                cancel.set()
                cancelled_at = time.perf_counter()
        if event.kind == "final":
            final = event.trajectory
    assert cancelled_at is not None and final is not None
    assert time.perf_counter() - cancelled_at < 10
    assert final.finish_reason == "cancelled"
    assert 5 <= final.n_tokens <= 25, final.n_tokens
    assert_signal_lengths(final)


def test_closing_the_stream_stops_the_worker(smol: Monitor) -> None:
    stream = smol.stream(SMOL_QUESTIONS[2], NUMERIC, GenerationSettings(max_new_tokens=400))
    for count, _ in enumerate(stream):
        if count == 3:
            break
    started = time.perf_counter()
    stream.close()  # sets the cancel event and joins the worker
    assert time.perf_counter() - started < 10
    assert not any(t.name == "sia-monitor-generate" and t.is_alive() for t in threading.enumerate())


def test_row_stopper_stops_one_row(smol: Monitor) -> None:
    questions = SMOL_QUESTIONS[:2]
    settings = GenerationSettings(max_new_tokens=80)
    reference = smol.generate(questions, NUMERIC, settings, probe=False)
    stopper = RowStopper()
    first_steps: list[MonitorEvent] = []

    def stop_row_0_after_its_first_step(event: MonitorEvent) -> None:
        if event.kind == "step" and event.row == 0 and not first_steps:
            first_steps.append(event)
            stopper.stop(0)

    stopped, other = smol.generate(questions, NUMERIC, settings, on_event=stop_row_0_after_its_first_step,
                                   row_stopper=stopper)
    assert first_steps and stopper.stopped == {0}
    assert stopped.finish_reason == "stopped"
    # The step closed at a token that the monitor saw in one call; generate appended one more token in that
    # iteration before the stopper ended the row. Nothing after that (the padding) belongs to the row.
    step = first_steps[0].step
    assert step is not None and stopped.n_tokens == step.token_end + 1
    assert reference[0].final_text.startswith(stopped.final_text) and len(stopped.final_text) > 0
    assert len(stopped.steps) == 1
    assert_signal_lengths(stopped)
    assert other.finish_reason in ("eos", "length") and other.n_tokens > stopped.n_tokens
    assert other.final_text == reference[1].final_text and other.finish_reason == reference[1].finish_reason
    assert_signal_lengths(other)


def test_generate_probe_off_records_signals_only(smol: Monitor) -> None:
    (trajectory,) = smol.generate(SMOL_QUESTIONS[0], NUMERIC, GenerationSettings(max_new_tokens=30), probe=False)
    assert trajectory.steps == [] and trajectory.n_tokens == 30 and trajectory.finish_reason == "length"
    assert_signal_lengths(trajectory)


# -- the default model ----------------------------------------------------------------------------------------


def pick(items: list[Item], item_id: str) -> Item:
    (item,) = [i for i in items if i.item_id == item_id]
    return item


@pytest.fixture(scope="module")
def qwen_batch1(qwen: Monitor) -> tuple[GreedyRun, GreedyRun]:
    args = ([EASY_CHOICE_QUESTION], [EASY_CHOICE], CHOICE_BUDGET)
    return greedy(qwen, *args, attach=False), greedy(qwen, *args, attach=True)


@pytest.fixture(scope="module")
def qwen_batch2(qwen: Monitor, data_dir: Path) -> tuple[list[Item], GreedyRun, GreedyRun]:
    items = [pick(load_benchmark("arc-easy", data_dir, limit=10), ARC_EASY_ID),
             pick(load_benchmark("svamp", data_dir, limit=10), SVAMP_ID)]
    args = ([i.question for i in items], [i.space for i in items], 120)
    return items, greedy(qwen, *args, attach=False), greedy(qwen, *args, attach=True)


@pytest.mark.default_model
def test_default_model_token_identity_batch1(qwen_batch1: tuple[GreedyRun, GreedyRun]) -> None:
    plain, monitored = qwen_batch1
    assert_same_tokens(plain, monitored)
    assert monitored.monitor is not None and monitored.monitor.probe_calls >= 2


@pytest.mark.default_model
def test_default_model_token_identity_left_padded_batch2(
    qwen: Monitor, qwen_batch2: tuple[list[Item], GreedyRun, GreedyRun]
) -> None:
    items, plain, monitored = qwen_batch2
    encoding, _ = qwen.encode([i.question for i in items], [i.space for i in items], 120)
    assert (encoding["attention_mask"] == 0).any()
    assert_same_tokens(plain, monitored)
    assert all(t.steps for t in monitored.trajectories)
    assert any(len(rows) < batch for rows, batch in monitored.probed_rows)
    for trajectory in monitored.trajectories:
        assert_signal_lengths(trajectory)
        # hidden states at the answer slot: Qwen2.5-0.5B has 24 layers, so the middle, 3/4 and last
        for step in trajectory.steps:
            assert step.hidden is not None and step.hidden.layers == [12, 18, 24] and step.hidden.dims == 64
            assert all(math.isfinite(x) for row in step.hidden.values() for x in row)


@pytest.mark.default_model
def test_default_model_choice_commits(qwen_batch1: tuple[GreedyRun, GreedyRun]) -> None:
    (trajectory,) = qwen_batch1[1].trajectories
    print("choice (2+2) steps:", steps_summary(trajectory), trajectory.parsed_answer)
    # 2 + 2 = 4 is option C on every kernel path tried; the way there (which labels rise first) is not.
    assert trajectory.finish_reason == "eos" and trajectory.parsed_answer == "C"
    last = trajectory.steps[-1]
    assert last.top[0][0] == "C"
    assert last.entropy_bits < 0.5
    assert last.covered >= 0.9


@pytest.mark.default_model
def test_default_model_arc_easy_row(qwen_batch2: tuple[list[Item], GreedyRun, GreedyRun]) -> None:
    items, _, monitored = qwen_batch2
    arc = monitored.trajectories[0]
    print("arc-easy steps (batch 2):", steps_summary(arc), arc.parsed_answer, arc.finish_reason, arc.n_tokens)
    assert arc.answer_space == items[0].space and len(arc.steps) >= 2
    assert all(set(dict(s.top)) <= set(items[0].space.labels) for s in arc.steps)
    assert all(s.covered >= 0.9 for s in arc.steps)  # "The answer is (" puts nearly all mass on the labels


@pytest.mark.default_model
def test_default_model_svamp_covered_mass(qwen: Monitor, data_dir: Path) -> None:
    """On a trace that ends, the numeric candidates hold the model's mass, and the entropy has fallen to near
    zero on the answer the model then writes (it has committed). Whether that answer is right depends on the
    CPU's kernels (another path makes other traces), so correctness is not asserted."""
    item = pick(load_benchmark("svamp", data_dir, limit=10), SHORT_SVAMP_ID)
    (trajectory,) = qwen.generate(item.question, item.space, GenerationSettings(max_new_tokens=SHORT_SVAMP_BUDGET))
    print("svamp steps:", steps_summary(trajectory), trajectory.parsed_answer, trajectory.finish_reason,
          trajectory.n_tokens)
    assert trajectory.finish_reason == "eos" and trajectory.parsed_answer is not None
    assert_signal_lengths(trajectory)
    last = trajectory.steps[-1]
    assert last.covered > 0.5
    assert all(0.0 < s.covered <= 1.0 for s in trajectory.steps)
    assert last.top[0][0] == trajectory.parsed_answer and last.entropy_bits < 0.5
    assert last.entropy_bits < max(s.entropy_bits for s in trajectory.steps)
