"""Hidden states in the step record: the projection's definition, the record, the probe's readout, the monitor.

The readout is checked against an independent, uncached forward of the same text: the hidden state the probe
returns at its anchor is the one a plain forward computes at the last suffix token.
"""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from transformers import DynamicCache

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.errors import SIAError
from sia_monitor.models import FIXTURE_MODEL, LoadedModel, load_model
from sia_monitor.probing.hidden_states import PROJECTION, HiddenStateProjector, HiddenStateSpec, projection_matrix
from sia_monitor.probing.probe import ProbeTree, run_probe
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.trajectory import HiddenState, Trajectory, read_trajectories, write_trajectories

QUESTION = "Tom has 12 apples and gives away 5, then buys 7 more. How many apples does he have now?"


def test_projection_matrix_is_its_sha256_definition() -> None:
    """The matrix any reader rebuilds from a record's seed: signs from SHA-256 blocks, most significant bit first."""
    matrix = projection_matrix(7, 300, 64)
    assert matrix.shape == (300, 64) and matrix.dtype == torch.float32
    assert set(matrix.unique().tolist()) == {-1 / 8, 1 / 8}
    stream = b"".join(hashlib.sha256(f"7:{block}".encode()).digest() for block in range(300 * 64 // 256))
    flat = matrix.flatten()
    for k in (0, 1, 7, 8, 255, 256, 5000, 300 * 64 - 1):
        bit = (stream[k // 8] >> (7 - k % 8)) & 1
        assert flat[k] == (1 / 8 if bit else -1 / 8), k
    assert not torch.equal(projection_matrix(8, 300, 64), matrix)  # the seed matters
    balance = float(matrix.sign().mean())
    assert abs(balance) < 0.05  # about as many + as -


def test_projection_keeps_distances() -> None:
    """Johnson-Lindenstrauss, measured: 896 -> 64 dims keeps pairwise distances within about 25%."""
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(40, 896, generator=generator) * torch.linspace(0.1, 3, 896)
    projected = points @ projection_matrix(0, 896, 64)
    ratios = (torch.pdist(projected) / torch.pdist(points)).tolist()
    assert 0.9 < sum(ratios) / len(ratios) < 1.1
    assert sum(0.7 < r < 1.3 for r in ratios) / len(ratios) > 0.9


def test_record_round_trips_in_float16() -> None:
    values = [[0.5, -1.25, 3.0], [100.0, 1e6, -1e6]]
    record = HiddenState.from_values(values, layers=[3, 6], seed=1, projection=PROJECTION)
    assert record.dims == 3 and len(record.data) == math.ceil(6 * 2 / 3) * 4
    assert record.values() == [[0.5, -1.25, 3.0], [100.0, 65504.0, -65504.0]]  # out of range: clamped, not inf
    with pytest.raises(ValueError, match="rows of equal length"):
        HiddenState.from_values([[1.0], [1.0, 2.0]], layers=[1, 2], seed=0, projection=PROJECTION)
    broken = HiddenState(layers=[1, 2], dims=4, seed=0, projection=PROJECTION, data=record.data)
    with pytest.raises(ValueError, match="holds 12 bytes, not 16"):
        broken.values()


def test_spec_refuses_what_the_model_lacks() -> None:
    with pytest.raises(SIAError, match="--hidden-dims"):
        HiddenStateSpec(dims=0)
    assert HiddenStateSpec().resolve_layers(24) == (12, 18, 24)
    assert HiddenStateSpec().resolve_layers(30) == (15, 22, 30)
    with pytest.raises(SIAError, match="layer 31 does not exist"):
        HiddenStateSpec(layers=(2, 31)).resolve_layers(30)


@pytest.fixture(scope="module")
def smol_f32() -> LoadedModel:
    return load_model(FIXTURE_MODEL, dtype="float32")


def test_probe_reads_the_hidden_state_at_the_anchor(smol_f32: LoadedModel) -> None:
    """Two left-padded rows, the whole batch and one row alone: the probe's hidden states at the anchor equal an
    uncached forward's at the last suffix token, on every asked-for layer; nodes after the anchor change nothing."""
    model, tokenizer = smol_f32.model, smol_f32.tokenizer
    encode = lambda text: list(tokenizer.encode(text, add_special_tokens=False))
    contexts = [encode("Q: 7 times 6?\nA: 7 times 6 is 42.\n"), encode("Q: Ann has 3 bags of 4 apples.\nA: 12.\n")]
    suffix = encode("The answer is ")
    tree = ProbeTree()
    tree.anchor = tree.chain(suffix)
    for candidate in ("42", "12", "4"):
        tree.chain(encode(candidate), tree.anchor)
    layers = (0, 15, 30)
    pad = tokenizer.pad_token_id
    for rows in ([0, 1], [1]):
        width = max(map(len, contexts))
        ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts])
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0), cache=cache)
        result = run_probe(model, cache, mask, {r: tree for r in rows}, pad, hidden_layers=layers)
        assert sorted(result.hidden) == rows
        for row in rows:
            with torch.inference_mode():
                reference = model(input_ids=torch.tensor([contexts[row] + suffix]), output_hidden_states=True)
            expected = torch.stack([reference.hidden_states[layer][0, -1] for layer in layers]).float()
            assert result.hidden[row].shape == (3, model.config.hidden_size)
            torch.testing.assert_close(result.hidden[row], expected, rtol=1e-3, atol=1e-3)
    assert run_probe(model, cache, mask, {0: tree}, pad).hidden == {}  # not asked: nothing kept


def test_monitor_records_hidden_states_without_changing_anything_else(smol: Monitor, tmp_path) -> None:
    settings = GenerationSettings(max_new_tokens=60)
    (plain,) = smol.generate(QUESTION, NUMERIC, settings)
    recording = Monitor(smol.loaded, hidden_states=HiddenStateSpec())
    (traced,) = recording.generate(QUESTION, NUMERIC, settings)
    assert traced.final_text == plain.final_text and len(traced.steps) == len(plain.steps) >= 2
    assert [s.entropy_bits for s in traced.steps] == [s.entropy_bits for s in plain.steps]
    assert all(s.hidden is None for s in plain.steps)
    projector = HiddenStateProjector.for_model(HiddenStateSpec(), smol.model)
    vectors = []
    for step in traced.steps:
        assert step.hidden is not None
        assert (step.hidden.layers, step.hidden.dims, step.hidden.seed) == ([15, 22, 30], 64, 0)
        assert step.hidden.projection == PROJECTION == projector.project(torch.zeros(3, 576)).projection
        vectors.append(step.hidden.values())
    assert vectors[0] != vectors[1]  # each step has its own state

    # saved and read back: version 2, vectors intact (float16 both ways)
    path = tmp_path / "t.jsonl"
    write_trajectories(path, [traced])
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["version"] == 2
    (back,) = read_trajectories(path)
    assert [s.hidden.values() for s in back.steps] == vectors


def test_version_1_records_still_read(smol: Monitor, tmp_path) -> None:
    """A file written before hidden states existed: no `hidden` key, version 1."""
    (trajectory,) = smol.generate("What is 2+3?", NUMERIC, GenerationSettings(max_new_tokens=30))
    record = trajectory.to_json()
    record["version"] = 1
    for step in record["steps"]:
        del step["hidden"]
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (back,) = read_trajectories(path)
    assert back.steps == trajectory.steps and all(s.hidden is None for s in back.steps)
    assert Trajectory.from_json(record).final_text == trajectory.final_text
