"""Answer-distribution estimators: which answers a probe scores, and how their probabilities are read.

Every estimator turns "the answer space + what the row has written so far" into token sequences to score,
packs them into a `ProbeTree` after the suffix, and reads an `AnswerDistribution` from the per-node
log-probabilities that `run_probe` returns. All three share one exact scorer: P(answer) is the product of its
tokens' conditional probabilities (times, for numbers, the probability that the number ends there).

- `choice`: each option label, with and without a leading space; the suffix "The answer is (" makes the
  label the natural next token, so the covered mass is close to 1.
- `numeric`: numbers cannot be enumerated, so the estimator scores the numbers most likely to be the answer:
  those already written in the question and reasoning (most recent first), the values of the arithmetic the
  reasoning wrote ("24 - 9" proposes 15 before the model writes it), and the previous probe's top answers, each in its equivalent written forms (`1000` and `1,000` count as one answer). The covered mass
  reports how much of the model's probability these candidates hold.
- `candidates`: the user's answer strings, scored exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from sia_monitor.engines.base import TopLogprobs
from sia_monitor.probing.probe import ProbeTree
from sia_monitor.tasks.answers import AnswerDistribution, AnswerSpace, arithmetic_results, numbers_in


@dataclass
class ProbeContext:
    """What a row has shown so far that helps choose candidate answers."""

    recent_numbers: list[str] = field(default_factory=list)  # normalised, most recent first, unique
    previous: AnswerDistribution | None = None


@dataclass
class ScoringPlan:
    """For each answer, its written forms; each form is a list of (node whose logits score it, token)."""

    forms: dict[str, list[list[tuple[int, int]]]]
    end_nodes: dict[tuple[int, int], int]  # (answer index, form index) -> node whose logits give P(end)


class SparseLogProbs:
    """A probe's per-node log-probabilities as an engine gives them: each node's top-N list, or None for a
    node that was not asked about (its path was already below the engine's lists). Indexed like the dense
    tensor, `[node, token]`; a token outside the node's list reads as -inf."""

    def __init__(self, nodes: Sequence[TopLogprobs | None]) -> None:
        self.nodes = list(nodes)

    def __getitem__(self, key: tuple[int, int]) -> float:
        node, token = key
        top = self.nodes[node]
        return -math.inf if top is None else top.logprobs.get(token, -math.inf)

    def end_log_probs(self, continues: Callable[[str], bool]) -> list[float]:
        """log P(the next token does not continue the answer) at each node, from the listed tokens: an upper
        bound on P(end), since unlisted continuing tokens are not seen (0 for a node not asked about)."""
        ends = []
        for top in self.nodes:
            if top is None:
                ends.append(0.0)
                continue
            continuing = sum(math.exp(lp) for token, lp in top.logprobs.items() if continues(top.pieces.get(token, "")))
            ends.append(math.log1p(-min(continuing, 1.0) + 1e-12))
        return ends


class Estimator(Protocol):
    def plan(self, suffix: list[int], context: ProbeContext) -> tuple[ProbeTree, ScoringPlan]: ...

    def read(self, plan: ScoringPlan, log_probs: torch.Tensor | SparseLogProbs) -> AnswerDistribution: ...


class SequenceEstimator:
    """Scores answers given as written forms; subclasses decide which answers and forms.

    `needs_end`: multiply each form's probability by P(the next token does not continue it), as for numbers
    where "1" is a prefix of "12". Without it the score is the probability of the form as a prefix.
    """

    needs_end = False

    def __init__(self, tokenizer: object, space: AnswerSpace) -> None:
        self.tokenizer = tokenizer
        self.space = space
        self._continuation: torch.Tensor | None = None

    def answers(self, context: ProbeContext) -> dict[str, list[str]]:
        raise NotImplementedError

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]

    def plan(self, suffix: list[int], context: ProbeContext) -> tuple[ProbeTree, ScoringPlan]:
        tree = ProbeTree()
        anchor = tree.anchor = tree.chain(suffix)
        children: dict[tuple[int, int], int] = {}
        forms: dict[str, list[list[tuple[int, int]]]] = {}
        end_nodes: dict[tuple[int, int], int] = {}
        for a_index, (answer, written) in enumerate(self.answers(context).items()):
            forms[answer] = []
            for text in written:
                tokens = self._encode(text)
                if not tokens:
                    continue
                steps, node = [], anchor
                for position, token in enumerate(tokens):
                    steps.append((node, token))
                    if position == len(tokens) - 1 and not self.needs_end:
                        break
                    key = (node, token)
                    if key not in children:
                        children[key] = tree.add(token, node)
                    node = children[key]
                forms[answer].append(steps)
                if self.needs_end:
                    end_nodes[(a_index, len(forms[answer]) - 1)] = node
        return tree, ScoringPlan(forms=forms, end_nodes=end_nodes)

    def _end_log_prob(self, log_probs: torch.Tensor) -> torch.Tensor:
        """log P(the next token does not continue the answer) at each node."""
        if self._continuation is None or self._continuation.numel() != log_probs.shape[-1]:
            self._continuation = self.continuation_mask(log_probs.shape[-1])
        continuing = log_probs[:, self._continuation].exp().sum(-1).clamp(max=1.0)
        return torch.log1p(-continuing + 1e-12)

    def continuation_mask(self, vocab_size: int) -> torch.Tensor:
        return torch.zeros(vocab_size, dtype=torch.bool)

    def read(self, plan: ScoringPlan, log_probs: torch.Tensor | SparseLogProbs) -> AnswerDistribution:
        """The answer distribution from a probe's per-node log-probabilities: a dense (nodes, vocab) tensor
        (the in-process probe), or an engine's top-N lists (`SparseLogProbs`), where a token outside a
        node's list counts as 0, so `covered` is a lower bound."""
        if isinstance(log_probs, SparseLogProbs):
            end = log_probs.end_log_probs(self.continues) if self.needs_end else None
        else:
            end = self._end_log_prob(log_probs) if self.needs_end else None
        masses: dict[str, float] = {}
        for a_index, (answer, written) in enumerate(plan.forms.items()):
            total = 0.0
            for f_index, steps in enumerate(written):
                score = sum(float(log_probs[node, token]) for node, token in steps)
                if end is not None and score > -math.inf:
                    score += float(end[plan.end_nodes[(a_index, f_index)]])
                total += math.exp(score)
            masses[answer] = total
        return AnswerDistribution.from_masses(masses)

    @staticmethod
    def continues(piece: str) -> bool:
        """Whether a token with this text would extend the answer written so far (`needs_end` estimators)."""
        return False


class ChoiceEstimator(SequenceEstimator):
    """Option labels after "The answer is (": exact over the labels, renormalised."""

    def answers(self, context: ProbeContext) -> dict[str, list[str]]:
        forms: dict[str, list[str]] = {}
        for label in self.space.labels:
            variants = {label, " " + label}
            forms[label] = [v for v in sorted(variants) if len(self._encode(v)) == 1] or [label]
        return forms


class CandidatesEstimator(SequenceEstimator):
    """The user's answer strings, each scored exactly as written."""

    def answers(self, context: ProbeContext) -> dict[str, list[str]]:
        return {c: [c] for c in self.space.candidates}


class NumericEstimator(SequenceEstimator):
    """Numbers already in play (question, reasoning so far, previous top answers), in equivalent forms."""

    needs_end = True

    def __init__(self, tokenizer: object, space: AnswerSpace, max_candidates: int = 12) -> None:
        super().__init__(tokenizer, space)
        self.max_candidates = max_candidates

    def answers(self, context: ProbeContext) -> dict[str, list[str]]:
        chosen: list[str] = []
        previous = [a for a, _ in context.previous.top(3)] if context.previous else []
        for number in [*previous, *context.recent_numbers]:
            if number not in chosen:
                chosen.append(number)
            if len(chosen) == self.max_candidates:
                break
        return {number: written_forms(number) for number in chosen}

    def continuation_mask(self, vocab_size: int) -> torch.Tensor:
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        pieces = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))  # type: ignore[attr-defined]
        for token_id, piece in enumerate(pieces):
            if token_id < vocab_size and self.continues(piece or ""):
                mask[token_id] = True
        return mask

    @staticmethod
    def continues(piece: str) -> bool:
        """Tokens that would extend a number: pieces starting with a digit, and the thousands comma."""
        return bool(piece) and (piece[0].isdigit() or piece == ",")


def written_forms(number: str) -> list[str]:
    """The ways a model writes one normalised number: `1000` also as `1,000`."""
    forms = [number]
    whole, _, fraction = number.lstrip("-").partition(".")
    if len(whole) > 3:
        grouped = f"{int(whole):,}" + (f".{fraction}" if fraction else "")
        forms.append(("-" if number.startswith("-") else "") + grouped)
    return forms


def make_estimator(tokenizer: object, space: AnswerSpace) -> Estimator:
    """The estimator for an answer space."""
    if space.kind == "choice":
        return ChoiceEstimator(tokenizer, space)
    if space.kind == "candidates":
        return CandidatesEstimator(tokenizer, space)
    return NumericEstimator(tokenizer, space)


def recent_first(numbers: list[str], text: str) -> list[str]:
    """Merge the numbers written in `text`, and the values of its arithmetic, into `numbers` (most recent first)."""
    merged: list[str] = []
    for number in [*reversed(arithmetic_results(text)), *reversed(numbers_in(text)), *numbers]:
        if number not in merged:
            merged.append(number)
    return merged
