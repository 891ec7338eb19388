"""The decoding loop the in-process backend runs instead of `model.generate`: the same steps, but a row that has
finished (EOS, stopped by a `StoppingCriteria`, or killed) leaves the batch, so it stops costing compute.

Why not `generate`: it keeps running every finished row until the whole batch ends (it only overwrites their
tokens with padding), so stopping a failing sample saves tokens but not time, and a batch of samples always
costs its longest member. Here the model runs on the unfinished rows only: their cache rows are selected
(`Cache.batch_select_indices`), and everything the LogitsProcessors and StoppingCriteria see keeps the full
batch shape, as `generate` gives it (a finished row's later tokens are padding; its scores are zeros), so
`SIAMonitor` and `RowStopper` work unchanged. The monitor learns which cache row is which batch row from
`cache_rows`, for its probe.

The steps are `generate`'s (transformers 5 `_sample`): prefill with `logits_to_keep=1`, float32 logits of the
last position, processors, then temperature / top-p warping and multinomial sampling, or argmax; positions
are cumsum(attention mask) - 1. At batch 1, and in any batch until a row leaves it, the forward passes are
`generate`'s, so greedy tokens are identical (tests/test_decode.py checks it). After a row leaves, the others
run at a smaller batch size, whose bf16 kernels may round differently: the same as any change of batch size.
Decoding is exactly `GenerationSettings` (greedy, or temperature and top-p with no top-k): processors a
model's own generation_config would add in `generate` (a repetition penalty, a default top-k) are not applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from transformers import Cache, LogitsProcessorList, StoppingCriteriaList, TemperatureLogitsWarper, TopPLogitsWarper

from sia_monitor.backends.base import GenerationSettings

RowsChanged = Callable[[list[int]], None]


@torch.inference_mode()
def decode(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: Cache,
    settings: GenerationSettings,
    pad_token_id: int,
    eos_token_ids: Iterable[int],
    processors: LogitsProcessorList | None = None,
    stopping: StoppingCriteriaList | None = None,
    on_rows_changed: RowsChanged | None = None,
) -> torch.Tensor:
    """Generate up to `settings.max_new_tokens` tokens per row; return (batch, prompt + generated) token ids,
    finished rows padded with `pad_token_id` after their end, as `generate` returns them.

    `on_rows_changed(rows)`: told, before the next forward, which batch rows the cache now holds (in order),
    each time finished rows have left it.
    """
    processors = processors or LogitsProcessorList()
    stopping = stopping or StoppingCriteriaList()
    warpers = LogitsProcessorList()
    if settings.temperature > 0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_p < 1.0:
            warpers.append(TopPLogitsWarper(settings.top_p))
    eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long, device=input_ids.device)
    batch = input_ids.shape[0]
    live = torch.arange(batch, device=input_ids.device)  # batch row of each cache row
    unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    output = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                   logits_to_keep=1)
    for step in range(settings.max_new_tokens):
        logits = output.logits[:, -1].to(dtype=torch.float32)
        if len(live) == batch:
            full = logits
        else:
            full = logits.new_zeros((batch, logits.shape[-1]))
            full[live] = logits
        scores = processors(input_ids, full)
        chosen = scores[live]
        if settings.temperature > 0:
            chosen = warpers(input_ids[live], chosen)
            picked = torch.multinomial(torch.softmax(chosen, dim=-1), num_samples=1).squeeze(1)
        else:
            picked = torch.argmax(chosen, dim=-1)
        next_tokens = torch.full((batch,), pad_token_id, dtype=torch.long, device=input_ids.device)
        next_tokens[live] = picked
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        ended = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        ended[live] = torch.isin(picked, eos)
        unfinished &= ~ended
        unfinished &= ~stopping(input_ids, scores)
        if not unfinished.any() or step == settings.max_new_tokens - 1:
            break  # as generate: no forward for a token that will not be drawn
        keep = unfinished[live]
        if not keep.all():
            cache.batch_select_indices(keep.nonzero().squeeze(1))
            live, mask = live[keep], mask[keep]
            if on_rows_changed is not None:
                on_rows_changed(live.tolist())
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=-1)
        output = model(input_ids=next_tokens[live][:, None], attention_mask=mask,
                       position_ids=mask.sum(-1, keepdim=True) - 1, cache=cache, use_cache=True, logits_to_keep=1)
    return input_ids
