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

from collections.abc import Callable, Iterable, Sequence

import torch
from transformers import (
    Cache,
    DynamicCache,
    LogitsProcessorList,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import DynamicLayer

from sia_monitor.backends.base import GenerationSettings, check_budgets
from sia_monitor.errors import SIAError

RowsChanged = Callable[[list[int]], None]
RowsEnded = Callable[[torch.Tensor, list[int]], None]
RowsAdded = Callable[[torch.Tensor], None]
Schedule = Callable[[int], int | None]


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
    on_rows_ended: RowsEnded | None = None,
    schedule: Schedule | None = None,
    on_rows_added: RowsAdded | None = None,
    budgets: Sequence[int] | None = None,
) -> torch.Tensor:
    """Generate up to `settings.max_new_tokens` tokens per row; return (batch, prompt + generated) token ids,
    finished rows padded with `pad_token_id` after their end, as `generate` returns them.

    `on_rows_changed(rows)`: told, before the next forward, which batch rows the cache now holds (in order),
    each time rows have left it or joined it.
    `on_rows_ended(input_ids, rows)`: the batch rows that ended with the token just drawn (EOS, a stopping
    criterion, or their own token budget), told at once, while `input_ids` ends with that token.
    `schedule(running)`: asked after every token, once the ended rows are told, with the number of rows still
    running: how many new rows to start now (each a copy of row 0's prompt), or None to stop every row at
    once. New rows join the cache left-padded to the current length (their prompt is
    prefilled once and reused), draw their first token in the next forward's step, and get their own
    `max_new_tokens`; `on_rows_added(masks)` gives the monitor their (rows, length) attention masks first.
    `budgets`: each first row's own token budget (at most `settings.max_new_tokens`; default: that for all), so
    requests with different budgets can share a batch; a row that reaches its budget ends as at the limit.
    """
    processors = processors or LogitsProcessorList()
    stopping = stopping or StoppingCriteriaList()
    warpers = LogitsProcessorList()
    if settings.temperature > 0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_p < 1.0:
            warpers.append(TopPLogitsWarper(settings.top_p))
    device = input_ids.device
    eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long, device=device)
    batch = input_ids.shape[0]
    live = torch.arange(batch, device=device)  # batch row of each cache row
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    check_budgets(budgets, batch, settings.max_new_tokens)
    last_tick = (torch.tensor(list(budgets), dtype=torch.long, device=device) - 1 if budgets is not None else
                 torch.full((batch,), settings.max_new_tokens - 1, dtype=torch.long, device=device))
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    output = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                   logits_to_keep=1)
    logits = output.logits[:, -1].to(dtype=torch.float32)
    prompt: _Prompt | None = None
    tick = 0
    while True:
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
        next_tokens = torch.full((batch,), pad_token_id, dtype=torch.long, device=device)
        next_tokens[live] = picked
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        ended = torch.zeros(batch, dtype=torch.bool, device=device)
        ended[live] = torch.isin(picked, eos) | (last_tick[live] <= tick)
        ended |= stopping(input_ids, scores) & unfinished
        unfinished &= ~ended
        if on_rows_ended is not None and ended.any():
            on_rows_ended(input_ids, ended.nonzero().squeeze(1).tolist())
        start = schedule(int(unfinished.sum())) if schedule is not None else 0
        if start is None:
            break  # the caller stopped every row: its remaining rows end here, as a cancelled generate's
        keep = unfinished[live]
        changed = not keep.all()
        if changed:
            cache.batch_select_indices(keep.nonzero().squeeze(1))
            live, mask = live[keep], mask[keep]
        if len(live):
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=-1)
            if changed and on_rows_changed is not None:
                on_rows_changed(live.tolist())
            output = model(input_ids=next_tokens[live][:, None], attention_mask=mask,
                           position_ids=mask.sum(-1, keepdim=True) - 1, cache=cache, use_cache=True, logits_to_keep=1)
            logits = output.logits[:, -1].to(dtype=torch.float32)
        else:
            logits = logits[:0]
        if start > 0:
            if prompt is None:
                prompt = _Prompt.prefill(model, input_ids[0, : attention_mask.shape[1]], attention_mask[0])
            new_masks = prompt.join(cache, start, input_ids.shape[1], live_rows=len(live))
            new_rows = torch.arange(batch, batch + start, device=device)
            input_ids = torch.cat([input_ids, prompt.ids_row(input_ids.shape[1], pad_token_id).expand(start, -1)])
            batch += start
            # with no row left running, the mask was not lengthened for the token just drawn: the new rows'
            # masks (as long as input_ids) are the whole of it
            live, mask = torch.cat([live, new_rows]), torch.cat([mask, new_masks]) if len(live) else new_masks
            unfinished = torch.cat([unfinished, unfinished.new_ones(start)])
            last_tick = torch.cat([last_tick, last_tick.new_full((start,), tick + settings.max_new_tokens)])
            logits = torch.cat([logits, prompt.logits.expand(start, -1)])
            if on_rows_added is not None:
                on_rows_added(new_masks)
            if on_rows_changed is not None:
                on_rows_changed(live.tolist())
        if not len(live):
            break  # as generate: no forward for a token that will not be drawn
        tick += 1
    return input_ids


class _Prompt:
    """One prompt, prefilled once at batch 1, copied into the batch each time a new row starts with it."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]],
                 logits: torch.Tensor) -> None:
        self.ids, self.mask, self.layers, self.logits = ids, mask, layers, logits

    @classmethod
    def prefill(cls, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> _Prompt:
        ids, mask = ids[mask.bool()], mask[mask.bool()].long()  # without its left padding
        own = DynamicCache(config=model.config)
        positions = torch.arange(len(ids), device=ids.device)[None]
        output = model(input_ids=ids[None], attention_mask=mask[None], position_ids=positions, cache=own,
                       use_cache=True, logits_to_keep=1)
        layers = []
        for layer in own.layers:
            if type(layer) is not DynamicLayer:
                raise SIAError(f"Starting new rows mid-generation needs full-attention cache layers, not "
                               f"{type(layer).__name__}.")
            layers.append((layer.keys, layer.values))
        return cls(ids, mask, layers, output.logits[:, -1].to(dtype=torch.float32))

    def ids_row(self, length: int, pad_token_id: int) -> torch.Tensor:
        """The prompt's token ids left-padded to `length`, as a (1, length) row."""
        row = torch.full((1, length), pad_token_id, dtype=torch.long, device=self.ids.device)
        row[0, length - len(self.ids):] = self.ids
        return row

    def join(self, cache: Cache, count: int, length: int, live_rows: int) -> torch.Tensor:
        """Append `count` copies of the prompt's cache rows, left-padded to `length`; return their masks."""
        pad = length - len(self.ids)
        if pad < 0:
            raise SIAError("A new row's prompt is longer than the rows already generating.")
        for layer, (keys, values) in zip(cache.layers, self.layers, strict=True):
            padded = [torch.nn.functional.pad(t, (0, 0, pad, 0)).expand(count, -1, -1, -1) for t in (keys, values)]
            if live_rows == 0 or not layer.is_initialized or layer.keys.numel() == 0:
                layer.keys, layer.values = padded[0].contiguous(), padded[1].contiguous()
            else:
                layer.keys = torch.cat([layer.keys, padded[0]])
                layer.values = torch.cat([layer.values, padded[1]])
        mask = torch.zeros((count, length), dtype=torch.long, device=self.ids.device)
        mask[:, pad:] = 1
        return mask
