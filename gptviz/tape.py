"""Tape: what one decoder records step by step (a Step each, last-position logits, packed attention rows).

Attention lives in a packed lower triangle while decoding; rows a pass re-derives that are already stored
(the recompute mode re-derives every past row) are compared with the stored ones, which is the proof that
the recompute map at step s is the top-left block of the final map (gptviz/packed.py holds the maths).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gptviz import packed
from gptviz.modes import Mode
from gptviz.settings import positions
from gptviz.trace import Step, Trace

TOP_LOGITS = 10  # logits kept per step in a trace


class Tape:
    """Collects one decoder's steps; keeps attention rows packed and checks re-computed rows.

    Attention lives in a packed lower triangle (layers, heads, T(T+1)/2) in the compute
    dtype while decoding. Rows a forward pass produces that are already stored (the
    recompute mode re-derives every past row) are compared with the stored ones: that max
    |Δ| is the step's ``slice_delta``. Rows not yet stored are appended.
    """

    def __init__(self, model, prompt_ids: torch.Tensor, steps: int, mode: str, record_attention: bool,
                 on_step: Callable | None, keep_logits: bool = True):
        c = model.config
        self.mode, self.on_step, self.prompt_len = mode, on_step, len(prompt_ids)
        self.layers, self.heads, self.head_dim = c.n_layer, c.n_head, c.n_embd // c.n_head
        self.sequence = prompt_ids.clone()  # (t,) prompt + tokens chosen so far
        self.steps: list[Step] = []
        self.keep_logits = keep_logits  # False: a timing pass of a mode already compared (no use for its logits)
        self._logits: torch.Tensor | None = None  # (steps, vocab) last-position logits, filled row by row
        self.dtype = next(model.parameters()).dtype  # the compute dtype (of the logits, kept or not)
        self.max_steps = steps
        self.total_rows = positions(len(prompt_ids), steps)  # T: the last token chosen is never fed
        self.rows_stored = 0
        self.attention = None
        if record_attention:
            self.attention = torch.zeros(c.n_layer, c.n_head, packed.size(self.total_rows),
                                         dtype=self.dtype)  # (layers, heads, packed)
            self.tril = packed.indices(self.total_rows)  # (2, packed): row and column of each entry

    def _store_rows(self, weights: list[torch.Tensor]) -> float | None:
        """Compare rows already stored, append new ones; weights[l] is (1, heads, q, k)."""
        q, k = weights[0].shape[2], weights[0].shape[3]
        first = len(self.sequence) - q  # row index of the first query position in this pass
        end = first + q
        (lo, hi), mid = packed.span(first, end), packed.size(self.rows_stored)
        flat = packed.offsets(self.tril, first, end, k)  # packed entries' offsets in a q x k map
        # One index_select per layer into one buffer: ~5x faster than 2-D fancy indexing plus a stack,
        # which mattered for the recompute mode's overhead (all t(t+1)/2 rows are gathered every step).
        block = torch.empty(len(weights), self.heads, hi - lo, dtype=weights[0].dtype)  # (layers, heads, packed)
        for layer, w in enumerate(weights):
            torch.index_select(w[0].reshape(self.heads, q * k), 1, flat, out=block[layer])
        split = mid - lo
        delta = None
        if split > 0:
            delta = (block[..., :split] - self.attention[..., lo:mid]).abs().max().item()
        self.attention[..., mid:hi] = block[..., split:]
        self.rows_stored = max(self.rows_stored, end)
        return delta

    def add(self, step: int, rec, logits: torch.Tensor, token: torch.Tensor,
            kv: tuple[list[int], list[int]] | None = None) -> None:
        input_len = len(self.sequence) if (step == 0 or self.mode != Mode.CACHED) else 1
        delta = None
        if self.attention is not None and step < self.total_rows - self.prompt_len + 1:
            delta = self._store_rows(rec.attention)
        top = logits.topk(TOP_LOGITS)
        used, allocated = kv if kv is not None else ([0] * self.layers, [0] * self.layers)
        self.steps.append(Step(
            index=step, token_id=int(token), token_text="", input_len=input_len, context_len=len(self.sequence),
            seconds=rec.seconds, layer_seconds=list(rec.layer_seconds), kv_bytes=used, kv_allocated=allocated,
            top_ids=top.indices.tolist(), top_logits=top.values.tolist(), slice_delta=delta,
            pass_seconds=[rec.seconds],
        ))
        if self.keep_logits:
            if self._logits is None:  # one buffer: no per-step clones to stack into a second copy later
                self._logits = torch.empty(self.max_steps, logits.shape[-1], dtype=logits.dtype)
            self._logits[step] = logits
        self.sequence = torch.cat([self.sequence, token.view(1)])
        if self.on_step is not None:
            self.on_step(self.mode, step, int(token))

    @property
    def logits(self) -> torch.Tensor:
        """(steps so far, vocab) last-position logits in the compute dtype, for comparisons."""
        if not self.keep_logits:
            raise ValueError(f"this {self.mode} tape kept no logits (keep_logits=False)")
        return self._logits[: len(self.steps)]

    def compact(self, keep_attention: bool = True) -> None:
        """Drop the working copy of attention: float16 for storage, or nothing."""
        if self.attention is not None:
            self.attention = self.attention.to(torch.float16) if keep_attention else None

    def to_trace(self, model_name: str, tokenizer, cache_kind: str | None) -> Trace:
        """The stored form: token texts filled in, attention packed in float16."""
        for s in self.steps:
            s.token_text = tokenizer.decode([s.token_id])
            s.top_texts = [tokenizer.decode([i]) for i in s.top_ids]
        prompt_ids = self.sequence[: self.prompt_len].tolist()
        return Trace(
            mode=self.mode, model_name=model_name, dtype=str(self.dtype).removeprefix("torch."),
            cache_kind=cache_kind, prompt_ids=prompt_ids,
            prompt_tokens=[tokenizer.decode([i]) for i in prompt_ids], layers=self.layers, heads=self.heads,
            head_dim=self.head_dim, steps=self.steps,
            attention=None if self.attention is None else self.attention.to(torch.float16),
        )
