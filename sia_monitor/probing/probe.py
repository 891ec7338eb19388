"""One forward pass that asks "what would you answer now?" on top of the live KV cache.

Why a tree in one pass: the cost of a forward over a few dozen tokens on top of a cache is close to the cost
of decoding one token (both are dominated by reading the weights), while every extra forward call costs a
full decode step. So the answer-forcing suffix and every candidate answer's tokens are packed into one
sequence, arranged as a tree (a trie of candidates hanging off the suffix), and a custom 4-D attention mask
lets each node see the cached prefix, its ancestors and itself. One call scores all candidates exactly.

Cache discipline: when every row of the batch is probed, the nodes are appended to the live cache passed
to `generate` and cropped off again (`Cache.crop(-n)` restores it exactly); when only some rows are probed,
those rows' cache entries are copied into a scratch cache so the other rows cost nothing. Either way the
live cache is left as it was, so the generated tokens never change.

Hidden states come from the same forward: asked for some layers, it also returns each row's hidden states at
its tree's `anchor` (the last suffix token, whose next token is the answer), so recording them costs no
extra pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import Cache, DynamicCache


@dataclass
class ProbeTree:
    """Tokens to append for one row: `parents[i]` is the index of node i's parent, -1 for the root."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    anchor: int = -1  # the node whose hidden states `run_probe` returns (-1: the last node)

    def add(self, token: int, parent: int) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        return len(self.tokens) - 1

    def chain(self, tokens: list[int], parent: int = -1) -> int:
        """Append a chain of tokens under `parent`; return the index of its last node."""
        for token in tokens:
            parent = self.add(token, parent)
        return parent

    def __len__(self) -> int:
        return len(self.tokens)


def _row_subset(cache: Cache, rows: list[int]) -> DynamicCache:
    index = torch.tensor(rows)
    scratch = DynamicCache()
    for layer_idx, layer in enumerate(cache.layers):
        scratch.update(layer.keys.index_select(0, index), layer.values.index_select(0, index), layer_idx)
    return scratch


def _depths(parents: list[int]) -> list[int]:
    depths: list[int] = []
    for parent in parents:
        depths.append(0 if parent < 0 else depths[parent] + 1)
    return depths


def _ancestry(parents: list[int], width: int) -> torch.Tensor:
    """(width, width) bool: node i may attend to node j iff j is i or one of its ancestors.

    Parents always precede their children, so each row is its parent's row plus itself. Padding nodes
    (beyond the tree) see only themselves and are never read.
    """
    visible = torch.eye(width, dtype=torch.bool)
    for node, parent in enumerate(parents):
        if parent >= 0:
            visible[node] |= visible[parent]
    return visible


@dataclass
class ProbeResult:
    """Per probed row: `log_probs[row]`, the next-token log-probabilities at every node, (len(tree), vocab)
    float32; `hidden[row]`, the asked-for layers' hidden states at the tree's anchor, (layers, hidden size)."""

    log_probs: dict[int, torch.Tensor]
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)


@torch.inference_mode()
def run_probe(
    model: torch.nn.Module,
    cache: Cache,
    prefix_mask: torch.Tensor,
    trees: dict[int, ProbeTree],
    pad_token_id: int,
    hidden_layers: Sequence[int] = (),
) -> ProbeResult:
    """Run the trees of `trees` (batch row -> tree) in one forward.

    `prefix_mask` is the (batch, length) 0/1 mask of the tokens the trees hang off (left padding 0). It may be
    shorter than the cache: a reprobe (`sia_monitor.reprobe`) runs a whole saved trace first, and the cache
    positions past `length` are then hidden from the trees, so they see exactly what a cache cropped there holds.
    `hidden_layers`: indices into the model's `hidden_states` to return at each tree's anchor (none: the
    forward keeps no hidden states).
    """
    rows = sorted(trees)
    batch = prefix_mask.shape[0]
    width = max(len(trees[r]) for r in rows)
    cached = cache.get_seq_length()
    device = prefix_mask.device
    min_value = torch.finfo(model.dtype).min

    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long, device=device)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    mask = torch.full((len(rows), 1, width, cached + width), min_value, dtype=model.dtype, device=device)
    for i, row in enumerate(rows):
        tree = trees[row]
        n = len(tree)
        base = int(prefix_mask[row].sum())
        input_ids[i, :n] = torch.tensor(tree.tokens)
        position_ids[i, :n] = base + torch.tensor(_depths(tree.parents))
        visible = torch.zeros(cached, dtype=torch.bool, device=device)
        visible[: prefix_mask.shape[1]] = prefix_mask[row].bool()
        mask[i, 0, :n, :cached][:, visible] = 0.0
        mask[i, 0, :, cached:][_ancestry(tree.parents, width)] = 0.0

    whole_batch = len(rows) == batch
    probe_cache = cache if whole_batch else _row_subset(cache, rows)
    try:
        output = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=probe_cache,
            use_cache=True,
            output_hidden_states=bool(hidden_layers),
        )
    finally:
        if whole_batch:
            cache.crop(-width)
    log_probs = output.logits.float().log_softmax(-1)
    result = ProbeResult({row: log_probs[i, : len(trees[row])] for i, row in enumerate(rows)})
    if hidden_layers:
        anchors = torch.tensor([trees[row].anchor % len(trees[row]) for row in rows], device=device)
        picked = torch.arange(len(rows), device=device)
        chosen = torch.stack([output.hidden_states[layer][picked, anchors] for layer in hidden_layers], dim=1)
        for i, row in enumerate(rows):  # chosen: (rows, layers, hidden size)
            result.hidden[row] = chosen[i].float()
    return result
