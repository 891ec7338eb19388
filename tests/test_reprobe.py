"""`collect --reprobe`: saved traces probed again on their own tokens measure what the live monitor measured.

Exactness is checked where it is possible, in one process on one machine in float32: a live batch against its
own records probed again. Across machines (the committed traces were generated elsewhere) only what must hold
on any x86 CPU is asserted: the same steps, entropies within a tenth of a bit on average, vectors that point
the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.cli import main
from sia_monitor.collect import collect
from sia_monitor.models import FIXTURE_MODEL, load_model
from sia_monitor.probing.hidden_states import HiddenStateSpec
from sia_monitor.reprobe import ReprobeMismatch, plan_reprobe, reprobe_trajectory, run_reprobe
from sia_monitor.trajectory import StepRecord, Trajectory, read_trajectories, write_trajectories

REPO = Path(__file__).resolve().parents[1]
FIXTURE = ["--model", FIXTURE_MODEL]


def _cosine(a: StepRecord, b: StepRecord) -> float:
    assert a.hidden is not None and b.hidden is not None
    assert (a.hidden.layers, a.hidden.dims, a.hidden.seed) == (b.hidden.layers, b.hidden.dims, b.hidden.seed)
    first, second = torch.tensor(a.hidden.values()).flatten(), torch.tensor(b.hidden.values()).flatten()
    return float(torch.nn.functional.cosine_similarity(first, second, dim=0))


def _same_steps(live: Trajectory, again: Trajectory) -> None:
    assert again.final_text == live.final_text and again.n_tokens == live.n_tokens
    assert [(s.token_start, s.token_end, s.text) for s in again.steps] == [
        (s.token_start, s.token_end, s.text) for s in live.steps]
    assert (again.item_id, again.gold, again.correct, again.parsed_answer, again.finish_reason) == (
        live.item_id, live.gold, live.correct, live.parsed_answer, live.finish_reason)
    assert len(again.token_entropy) == len(live.token_entropy)


@pytest.fixture(scope="module")
def smol_f32() -> Monitor:
    return Monitor(load_model(FIXTURE_MODEL, dtype="float32"), hidden_states=HiddenStateSpec())


def test_a_reprobe_measures_what_the_live_monitor_measured(smol_f32: Monitor, data_dir: Path, tmp_path: Path) -> None:
    """One machine, one process, float32: a live batch of three (left padding, rows ending at different times),
    then each record probed again from its saved text: the same steps, and every number to float noise."""
    out = tmp_path / "live.jsonl"
    collect(smol_f32, "gsm8k", out, str(data_dir), limit=3, batch_size=3,
            settings=GenerationSettings(max_new_tokens=100))
    live = list(read_trajectories(out))
    assert sum(len(t.steps) for t in live) >= 4
    for record in live:
        again = reprobe_trajectory(smol_f32, record)
        _same_steps(record, again)
        for before, after in zip(record.steps, again.steps, strict=True):
            assert abs(before.entropy_bits - after.entropy_bits) < 2e-3
            assert [label for label, _ in before.top[:1]] == [label for label, _ in after.top[:1]]
            assert _cosine(before, after) > 0.9999
        assert max(abs(a - b) for a, b in zip(record.token_entropy, again.token_entropy, strict=True)) < 2e-3
        assert max(abs(a - b) for a, b in zip(record.token_logprob, again.token_logprob, strict=True)) < 2e-3
        assert again.generation["reprobe"]["dtype"] == "float32"
        assert {k: v for k, v in again.generation.items() if k != "reprobe"} == record.generation


def test_a_record_whose_text_does_not_reproduce_it_is_skipped_with_the_reason(
    smol: Monitor, data_dir: Path, tmp_path: Path,
) -> None:
    source = tmp_path / "plain.jsonl"
    collect(smol, "gsm8k", source, str(data_dir), limit=3, batch_size=3, settings=GenerationSettings(max_new_tokens=80))
    records = list(read_trajectories(source))
    assert records[0].steps
    records[0].steps[0].token_end += 1  # a step boundary the text does not give
    records[1].n_tokens += 1  # a token the text does not hold
    write_trajectories(source, records, append=False)
    with pytest.raises(ReprobeMismatch, match="steps close at"):
        reprobe_trajectory(smol, records[0])
    plan = plan_reprobe(source, tmp_path / "again.jsonl", smol.model_id)
    skipped = run_reprobe(smol, plan)
    assert len(skipped) == 2 and "re-encodes to" in skipped[1]
    assert [t.item_id for t in read_trajectories(tmp_path / "again.jsonl")] == [records[2].item_id]


def test_collect_reprobe_adds_hidden_states_and_resumes(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What an engine's traces need: collected without hidden states, probed again with them, resumably."""
    monkeypatch.setenv("COLUMNS", "400")  # long temporary paths stay on one line
    plain = tmp_path / "plain.jsonl.gz"
    assert main(["collect", "--benchmark", "gsm8k", "--limit", "3", "--max-new-tokens", "80", "--no-hidden-states",
                 "--data-dir", str(data_dir), "--out", str(plain), *FIXTURE]) == 0
    records = list(read_trajectories(plain))
    records[2].finish_reason = "stopped"  # ended by the guardrail: its tokens don't show why, so it is left out
    write_trajectories(plain, records, append=False)
    out = tmp_path / "hidden.jsonl.gz"
    command = ["collect", "--reprobe", str(plain), "--out", str(out), *FIXTURE]
    assert main([*command, "--limit", "1"]) == 0
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "1 trajectories were stopped or cancelled mid-trace" in err and "(1 were already there)" in err
    again = list(read_trajectories(out))
    assert [t.item_id for t in again] == [t.item_id for t in records[:2]]
    assert any(t.steps for t in again)
    for before, after in zip(records, again, strict=False):
        _same_steps(before, after)
        assert all(s.hidden is not None and s.hidden.layers == [15, 22, 30] for s in after.steps)
    assert main(command) == 0
    assert "Nothing to do" in capsys.readouterr().err


@pytest.mark.default_model
def test_the_default_models_traces_reprobe_across_machines(qwen: Monitor) -> None:
    """A committed trace of the default model, collected live with hidden states, probed again here: the same
    steps, entropies within a tenth of a bit on average, and the vectors the live run recorded."""
    path = REPO / "calibrators/data/qwen2.5-coder-0.5b-instruct/hidden/gsm8k.jsonl.gz"
    live = next(iter(read_trajectories(path)))
    assert len(live.steps) >= 5 and all(s.hidden is not None for s in live.steps)
    again = reprobe_trajectory(Monitor(qwen.loaded, hidden_states=HiddenStateSpec()), live)
    _same_steps(live, again)
    differences = [abs(a.entropy_bits - b.entropy_bits) for a, b in zip(live.steps, again.steps, strict=True)]
    assert sum(differences) / len(differences) < 0.1
    assert min(_cosine(a, b) for a, b in zip(live.steps, again.steps, strict=True)) > 0.99
