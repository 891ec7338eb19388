"""The decoding loop that frees finished rows: `generate`'s tokens where the forward passes are `generate`'s,
finished rows really leave the batch (counted at the model's input), and the monitor still never changes a
token. Exact comparisons run in one process on one machine; across machines only the properties hold."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, StoppingCriteriaList

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.decode import decode
from sia_monitor.backends.in_process import Monitor
from sia_monitor.errors import SIAError
from sia_monitor.models import FIXTURE_MODEL, load_model
from sia_monitor.probing.monitor import SIAMonitor
from sia_monitor.probing.stopping import RowStopper
from sia_monitor.tasks.answers import NUMERIC

QUESTIONS = [
    "What is 2+3?",
    "Tom has 12 apples and gives away 5, then buys 7 more. How many apples does he have now?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
]


def eos_ids(monitor: Monitor) -> list[int]:
    config = monitor.model.generation_config.eos_token_id
    return [monitor.tokenizer.eos_token_id, *([config] if isinstance(config, int) else list(config or []))]


def batch_sizes(model: torch.nn.Module) -> tuple[list[int], Any]:
    """Record the batch size of every forward the model runs."""
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]),
                                             with_kwargs=True)
    return sizes, handle


def run_decode(loaded: Monitor, questions: list[str], max_new: int, monitor: SIAMonitor | None = None,
               **kwargs: Any) -> tuple[torch.Tensor, list[list[int]]]:
    encoding, _ = loaded.encode(questions, [NUMERIC] * len(questions), max_new)
    cache = monitor.cache if monitor is not None else DynamicCache(config=loaded.model.config)
    if monitor is not None:
        monitor.begin(encoding["attention_mask"])
    changes: list[list[int]] = []

    def changed(rows: list[int]) -> None:
        changes.append(rows)
        if monitor is not None:
            monitor.set_cache_rows(rows)

    out = decode(loaded.model, encoding["input_ids"], encoding["attention_mask"], cache,
                 GenerationSettings(max_new_tokens=max_new), loaded.tokenizer.pad_token_id, eos_ids(loaded),
                 processors=LogitsProcessorList([monitor] if monitor is not None else []),
                 on_rows_changed=changed, **kwargs)
    return out, changes


@pytest.mark.parametrize("count", [1, 3])
def test_greedy_tokens_are_generates(smol: Monitor, count: int) -> None:
    """Same process, same machine: bit-identical to `model.generate` (SmolLM2, bf16, left-padded batch of 3)."""
    questions = QUESTIONS[1:2] if count == 1 else QUESTIONS
    encoding, _ = smol.encode(questions, [NUMERIC] * count, 100)
    reference = smol.model.generate(**encoding, cache=DynamicCache(config=smol.model.config), max_new_tokens=100,
                                    do_sample=False, temperature=None, top_p=None, top_k=None,
                                    pad_token_id=smol.tokenizer.pad_token_id)
    out, _ = run_decode(smol, questions, 100)
    assert out.shape == reference.shape and torch.equal(out, reference)


@pytest.mark.default_model
def test_default_model_greedy_tokens_are_generates(qwen: Monitor) -> None:
    encoding, _ = qwen.encode(QUESTIONS[:1], [NUMERIC], 48)
    reference = qwen.model.generate(**encoding, cache=DynamicCache(config=qwen.model.config), max_new_tokens=48,
                                    do_sample=False, temperature=None, top_p=None, top_k=None,
                                    pad_token_id=qwen.tokenizer.pad_token_id)
    out, _ = run_decode(qwen, QUESTIONS[:1], 48)
    assert torch.equal(out, reference)


def test_finished_rows_leave_the_batch(smol: Monitor) -> None:
    """A row that ends (on SmolLM2 one of the three does, well within 100 tokens) leaves the batch: from then on
    the model runs on the rows left, and the ended row is padded after its EOS, as `generate` pads it."""
    sizes, handle = batch_sizes(smol.model)
    try:
        out, changes = run_decode(smol, QUESTIONS, 100)
    finally:
        handle.remove()
    assert changes and len(changes[0]) == 2
    (ended_row,) = {0, 1, 2} - set(changes[0])
    assert sizes[0] == 3 and sizes[-1] < 3 and sizes == sorted(sizes, reverse=True)
    prompt = smol.encode(QUESTIONS, [NUMERIC] * 3, 100)[0]["input_ids"].shape[1]
    assert len(sizes) == out.shape[1] - prompt  # the prefill, then one forward per token but the last
    ended = (out[ended_row, prompt:] == smol.tokenizer.eos_token_id).nonzero()
    assert ended.numel() and bool((out[ended_row, prompt + int(ended[0]) + 1:] == smol.tokenizer.pad_token_id).all())


def test_a_stopped_row_stops_costing_compute(smol: Monitor) -> None:
    """What a vote's kill needs: a row handed to the RowStopper leaves the batch at the next token."""
    stopper = RowStopper()
    stopper.stop(1)
    sizes, handle = batch_sizes(smol.model)
    try:
        out, changes = run_decode(smol, QUESTIONS, 40, stopping=StoppingCriteriaList([stopper]))
    finally:
        handle.remove()
    assert changes[0] == [0, 2] and sizes[:2] == [3, 2]
    assert bool((out[1, -39:] == smol.tokenizer.pad_token_id).all())


def test_the_monitor_changes_no_token_while_rows_leave(smol: Monitor) -> None:
    """Probing addresses the cache rows that remain after others left; tokens equal the loop without it."""
    plain, _ = run_decode(smol, QUESTIONS, 140)
    cache = DynamicCache(config=smol.model.config)
    monitor = SIAMonitor(smol.model, smol.tokenizer, cache, NUMERIC, QUESTIONS)
    monitored, changes = run_decode(smol, QUESTIONS, 140, monitor=monitor)
    assert changes and torch.equal(plain, monitored)
    trajectories = monitor.finish(monitored)
    (ended_row,) = {0, 1, 2} - set(changes[0])
    first_end = trajectories[ended_row].n_tokens
    late = [s for t in trajectories for s in t.steps if s.token_end > first_end + 1]
    assert late, "some probes ran after a row had left the batch"


def test_monitor_generate_frees_rows_and_keeps_its_records(smol: Monitor) -> None:
    sizes, handle = batch_sizes(smol.model)
    try:
        trajectories = smol.generate(QUESTIONS, NUMERIC, GenerationSettings(max_new_tokens=100))
    finally:
        handle.remove()
    assert min(sizes) < 3
    assert "eos" in {t.finish_reason for t in trajectories} and all(t.steps for t in trajectories)


def test_sampling_is_reproducible_with_a_seed(smol: Monitor) -> None:
    settings = GenerationSettings(max_new_tokens=40, temperature=0.8, seed=3)
    first = [t.final_text for t in smol.generate(QUESTIONS[:2], NUMERIC, settings)]
    again = [t.final_text for t in smol.generate(QUESTIONS[:2], NUMERIC, settings)]
    other = [t.final_text for t in smol.generate(QUESTIONS[:2], NUMERIC, GenerationSettings(40, 0.8, seed=4))]
    assert first == again and first != other


class Capture(LogitsProcessor):
    """Keeps every row's scores and token ids at every call (what the vote's new rows are checked with)."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.calls.append((input_ids.clone(), scores.clone()))
        return scores


@pytest.fixture(scope="module")
def smol_f32() -> Monitor:
    return Monitor(load_model(FIXTURE_MODEL, dtype="float32"))


def test_a_row_started_in_a_freed_row_decodes_as_if_alone(smol_f32: Monitor) -> None:
    """Row 1 is stopped at once; a third row starts in its place while row 0 runs on, its prompt's cache
    left-padded to row 0's length. In float32 every score either row is given equals an uncached forward over
    that row's own tokens (to 1e-3): the padded cache and the positions are right."""
    model, tokenizer = smol_f32.model, smol_f32.tokenizer
    encoding, _ = smol_f32.encode(QUESTIONS[:1] * 2, [NUMERIC] * 2, 16)
    prompt = encoding["input_ids"].shape[1]
    stopper, capture, added = RowStopper(), Capture(), []
    stopper.stop(1)
    started = [2]

    def schedule(running: int) -> int:
        if running < 2 and started[0] < 3:
            started[0] += 1
            return 1
        return 0

    sizes, handle = batch_sizes(model)
    try:
        out = decode(model, encoding["input_ids"], encoding["attention_mask"], DynamicCache(config=model.config),
                     GenerationSettings(max_new_tokens=16), tokenizer.pad_token_id, eos_ids(smol_f32),
                     processors=LogitsProcessorList([capture]), stopping=StoppingCriteriaList([stopper]),
                     schedule=schedule, on_rows_added=added.append)
    finally:
        handle.remove()
    assert out.shape[0] == 3 and sizes[0] == 2 and max(sizes[1:]) == 2  # the prefill, then never more than 2
    assert len(added) == 1 and added[0].shape == (1, prompt + 1) and int(added[0][0, 0]) == 0
    assert torch.equal(out[2, 1:prompt + 1], encoding["input_ids"][0])  # joined after one token: one pad
    padding = int((added[0][0] == 0).sum())
    checked = 0
    for input_ids, scores in capture.calls:
        for row, start in ((0, 0), (2, padding)):
            if input_ids.shape[0] <= row or not scores[row].any():
                continue  # not started yet, or ended (an ended row's scores are zeros)
            with torch.inference_mode():
                reference = model(input_ids=input_ids[row, start:][None]).logits[0, -1].float()
            torch.testing.assert_close(scores[row], reference, rtol=1e-3, atol=1e-3)
            checked += 1
    assert checked >= 20


def test_each_row_keeps_its_own_budget(smol: Monitor) -> None:
    """Rows with different budgets share a batch; each ends at its own (finish_reason length), and a row's
    tokens are the ones it draws in a batch with the others."""
    questions = ["What is 7 + 8? Think step by step.", "Name three colours, one per line."]
    settings = GenerationSettings(max_new_tokens=20)
    short, long = smol.generate(questions, NUMERIC, settings, budgets=[5, 20])
    assert short.n_tokens == 5 and short.finish_reason == "length"
    assert 5 < long.n_tokens <= 20
    with pytest.raises(SIAError, match="budgets"):
        smol.generate(questions, NUMERIC, settings, budgets=[5, 21])


def test_new_rows_can_start_when_every_running_row_ended_on_the_same_token(smol_f32: Monitor) -> None:
    """Both rows reach their budget on the same token, and the schedule then starts a third row: it must decode
    as a row of its own (a live vote hit this when every sample of a round ended at once)."""
    model, tokenizer = smol_f32.model, smol_f32.tokenizer
    encoding, _ = smol_f32.encode(QUESTIONS[:1] * 2, [NUMERIC] * 2, 16)
    prompt = encoding["input_ids"].shape[1]
    started = [2]

    def schedule(running: int) -> int:
        if running == 0 and started[0] < 3:
            started[0] += 1
            return 1
        return 0

    out = decode(model, encoding["input_ids"], encoding["attention_mask"], DynamicCache(config=model.config),
                 GenerationSettings(max_new_tokens=6), tokenizer.pad_token_id, [], budgets=[3, 3],
                 schedule=schedule)
    assert out.shape[0] == 3
    assert torch.equal(out[2, 3:3 + prompt], encoding["input_ids"][0])  # joined after 3 tokens: three pads
    alone = decode(model, encoding["input_ids"][:1], encoding["attention_mask"][:1],
                   DynamicCache(config=model.config), GenerationSettings(max_new_tokens=6), tokenizer.pad_token_id, [])
    assert out.shape[1] == prompt + 3 + 6  # the new row drew its own 6 tokens
    # its first token comes from the prompt's own prefill, the same forward as a lone row's (later tokens run
    # through a left-padded cache, whose float sums may round differently on another CPU)
    assert out[2, 3 + prompt] == alone[0, prompt]
