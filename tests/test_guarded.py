"""Guarded runs: the policy acting on replayed and live traces, the user's stop / resample / pause, and the
replay's rebuilt event stream."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from replay_data import ACCEPTS, CLEAN, STALLS, ConstantScorer, EntropyScorer, as_resample, svamp_records, write_sample

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.guardrail.guarded import GuardedRun
from sia_monitor.guardrail.live import LiveBackend, run_guarded
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.guardrail.replay import ReplayBackend, load_replay, replay_events, split_pieces
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.trajectory import MonitorEvent, read_trajectories, write_trajectories


def kinds(events: list[MonitorEvent]) -> list[str]:
    return [e.kind for e in events]


def test_replay_rebuilds_the_recorded_tokens_text_and_step_positions() -> None:
    for record in svamp_records(6):
        events = replay_events(record)
        tokens = [e for e in events if e.kind == "token"]
        assert len(tokens) == record.n_tokens
        assert "".join(e.text for e in tokens) == record.final_text
        seen, text = 0, ""
        for event in events:
            if event.kind == "token":
                seen, text = seen + 1, text + event.text
            elif event.kind == "step" and event.step is not None:
                assert seen == event.step.token_end  # right after the token that closed it
                assert text.rstrip().endswith(event.step.text)


def test_split_pieces_keeps_the_text_and_the_count() -> None:
    for count in (1, 3, 7, 40):
        pieces = split_pieces("Step 2: 76 - 25 = 51 dollars.\n", count)
        assert len(pieces) == count and "".join(pieces) == "Step 2: 76 - 25 = 51 dollars.\n"
    assert split_pieces("abc", 0) == []


def test_the_entropy_guardrail_stops_a_stalled_replay_and_records_why() -> None:
    record = svamp_records()[STALLS]
    run = GuardedRun(ReplayBackend([record], speed=0), GuardrailPolicy())
    events = list(run.events())
    decisions = [e for e in events if e.kind == "decision"]
    assert len(decisions) == 1 and decisions[0].detail["action"] == "stop"
    assert decisions[0].detail["signal"] == "entropy" and decisions[0].detail["step"] == 6
    final = events[-1]
    assert final.kind == "final" and final.detail == {"attempt": 0, "more": False, "best": 0}
    trajectory = final.trajectory
    assert trajectory is not None and trajectory.finish_reason == "stopped"
    assert len(trajectory.steps) == 6 and trajectory.n_tokens == trajectory.steps[-1].tokens_so_far
    assert trajectory.n_tokens < record.n_tokens
    (recorded,) = trajectory.decisions
    assert recorded["tokens_saved"] == record.n_tokens - trajectory.n_tokens and "entropy" in recorded["reason"]
    # the tokens after the decision were never sent: cancellation reached the replay within one token
    assert sum(1 for e in events if e.kind == "token") == trajectory.n_tokens


def test_without_auto_the_policy_never_acts() -> None:
    record = svamp_records()[STALLS]
    events = list(GuardedRun(ReplayBackend([record], speed=0), GuardrailPolicy(), auto=False).events())
    assert "decision" not in kinds(events)
    assert events[-1].trajectory is not None and events[-1].trajectory.finish_reason == "eos"


def test_resample_plays_the_next_sample_and_keeps_the_best() -> None:
    records = svamp_records()
    stalls, clean = records[STALLS], as_resample(records[CLEAN], records[STALLS])
    run = GuardedRun(ReplayBackend([stalls, clean], speed=0), GuardrailPolicy(max_resamples=2))
    events = list(run.events())
    finals = [e for e in events if e.kind == "final"]
    assert [f.detail["more"] for f in finals] == [True, False]
    assert [d.action for d in run.decisions] == ["resample"]
    result = run.result()
    assert [t.finish_reason for t in result.attempts] == ["resampled", "eos"]
    assert result.best is result.attempts[1] and finals[-1].detail["best"] == 1
    assert all(t.generation["best_attempt"] == 1 for t in result.attempts)
    assert {e.detail["attempt"] for e in events if e.kind == "token"} == {0, 1}


def test_a_resample_with_no_saved_sample_left_stops() -> None:
    run = GuardedRun(ReplayBackend([svamp_records()[STALLS]], speed=0), GuardrailPolicy(max_resamples=3))
    list(run.events())
    (decision,) = run.decisions
    assert decision.action == "stop" and "no other saved trace to resample" in decision.reason


def test_another_attempt_after_the_end_only_when_there_is_one_to_give() -> None:
    records = svamp_records()
    run = GuardedRun(ReplayBackend([records[STALLS], records[CLEAN]], speed=0), GuardrailPolicy(), auto=False)
    assert not run.another()  # still running: not before its end
    first = list(run.events())
    assert first[-1].detail == {"attempt": 0, "more": False, "best": 0}
    assert run.another() and not run.another()  # opened once, not twice
    second = list(run.events())
    assert second[-1].detail["attempt"] == 1 and second[-1].detail["more"] is False
    assert [t.n_tokens for t in run.attempts] == [records[STALLS].n_tokens, records[CLEAN].n_tokens]
    assert not run.another()  # a replay has no third saved trace
    closed = GuardedRun(ReplayBackend(records[:3], speed=0), GuardrailPolicy(), auto=False)
    list(closed.events())
    closed.cancel()
    assert not closed.another()  # after quitting, nothing new starts


def test_accept_ends_a_converged_replay_with_the_probes_answer() -> None:
    record = svamp_records(ACCEPTS + 1)[ACCEPTS]
    run = GuardedRun(ReplayBackend([record], speed=0, scorer=EntropyScorer()), GuardrailPolicy(accept_above=0.9))
    list(run.events())
    (trajectory,) = run.attempts
    assert trajectory.finish_reason == "accepted" and trajectory.correct is True
    assert trajectory.n_tokens < record.n_tokens and trajectory.parsed_answer == record.parsed_answer


def test_accepting_a_number_from_the_question_is_off_by_default_and_can_be_wrong() -> None:
    record = svamp_records()[CLEAN]  # sure of "76" (the price in the question) from step 4; the answer is 51
    default = GuardedRun(ReplayBackend([record], speed=0, scorer=EntropyScorer()), GuardrailPolicy(accept_above=0.9))
    list(default.events())
    assert default.attempts[0].finish_reason == "eos" and not default.decisions
    policy = GuardrailPolicy(accept_above=0.9, accept_given_numbers=True)
    run = GuardedRun(ReplayBackend([record], speed=0, scorer=EntropyScorer()), policy)
    events = list(run.events())
    trajectory = events[-1].trajectory
    assert trajectory is not None and trajectory.finish_reason == "accepted"
    forced = [e for e in events if e.kind == "token" and e.detail.get("forced")]
    assert len(forced) == 1 and forced[0].text == "\nThe answer is 76"
    assert trajectory.parsed_answer == "76" and trajectory.final_text.endswith("\nThe answer is 76")
    assert trajectory.correct is False  # accepting early can be wrong: the trace changed its mind at step 7
    assert trajectory.decisions[0]["tokens_saved"] > 0 and trajectory.generation["forced_answer"]["source"] == "probe"
    assert all(s.p_correct is not None for s in trajectory.steps)


def test_user_stop_pause_and_cancel_take_effect_mid_replay() -> None:
    record = svamp_records()[CLEAN]
    backend = ReplayBackend([record], speed=200)  # 200x the recorded ~5 tok/s: about 1 ms a token
    run = GuardedRun(backend, GuardrailPolicy(), auto=False)
    events: list[MonitorEvent] = []
    worker = threading.Thread(target=lambda: events.extend(run.events()))
    worker.start()
    while sum(e.kind == "token" for e in events) < 20:
        time.sleep(0.005)
    run.pause()
    time.sleep(0.05)
    held = len(events)
    time.sleep(0.2)
    assert len(events) == held and run.paused  # paused: the replay waits between two tokens
    run.stop()  # a stop while paused does not wait for a resume
    worker.join(timeout=5)
    assert not worker.is_alive()
    trajectory = events[-1].trajectory
    assert trajectory is not None and trajectory.finish_reason == "stopped"
    assert [d.by for d in run.decisions] == ["user"] and trajectory.decisions[0]["reason"] == "stopped by the user"
    assert trajectory.n_tokens < record.n_tokens

    cancelled = GuardedRun(ReplayBackend([record], speed=200), GuardrailPolicy())
    iterator = cancelled.events()
    next(iterator)
    cancelled.cancel()
    rest = list(iterator)
    assert rest[-1].trajectory is not None and rest[-1].trajectory.finish_reason == "cancelled"


def test_load_replay_and_a_cut_short_trajectory_are_valid_records(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    (only,) = load_replay(path, item=1)  # record 1 of the sample (STALLS) has no other sample
    assert only.question == svamp_records()[STALLS].question
    run = GuardedRun(ReplayBackend([only], speed=0), GuardrailPolicy())
    list(run.events())
    write_trajectories(tmp_path / "out.jsonl", run.attempts)
    (back,) = read_trajectories(tmp_path / "out.jsonl")
    assert back.finish_reason == "stopped" and back.decisions == run.attempts[0].decisions
    assert len(back.token_entropy) == back.n_tokens


# Live runs: the fixture model rarely writes a newline within a few dozen tokens, so steps end at sentences.


def test_live_guardrail_resamples_with_a_new_seed_and_a_hotter_temperature(smol: Monitor) -> None:
    monitor = Monitor(smol.loaded, segmenter="sentence", scorer=ConstantScorer(0.05))  # every step looks hopeless
    policy = GuardrailPolicy(min_steps=1, patience=1, max_resamples=1)
    heard: list[MonitorEvent] = []
    result = run_guarded(monitor, "What is 7 + 8? Think step by step.", policy=policy,
                         settings=GenerationSettings(max_new_tokens=24), on_event=heard.append)
    assert [t.finish_reason for t in result.attempts] in (["resampled", "stopped"], ["resampled", "eos"],
                                                          ["resampled", "length"])
    first, second = result.attempts
    assert (first.generation["seed"], first.generation["temperature"]) == (0, 0.0)
    assert (second.generation["seed"], second.generation["temperature"]) == (1, 0.4)
    assert first.decisions[0]["action"] == "resample" and "tokens_saved_at_most" in first.decisions[0]
    assert next(e.detail["action"] for e in heard if e.kind == "decision") == "resample"


def test_live_accept_stops_reasoning_and_forces_the_answer_line(smol: Monitor) -> None:
    monitor = Monitor(smol.loaded, segmenter="sentence", scorer=ConstantScorer(0.99))
    policy = GuardrailPolicy(min_steps=1, accept_above=0.9, converged_steps=1, converged_bits=10.0,
                             accept_given_numbers=True)  # the mechanics, whatever the tiny model is sure of
    question = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    backend = LiveBackend(monitor, question, NUMERIC, GenerationSettings(max_new_tokens=32), policy, answer_tokens=6)
    run = GuardedRun(backend, policy)
    events = list(run.events())
    (trajectory,) = run.attempts
    assert trajectory.steps, "the fixture model wrote no sentence in 32 tokens"
    assert trajectory.finish_reason == "accepted" and len(trajectory.steps) == 1
    line = trajectory.final_text.splitlines()[-1]
    assert line.startswith("The answer is ") and trajectory.generation["forced_answer"]["source"] == "model"
    assert 1 <= trajectory.generation["forced_answer"]["tokens"] <= 6
    assert trajectory.decisions[0]["answer"] == trajectory.parsed_answer
    assert trajectory.decisions[0]["tokens_saved_at_most"] == 32 - trajectory.n_tokens
    assert next(e.text for e in events if e.kind == "token" and e.detail.get("forced")) == "\n" + line


def test_force_answer_parses_what_the_model_states(smol: Monitor) -> None:
    line, answer, tokens = smol.force_answer("What is 2 + 3?", NUMERIC, "2 + 3 = 5.", max_new_tokens=6)
    assert line.startswith("The answer is ") and 1 <= tokens <= 6
    assert answer == "5"
