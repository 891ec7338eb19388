"""Replaying saved trajectories as the events a live run would have sent, at the recorded pace or faster.

A record keeps the final text, the steps (with their token spans) and per-token signals, not the token
ids, so the token events are rebuilt: the text between two step boundaries is cut into as many pieces as
that step had tokens (at word, digit and symbol edges, roughly how a BPE tokenizer cuts it), so token counts,
step positions and tokens/s are the recorded ones. Each token takes `elapsed_s / n_tokens` seconds divided
by `speed` (0 = no waiting). Steps without a P(correct) are scored by a calibrator when one is given (the
number the live monitor would have shown); otherwise the replay carries the entropy only.

`ReplayBackend` is the replay side of `guarded.GuardedRun`: the guardrail acts on a replay as on a live run.
A stop cuts the trace where it is; a resample moves on to the next saved trace of the same question (as
`collect --samples` writes them), if any; an accept ends the trace with the last step's top answer (what the
probe found the model would answer there), since no model is loaded.

No torch here: a replay needs no model stack.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from sia_monitor.errors import SIAError
from sia_monitor.guardrail.guarded import ForcedAnswer, PauseGate
from sia_monitor.scoring import StepScorer, p_correct_curve
from sia_monitor.tasks.answers import parse_answer, same_answer, states_answer
from sia_monitor.tasks.prompts import probe_suffix
from sia_monitor.trajectory import MonitorEvent, Trajectory, TruncatedTrajectoryWarning, read_trajectory_file

_PIECE = re.compile(r"\s*[A-Za-z]+|\s*\d|\s*[^\sA-Za-z\d]|\s+")


def split_pieces(text: str, count: int) -> list[str]:
    """Cut `text` into exactly `count` pieces (some may be empty) that join back to `text`."""
    if count <= 0:
        return []
    pieces = _PIECE.findall(text)
    if "".join(pieces) != text:  # the pattern covers every character; this is a guard, not a branch we expect
        pieces = list(text)
    total = len(pieces)
    return ["".join(pieces[i * total // count:(i + 1) * total // count]) for i in range(count)]


def _step_bounds(trajectory: Trajectory) -> list[tuple[int, int]]:
    """(character end, token end) of every step in the final text, then of the whole text."""
    text, n_tokens = trajectory.final_text, trajectory.n_tokens
    bounds: list[tuple[int, int]] = []
    cursor = 0
    for step in trajectory.steps:
        position = text.find(step.text, cursor) if step.text else -1
        if position < 0:  # not found verbatim: place it in proportion to its tokens
            end = max(cursor, len(text) * step.token_end // max(n_tokens, 1))
        else:
            end = position + len(step.text)
            gap = re.match(r"\s*", text[end:])
            newline = gap.group(0).rfind("\n") if gap else -1
            end += newline + 1
        bounds.append((min(end, len(text)), step.token_end))
        cursor = bounds[-1][0]
    bounds.append((len(text), n_tokens))
    return bounds


def replay_events(trajectory: Trajectory) -> list[MonitorEvent]:
    """The token and step events (and any recorded decisions) of a saved trajectory, in order, without the
    final event. Exactly `n_tokens` token events; each step follows the token that closed it."""
    events: list[MonitorEvent] = []
    decisions = sorted(trajectory.decisions, key=lambda d: int(d.get("tokens", 0) or 0))
    step_iter = iter(trajectory.steps)
    next_step = next(step_iter, None)
    start_char, start_token, carry = 0, 0, ""
    pieces: list[str] = []
    for end_char, end_token in _step_bounds(trajectory):
        segment = carry + trajectory.final_text[start_char:end_char]
        count = max(0, min(end_token, trajectory.n_tokens) - start_token)
        if count == 0:
            carry = segment
        else:
            pieces.extend(split_pieces(segment, count))
            carry = ""
            start_token += count
        start_char = max(start_char, end_char)
    if carry and pieces:
        pieces[-1] += carry
    for index, piece in enumerate(pieces, start=1):
        events.append(MonitorEvent("token", text=piece))
        while next_step is not None and next_step.token_end <= index:
            events.append(MonitorEvent("step", step=next_step))
            next_step = next(step_iter, None)
        while decisions and int(decisions[0].get("tokens", 0) or 0) <= index:
            events.append(MonitorEvent("decision", detail={**decisions.pop(0), "replayed": True}))
    while next_step is not None:  # steps past the last token (none in a consistent record)
        events.append(MonitorEvent("step", step=next_step))
        next_step = next(step_iter, None)
    events.extend(MonitorEvent("decision", detail={**d, "replayed": True}) for d in decisions)
    return events


def score_steps(trajectory: Trajectory, scorer: StepScorer | None) -> Trajectory:
    """A copy whose steps all carry P(correct): kept where recorded, else from `scorer` (when given)."""
    if scorer is None or all(s.p_correct is not None for s in trajectory.steps):
        return replace(trajectory, steps=list(trajectory.steps), decisions=list(trajectory.decisions))
    curve = p_correct_curve(scorer, trajectory)
    steps = [s if s.p_correct is not None else replace(s, p_correct=round(p, 4))
             for s, p in zip(trajectory.steps, curve, strict=True)]
    return replace(trajectory, steps=steps, decisions=list(trajectory.decisions))


def truncate(trajectory: Trajectory, tokens: int, steps: int, text: str, reason: str) -> Trajectory:
    """The trajectory as it stood after `tokens` tokens and `steps` steps (what a cut-short run saves)."""
    per_token = trajectory.elapsed_s / max(trajectory.n_tokens, 1)
    # cut short before its answer line, a trace has no answer (see SIAMonitor.finish)
    stated = any(states_answer(line) for line in text.splitlines())
    parsed = parse_answer(text, trajectory.answer_space) if stated else None
    return replace(
        trajectory,
        steps=list(trajectory.steps[:steps]),
        token_entropy=trajectory.token_entropy[:tokens],
        token_confidence=trajectory.token_confidence[:tokens],
        token_logprob=trajectory.token_logprob[:tokens],
        token_self_certainty=trajectory.token_self_certainty[:tokens],
        final_text=text,
        parsed_answer=parsed,
        finish_reason=reason,
        n_tokens=tokens,
        elapsed_s=round(tokens * per_token, 3),
        correct=same_answer(parsed, trajectory.gold, trajectory.answer_space) if trajectory.gold is not None else None,
        decisions=[d for d in trajectory.decisions if int(d.get("tokens", 0) or 0) <= tokens],
        generation={**trajectory.generation, "replayed_from_tokens": trajectory.n_tokens},
    )


def load_replay(path: str | Path, item: int = 0) -> list[Trajectory]:
    """Record `item` of a trajectory file, then the later records of the same question (its resamples).

    A file cut off inside a record (an interrupted copy or writer) still replays its complete records, with
    one `TruncatedTrajectoryWarning` that says so and how many there were: a replay that quietly ends
    early would look like a file that was whole. A file that is not a trajectory file at all (not gzip, a
    line that is not JSON or not one of our records) is an SIAError that says which.
    """
    read = read_trajectory_file(path)
    records = read.records
    if read.truncated is not None:
        if not records:
            raise SIAError(f"Trajectory file {path} is truncated ({read.truncated}) before its first complete record.")
        warnings.warn(f"Trajectory file {path} is truncated ({read.truncated}): replaying the {len(records)} "
                      f"complete record{'s' if len(records) != 1 else ''} before the cut.",
                      TruncatedTrajectoryWarning, stacklevel=2)
    if not records:
        raise SIAError(f"Trajectory file {path} holds no trajectories.")
    if not 0 <= item < len(records):
        raise SIAError(f"Trajectory file {path} has {len(records)} records; there is no record {item}.",
                       f"Pass --item between 0 and {len(records) - 1}.")
    first = records[item]
    return [first] + [r for r in records[item + 1:] if r.question == first.question]


class ReplayBackend:
    """Attempt k replays the k-th trajectory given (see `load_replay`); `speed` 1 = recorded pace, 0 = no wait.

    `scorer` fills P(correct) for steps saved without it (e.g. `calibrator_for(model_id, space)`).
    """

    def __init__(self, trajectories: Sequence[Trajectory], speed: float = 1.0, scorer: StepScorer | None = None) -> None:
        if not trajectories:
            raise SIAError("Nothing to replay: no trajectories were given.")
        if speed < 0:
            raise SIAError("--speed cannot be negative.", "Use 1 for the recorded pace, 4 for 4x, 0 for no waiting.")
        self.trajectories = list(trajectories)
        self.speed = speed
        self.scorer = scorer
        self.model_id = self.trajectories[0].model_id
        self.question = self.trajectories[0].question
        self.max_attempts: int | None = len(self.trajectories)
        self._scored: dict[int, Trajectory] = {}

    @property
    def calibrated(self) -> bool:
        """Whether the replayed steps carry P(correct) (recorded, or from the scorer)."""
        first = self.trajectories[0]
        return self.scorer is not None or bool(first.steps and all(s.p_correct is not None for s in first.steps))

    def trajectory(self, attempt: int) -> Trajectory:
        if attempt not in self._scored:
            self._scored[attempt] = score_steps(self.trajectories[attempt], self.scorer)
        return self._scored[attempt]

    def token_seconds(self, attempt: int) -> float:
        """Recorded seconds per token of that attempt (before the speed factor)."""
        trajectory = self.trajectories[attempt]
        return trajectory.elapsed_s / trajectory.n_tokens if trajectory.n_tokens else 0.0

    def run(self, attempt: int, cancel: threading.Event, gate: PauseGate) -> Iterator[MonitorEvent]:
        trajectory = self.trajectory(attempt)
        delay = self.token_seconds(attempt) / self.speed if self.speed > 0 else 0.0
        tokens, steps, text = 0, 0, []
        for event in replay_events(trajectory):
            gate.wait(cancel)
            if cancel.is_set() or (event.kind == "token" and delay and cancel.wait(delay)):
                break
            if event.kind == "token":
                tokens += 1
                text.append(event.text)
            elif event.kind == "step":
                steps += 1
            yield event
        if cancel.is_set() and tokens < trajectory.n_tokens:
            final = truncate(trajectory, tokens, steps, "".join(text), "cancelled")
        else:
            final = replace(trajectory, steps=list(trajectory.steps), decisions=list(trajectory.decisions),
                            generation=dict(trajectory.generation))
        yield MonitorEvent("final", trajectory=final, detail={"recorded_tokens": trajectory.n_tokens})

    def force_answer(self, trajectory: Trajectory) -> ForcedAnswer:
        last = trajectory.steps[-1] if trajectory.steps else None
        answer = last.top[0][0] if last is not None and last.top else ""
        close = ")" if trajectory.answer_space.kind == "choice" and answer else ""
        line = probe_suffix(trajectory.answer_space) + answer + close
        return ForcedAnswer(line, parse_answer(line, trajectory.answer_space), 0, "probe")

    def tokens_saved(self, trajectory: Trajectory, final: MonitorEvent) -> dict[str, int]:
        recorded = int(final.detail.get("recorded_tokens", trajectory.n_tokens))
        return {"tokens_saved": max(0, recorded - trajectory.n_tokens)}
