"""Probe saved trajectories again on their own tokens: the steps, per-token signals and hidden states that a live
run records, without generating again.

Why: a hidden-state calibrator needs steps that carry hidden states, and the traces that have none (collected
by a serving engine, or before schema 2) took hours to generate on a CPU, one forward per token. Their tokens
are saved (as text), and forcing them costs one forward over the trace and one per step: the record is the same generation,
probed again.

How it stays the live monitor's measurement: the same `SIAMonitor` that runs inside `generate` is called once
per token with that position's logits. The model runs over the whole trace once; each probe's attention mask
hides the cache past its step, so it sees exactly the tokens before it, as it does live (`probe.run_probe`).
What differs is arithmetic only: a long forward sums in another order than one-token decoding, so
entropies differ in the last digits (more where bf16 rounding flips a near-tie). The steps must close where the
saved ones did and the text must re-encode to the saved token count; a record that does not is skipped with
the reason, not guessed at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache

from sia_monitor.backends.base import Backend
from sia_monitor.backends.in_process import Monitor
from sia_monitor.collect import load_existing, record_key
from sia_monitor.errors import SIAError
from sia_monitor.probing.monitor import SIAMonitor, segmenter_from_label
from sia_monitor.trajectory import Trajectory, check_writable, read_trajectories, save_trajectories

REPROBEABLE = ("eos", "length")  # a row stopped or cancelled mid-trace ended for reasons the tokens don't show


class ReprobeMismatch(SIAError):
    """The saved record cannot be reproduced from its text: skipped, with the reason."""


@dataclass
class ReprobePlan:
    """The records of `source` still to probe again into `out`, and how many `out` already holds."""

    source: Path
    out: Path
    todo: list[Trajectory]
    done: int
    unreprobeable: int  # records that ended stopped or cancelled

    @property
    def total(self) -> int:
        return self.done + len(self.todo)


def plan_reprobe(source: Path, out: Path, model_id: str, limit: int | None = None) -> ReprobePlan:
    """Read `source` whole (refusing another model's traces: their tokens are not this tokenizer's) and list
    the records `out` does not hold yet."""
    if not source.exists():
        raise SIAError(f"{source} does not exist.")
    if source.resolve() == out.resolve():
        raise SIAError("--reprobe and --out are the same file.", "Write the reprobed trajectories to a new file.")
    records = list(read_trajectories(source))
    if limit is not None:
        records = records[:limit]
    others = {t.model_id for t in records} - {model_id}
    if others:
        raise SIAError(f"{source} holds trajectories of {', '.join(sorted(others))}, not {model_id}.",
                       "Pass the --model that generated them.")
    check_writable(out)
    done = {record_key(t) for t in load_existing(out, model_id)}
    reprobeable = [t for t in records if t.finish_reason in REPROBEABLE]
    todo = [t for t in reprobeable if record_key(t) not in done]
    return ReprobePlan(source, out, todo, done=len(reprobeable) - len(todo),
                       unreprobeable=len(records) - len(reprobeable))


def reprobe_trajectory(monitor: Monitor, record: Trajectory) -> Trajectory:
    """`record` probed again by `monitor` (its model, its hidden-state spec) on the record's own tokens."""
    started = time.perf_counter()
    tokenizer, model = monitor.tokenizer, monitor.model
    generated = list(tokenizer.encode(record.final_text, add_special_tokens=False))
    if len(generated) != record.n_tokens:
        raise ReprobeMismatch(f"its text re-encodes to {len(generated)} tokens, not the {record.n_tokens} generated")
    mode, regex = segmenter_from_label(record.segmenter)
    encoding, _ = monitor.encode([record.question], [record.answer_space], 1)
    prompt = encoding["input_ids"]
    cache = DynamicCache(config=model.config)
    sia = SIAMonitor(model, tokenizer, cache, record.answer_space, [record.question], segmenter=mode,
                     step_regex=regex, model_id=record.model_id, hidden_states=monitor.hidden_states)
    drawn = generated + ([_eos_id(tokenizer, sia.eos_token_ids)] if record.finish_reason == "eos" else [])
    ids = torch.cat([prompt, torch.tensor([drawn], dtype=torch.long)], dim=1)
    sia.begin(torch.ones_like(prompt), generation=dict(record.generation))
    with torch.inference_mode():  # the whole trace at once; each probe then masks the cache past its step
        logits = model(input_ids=ids[:, :-1], cache=cache, use_cache=True, logits_to_keep=len(drawn)).logits
    for call in range(len(drawn)):  # call j has seen the prompt and drawn[:j], and scores drawn[j]
        sia(ids[:, : prompt.shape[1] + call], logits[:, call].float())
    reprobed = sia.finish(ids, [record.finish_reason])[0]
    saved = [(s.token_start, s.token_end) for s in record.steps]
    if [(s.token_start, s.token_end) for s in reprobed.steps] != saved:
        raise ReprobeMismatch(f"its steps close at {[e for _, e in saved]} saved but at "
                              f"{[s.token_end for s in reprobed.steps]} now")
    if reprobed.final_text != record.final_text:
        raise ReprobeMismatch("its tokens decode to another text")
    reprobed.benchmark, reprobed.item_id, reprobed.gold = record.benchmark, record.item_id, record.gold
    reprobed.correct, reprobed.parsed_answer = record.correct, record.parsed_answer
    reprobed.elapsed_s, reprobed.decisions = record.elapsed_s, record.decisions
    reprobed.generation = {**record.generation,
                           "reprobe": {"dtype": str(model.dtype).removeprefix("torch."),
                                       "seconds": round(time.perf_counter() - started, 3)}}
    return reprobed


def _eos_id(tokenizer: object, eos_ids: set[int]) -> int:
    preferred = getattr(tokenizer, "eos_token_id", None)
    return preferred if preferred in eos_ids else min(eos_ids)


Progress = Callable[[int, int, int], None]  # (records in the output file, total, skipped this run)


def run_reprobe(monitor: Backend, plan: ReprobePlan, progress: Progress | None = None) -> list[str]:
    """Probe the plan's records, appending each to `plan.out` as it is done; return why each skipped one was."""
    if not isinstance(monitor, Monitor):
        raise SIAError("A reprobe runs the model in process (an engine gives no hidden states).", "Drop --engine.")
    done, skipped = plan.done, []
    if progress:
        progress(done, plan.total, 0)
    for record in plan.todo:
        try:
            save_trajectories(plan.out, [reprobe_trajectory(monitor, record)])
            done += 1
        except ReprobeMismatch as exc:
            skipped.append(f"{record.item_id or record.question[:40]!r}: {exc}")
        if progress:
            progress(done, plan.total, len(skipped))
    return skipped
