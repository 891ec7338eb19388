"""The one-forward tree probe on a live KV cache (SmolLM2): exact scores, and a cache left as it was."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache

from sia_monitor.models import FIXTURE_MODEL, LoadedModel, load_model
from sia_monitor.probing.estimators import (
    ChoiceEstimator,
    NumericEstimator,
    ProbeContext,
    make_estimator,
    recent_first,
    written_forms,
)
from sia_monitor.probing.probe import ProbeTree, run_probe
from sia_monitor.tasks.answers import AnswerSpace

CONTEXTS = [
    "Question: what is 7 times 6?\nReasoning: 7 times 6 is 42.\n",
    "Q: Ann has 3 bags with 4 apples each. How many apples?\nA: 3 bags of 4 apples make 12 apples.\n",
]
SUFFIX = "The answer is "
CANDIDATES = ["42", "4", "48", "12", "1,000", " 12"]  # shared prefixes make the tree branch


@pytest.fixture(scope="module")
def smol_f32() -> LoadedModel:
    """SmolLM2 in float32, so cached and uncached forwards agree to ~1e-5 and the comparison can be tight."""
    return load_model(FIXTURE_MODEL, dtype="float32")


def encode(tokenizer: object, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]


def prefill(model: torch.nn.Module, rows: list[list[int]], pad: int) -> tuple[DynamicCache, torch.Tensor]:
    """Left-pad `rows`, run them into a fresh cache the way `generate` does; return the cache and 0/1 mask."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
    return cache, mask


def candidate_tree(suffix: list[int], candidates: list[list[int]]) -> tuple[ProbeTree, list[list[tuple[int, int]]]]:
    """Suffix chain, then a trie of candidates; per candidate the (node whose logits score it, token) pairs."""
    tree = ProbeTree()
    anchor = tree.chain(suffix)
    children: dict[tuple[int, int], int] = {}
    paths = []
    for tokens in candidates:
        node, path = anchor, []
        for token in tokens:
            path.append((node, token))
            if (node, token) not in children:
                children[(node, token)] = tree.add(token, node)
            node = children[(node, token)]
        paths.append(path)
    return tree, paths


def brute_force(model: torch.nn.Module, prefix: list[int], continuation: list[int]) -> float:
    """log P(continuation | prefix) from one plain forward over the whole text, without a cache."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prefix + continuation])).logits[0].float().log_softmax(-1)
    return sum(float(logits[len(prefix) - 1 + j, token]) for j, token in enumerate(continuation))


def snapshot(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]


def assert_cache_unchanged(cache: DynamicCache, before: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
    assert cache.get_seq_length() == length
    assert len(cache.layers) == len(before)
    for layer, (keys, values) in zip(cache.layers, before, strict=True):
        assert layer.keys.shape == keys.shape and torch.equal(layer.keys, keys)
        assert layer.values.shape == values.shape and torch.equal(layer.values, values)


def test_tree_scores_equal_brute_force_scoring(smol_f32: LoadedModel) -> None:
    model, tokenizer = smol_f32.model, smol_f32.tokenizer
    pad = tokenizer.pad_token_id
    contexts = [encode(tokenizer, c) for c in CONTEXTS]
    assert len(contexts[0]) != len(contexts[1])  # so row 0 is left-padded
    suffix = encode(tokenizer, SUFFIX)
    candidates = [encode(tokenizer, c) for c in CANDIDATES]
    tree, paths = candidate_tree(suffix, candidates)
    assert len(tree) < len(suffix) + sum(len(c) for c in candidates)  # candidates share nodes
    assert len(set(tree.parents[len(suffix):])) < len(tree) - len(suffix)  # and the tree branches

    # P(suffix[0]) comes from the last cached position, not from a probe node, so the tree scores
    # log P(suffix[1:] + candidate | context + suffix[0]).
    expected = [[brute_force(model, ctx + suffix[:1], suffix[1:] + cand) for cand in candidates] for ctx in contexts]
    assert len({round(e, 2) for e in expected[0]}) == len(CANDIDATES)  # the comparison can tell candidates apart

    # Whole batch (appended to the live cache, then cropped), and one row of two (scratch copy of that row).
    for rows in ([0, 1], [1], [0]):
        cache, mask = prefill(model, contexts, pad)
        log_probs = run_probe(model, cache, mask, {r: tree for r in rows}, pad).log_probs
        assert sorted(log_probs) == rows
        for row in rows:
            scores = log_probs[row]
            assert scores.shape == (len(tree), model.config.vocab_size) and scores.dtype == torch.float32
            suffix_score = sum(float(scores[i - 1, suffix[i]]) for i in range(1, len(suffix)))
            for index, path in enumerate(paths):
                tree_score = suffix_score + sum(float(scores[node, token]) for node, token in path)
                assert tree_score == pytest.approx(expected[row][index], abs=2e-3), (rows, row, CANDIDATES[index])


def test_probe_trees_of_different_sizes_in_one_call(smol_f32: LoadedModel) -> None:
    """Rows with different trees are padded to one width; the padding nodes change nothing."""
    model, tokenizer = smol_f32.model, smol_f32.tokenizer
    pad = tokenizer.pad_token_id
    contexts = [encode(tokenizer, c) for c in CONTEXTS]
    suffix = encode(tokenizer, SUFFIX)
    small, small_paths = candidate_tree(suffix, [encode(tokenizer, "12")])
    large, _ = candidate_tree(suffix, [encode(tokenizer, c) for c in CANDIDATES])
    cache, mask = prefill(model, contexts, pad)
    together = run_probe(model, cache, mask, {0: large, 1: small}, pad).log_probs
    alone = run_probe(model, cache, mask, {1: small}, pad).log_probs
    assert together[1].shape[0] == len(small)
    assert torch.allclose(together[1], alone[1], atol=1e-3)
    (node, token), = [step for step in small_paths[0] if step[0] == len(suffix) - 1]
    assert float(together[1][node, token]) == pytest.approx(
        brute_force(model, contexts[1] + suffix, [token]), abs=2e-3)


@pytest.mark.parametrize("rows", [[0, 1, 2], [0, 2], [1]], ids=["whole-batch", "rows-0-2", "row-1"])
def test_live_cache_unchanged_after_probe(smol, rows: list[int]) -> None:
    model, tokenizer = smol.model, smol.tokenizer
    pad = tokenizer.pad_token_id
    contexts = [encode(tokenizer, c) for c in [*CONTEXTS, "Short one.\n"]]
    cache, mask = prefill(model, contexts, pad)
    length = cache.get_seq_length()
    before = snapshot(cache)
    tree, _ = candidate_tree(encode(tokenizer, SUFFIX), [encode(tokenizer, c) for c in CANDIDATES])
    log_probs = run_probe(model, cache, mask, {r: tree for r in rows}, pad).log_probs
    assert sorted(log_probs) == rows
    assert all(torch.isfinite(lp).all() for lp in log_probs.values())
    assert_cache_unchanged(cache, before, length)
    # And the cache still works: a second probe on it gives the same answer.
    again = run_probe(model, cache, mask, {r: tree for r in rows}, pad).log_probs
    assert all(torch.equal(again[r], log_probs[r]) for r in rows)
    assert_cache_unchanged(cache, before, length)


def probe_distribution(loaded: LoadedModel, estimator, context_text: str, suffix_text: str, context: ProbeContext):
    model, tokenizer = loaded.model, loaded.tokenizer
    pad = tokenizer.pad_token_id
    cache, mask = prefill(model, [encode(tokenizer, context_text)], pad)
    tree, plan = estimator.plan(encode(tokenizer, suffix_text), context)
    log_probs = run_probe(model, cache, mask, {0: tree}, pad).log_probs
    return estimator.read(plan, log_probs[0])


def test_choice_estimator_distribution(smol) -> None:
    space = AnswerSpace("choice", labels=("A", "B", "C", "D"), options=("green", "blue", "red", "yellow"))
    estimator = make_estimator(smol.tokenizer, space)
    assert isinstance(estimator, ChoiceEstimator)
    forms = estimator.answers(ProbeContext())
    assert list(forms) == ["A", "B", "C", "D"]
    assert all(form.strip() == label for label, written in forms.items() for form in written)
    text = ("What color is the sky on a clear day?\nA) green\nB) blue\nC) red\nD) yellow\n"
            "The sky on a clear day is blue, which is option B.\n")
    dist = probe_distribution(smol, estimator, text, "The answer is (", ProbeContext())
    assert set(dist.probs) == {"A", "B", "C", "D"}
    assert sum(dist.probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= p <= 1.0 for p in dist.probs.values())
    assert 0.0 < dist.covered <= 1.0
    assert 0.0 <= dist.entropy_bits <= 2.0 + 1e-9


def test_numeric_estimator_candidates_and_distribution(smol) -> None:
    assert written_forms("1000") == ["1000", "1,000"]
    assert written_forms("-1234.5") == ["-1234.5", "-1,234.5"]
    assert written_forms("999") == ["999"]
    assert written_forms("0.25") == ["0.25"]

    estimator = make_estimator(smol.tokenizer, AnswerSpace("numeric"))
    assert isinstance(estimator, NumericEstimator)
    context = ProbeContext(recent_numbers=recent_first([], "Tom had 1000 coins and 7 friends; 6 each, so 42."))
    assert context.recent_numbers == ["42", "6", "7", "1000"]
    answers = estimator.answers(context)
    assert answers["1000"] == ["1000", "1,000"] and answers["42"] == ["42"]

    tree, plan = estimator.plan(encode(smol.tokenizer, SUFFIX), context)
    assert [len(forms) for forms in plan.forms.values()] == [1, 1, 1, 2]
    assert len(plan.end_nodes) == 5 and all(0 <= node < len(tree) for node in plan.end_nodes.values())

    text = "Question: what is 7 times 6?\nReasoning: 7 times 6 is 42.\n"
    dist = probe_distribution(smol, estimator, text, SUFFIX, ProbeContext(recent_numbers=["42", "6", "7", "1000"]))
    assert set(dist.probs) == {"42", "6", "7", "1000"}
    assert sum(dist.probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < dist.covered <= 1.0
    assert dist.top(1)[0][0] == "42"
    assert not math.isnan(dist.entropy_bits)
