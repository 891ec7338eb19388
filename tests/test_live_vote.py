"""A live vote on the SmolLM2 fixture: samples run batched, kills free their rows, new samples start in them,
and every decision (kills, stop, answer, each ballot's cost) is what `vote.simulate` computes from the saved
samples: the live run and the offline harness are one rule on one clock."""

from __future__ import annotations

import json

import pytest

from calibrators import load_calibrator
from calibrators.artifact import shipped_calibrator_path
from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.errors import SIAError
from sia_monitor.guardrail.live_vote import LiveVote, VoteEvent, run_vote
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.guardrail.vote import VotePolicy, simulate
from sia_monitor.models import DEFAULT_MODEL
from sia_monitor.tasks.answers import NUMERIC

QUESTION = "Tom has 12 apples and gives away 5, then buys 7 more. How many apples does he have now?"
SETTINGS = GenerationSettings(max_new_tokens=80, temperature=0.9, seed=5)


@pytest.fixture(scope="module")
def scored(smol: Monitor) -> Monitor:
    """The fixture with a fitted calibrator giving every step a P(correct) (the default model's: only the
    mechanics are under test here, not its calibration on SmolLM2)."""
    path = shipped_calibrator_path(DEFAULT_MODEL, "numeric")
    assert path is not None
    return Monitor(smol.loaded, scorer=load_calibrator(path))


def batch_sizes(model):
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]),
                                             with_kwargs=True)
    return sizes, handle


@pytest.mark.parametrize("policy", [
    VotePolicy(samples=6, width=3, kill=GuardrailPolicy(min_steps=1, stop_below=0.6, patience=1), min_votes=2),
    VotePolicy(samples=5, width=2, kill=None, adaptive_stop=False),
    VotePolicy(samples=6, width=4, stop_confidence=0.7, min_votes=2),
])
def test_live_decisions_are_the_offline_harness_decisions(scored: Monitor, policy: VotePolicy) -> None:
    events: list[VoteEvent] = []
    sizes, handle = batch_sizes(scored.model)
    try:
        live = run_vote(scored, QUESTION, NUMERIC, policy, SETTINGS, on_event=events.append)
    finally:
        handle.remove()
    assert 1 <= len(live.samples) <= policy.samples and max(sizes[1:]) <= policy.width
    offline = simulate(live.samples, policy, NUMERIC)
    assert [(b.sample, b.status, b.answer, b.tokens, b.killed_after_steps) for b in live.ballots] == \
        [(b.sample, b.status, b.answer, b.tokens, b.killed_after_steps) for b in offline.ballots]
    assert (live.answer, live.confidence, live.stopped_early) == (offline.answer, offline.confidence,
                                                                  offline.stopped_early)
    assert [e.sample for e in events if e.kind == "started"] == list(range(len(live.samples)))
    assert events[-1].kind == "vote" and events[-1].final and events[-1].tally is live
    for ballot in live.ballots:
        sample = live.samples[ballot.sample]
        assert sample.generation["vote"]["status"] == ballot.status
        if ballot.status == "killed":
            assert sample.finish_reason == "stopped" and sample.decisions[-1]["kind"] == "vote-kill"


def test_kills_free_rows_for_new_samples(scored: Monitor) -> None:
    """Every sample is killed at its first probed step (one that reaches its answer line unprobed finishes):
    with 2 rows, 6 samples run 2 at a time, each started as one ends, and the batch never runs a killed row."""
    policy = VotePolicy(samples=6, width=2, kill=GuardrailPolicy(min_steps=1, stop_below=1.0, patience=1),
                        adaptive_stop=False)
    sizes, handle = batch_sizes(scored.model)
    try:
        vote = run_vote(scored, QUESTION, NUMERIC, policy, SETTINGS)
    finally:
        handle.remove()
    killed = [b for b in vote.ballots if b.status == "killed"]
    assert len(killed) >= 4 and all(b.killed_after_steps == 1 for b in killed)
    assert all(not vote.samples[b.sample].steps for b in vote.ballots if b.status == "done")
    assert len(vote.samples) == 6 and max(sizes) == 2
    assert sum(sizes[1:]) < sum(s.n_tokens for s in vote.samples) + 6  # one forward per live row per token
    assert vote.tokens == sum(b.tokens for b in vote.ballots) <= 6 * 80


def test_user_controls(scored: Monitor) -> None:
    """`stop()` ends the vote at the next token; the samples it cut are cancelled, not counted."""
    policy = VotePolicy(samples=4, width=2, kill=None, adaptive_stop=False)
    holder: list[LiveVote] = []

    def on_event(event: VoteEvent) -> None:
        if event.kind == "step" and event.sample == 0 and event.step is not None and event.step.index == 0:
            holder[0].kill(1)
            holder[0].stop()

    vote = LiveVote(scored, QUESTION, NUMERIC, policy, SETTINGS, on_event=on_event)
    holder.append(vote)
    result = vote.run()
    statuses = {b.sample: b.status for b in result.ballots}
    assert statuses[0] == "cancelled" and statuses[1] in ("killed", "cancelled") and len(result.samples) == 2
    assert result.stopped_early and result.answer is None


def test_a_vote_needs_sampling(smol: Monitor) -> None:
    with pytest.raises(SIAError, match="temperature"):
        LiveVote(smol, QUESTION, NUMERIC, VotePolicy(samples=4), GenerationSettings(temperature=0.0))


def test_vote_command_prints_json_events_and_saves_every_sample(tmp_path, capsys) -> None:
    from sia_monitor.cli import main
    from sia_monitor.trajectory import read_trajectories

    path = shipped_calibrator_path(DEFAULT_MODEL, "numeric")
    save = tmp_path / "vote.jsonl"
    argv = ["vote", QUESTION, "-n", "4", "--width", "2", "--max-new-tokens", "60", "--json", "--save", str(save),
            "--model", "smollm2-135m-instruct", "--calibrator", str(path), "--force"]
    assert main(argv) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "vote" and events[-1]["final"]
    assert {"step", "finished"} <= set(kinds) or {"step", "killed"} <= set(kinds)
    saved = list(read_trajectories(save))
    assert len(saved) == kinds.count("started") and all("vote" in t.generation for t in saved)
    assert saved[0].generation["vote"]["answer"] == events[-1]["vote"]["answer"]


@pytest.mark.default_model
def test_default_model_vote_matches_the_offline_harness(qwen: Monitor) -> None:
    from calibrators import calibrator_for

    monitor = Monitor(qwen.loaded, scorer=calibrator_for(DEFAULT_MODEL, NUMERIC))
    policy = VotePolicy(samples=6, width=3, min_votes=2, stop_confidence=0.7)
    live = run_vote(monitor, "A baker made 24 muffins and sold 9. How many are left?", NUMERIC, policy,
                    GenerationSettings(max_new_tokens=160, temperature=0.7, seed=1))
    offline = simulate(live.samples, policy, NUMERIC)
    assert [(b.sample, b.status, b.tokens) for b in live.ballots] == [(b.sample, b.status, b.tokens)
                                                                      for b in offline.ballots]
    assert live.answer == offline.answer is not None
