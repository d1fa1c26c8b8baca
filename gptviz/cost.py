"""Analytic cost model: FLOPs per decoding step and KV-cache bytes.

FLOPs count a multiply-add as 2. Per token and layer, GPT-2's matmuls cost 24·d²
(QKV 6d², output projection 2d², MLP 16d²); attention over k keys costs 4·k·d
(scores and weighted sum). Eager attention scores every (query, key) pair and then
masks, so a full-sequence pass over t tokens pays 4·t²·d per layer, and a cached step over a
StaticCache pays for every preallocated slot, written or not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from gptviz import packed
from gptviz.modes import Mode

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


@dataclass(frozen=True)
class Shape:
    layers: int  # transformer blocks
    heads: int  # attention heads per block
    d_model: int  # hidden size (heads * head_dim)
    vocab: int  # vocabulary size (the output projection's width)
    context: int = 1024  # maximum positions

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @classmethod
    def of(cls, model) -> Shape:
        c = model.config
        return cls(c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.n_positions)


def kv_bytes(layers: int, heads: int, head_dim: int, tokens: int, bytes_per_value: int) -> int:
    """Keys + values held for ``tokens`` positions: 2 · layers · heads · head_dim · t · bytes.

    GPT-2 small (12 layers, 12 heads of 64) in float32 holds 72 KiB per token:

    >>> kv_bytes(12, 12, 64, tokens=1, bytes_per_value=4) // 1024
    72
    """
    return 2 * layers * heads * head_dim * tokens * bytes_per_value


def layer_flops(shape: Shape, queries: int, keys: int) -> int:
    """One block: ``queries`` new positions attending over ``keys`` positions each."""
    d = shape.d_model
    return queries * 24 * d * d + 4 * queries * keys * d


def step_flops(shape: Shape, mode: Mode | str, context_len: int, input_len: int | None = None,
               slots: int | None = None) -> int:
    """FLOPs of one decoding step that attends over ``context_len`` tokens.

    cached: ``input_len`` new tokens (the prompt at prefill, then 1), a logit row for each of them
    (the prefill projects every prompt position, as the cached decoder asks the model for all logits).
    recompute: all ``context_len`` tokens, logits for every position.
    recompute_last: all tokens, logits for the last position only (``logits_to_keep=1``).
    ``slots``: the keys each cached query scores when a StaticCache preallocated them (attention scores every
    slot and masks the unused ones); None for a growing cache (the tokens so far).
    Checked against torch.utils.flop_counter.FlopCounterMode on a real GPT-2 forward pass (tests).
    """
    t = context_len
    if mode == Mode.CACHED:
        q = t if input_len is None else input_len
        return shape.layers * layer_flops(shape, q, slots or t) + 2 * shape.d_model * shape.vocab * q
    rows = t if mode == Mode.RECOMPUTE else 1
    return shape.layers * layer_flops(shape, t, t) + 2 * shape.d_model * shape.vocab * rows


def run_flops(shape: Shape, mode: str, steps, slots: int | None = None) -> int:
    """FLOPs of a whole decode in ``mode`` over a cached trace's ``steps`` (their context and input lengths;
    ``slots`` as in step_flops). The ratio of two modes is the speed-up that arithmetic alone predicts."""
    return sum(step_flops(shape, mode, s.context_len, s.input_len, slots) for s in steps)


@dataclass(frozen=True)
class FlopsRatio:
    """A run's FLOPs in one mode against the cached decode of the same steps: the speed-up that arithmetic alone
    predicts, on any machine."""

    mode_flops: int  # FLOPs of the whole decode in the compared mode
    cached_flops: int  # FLOPs of the cached decode of the same steps

    @property
    def ratio(self) -> float:
        return self.mode_flops / self.cached_flops

    @classmethod
    def of(cls, shape: Shape, trace, mode: Mode = Mode.RECOMPUTE) -> FlopsRatio:
        """``trace``: the cached trace (its steps, and a static cache's slots)."""
        return cls(run_flops(shape, mode, trace.steps), run_flops(shape, Mode.CACHED, trace.steps, trace.slots))


def weight_bytes(model) -> int:
    """Bytes of distinct parameters (tied embeddings counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def trace_bytes(layers: int, heads: int, tokens: int) -> int:
    """Stored attention of one trace: packed lower triangle in float16."""
    return layers * heads * packed.size(tokens) * 2


def run_memory_bytes(shape: Shape, tokens: int, bytes_per_value: int) -> int:
    """Peak memory a run holds for attention: two stored fp16 traces plus a working copy per mode in
    the compute dtype while the three modes decode in lockstep (the later timed passes)."""
    entries = shape.layers * shape.heads * packed.size(tokens)
    return 2 * entries * 2 + 3 * entries * bytes_per_value


@dataclass(frozen=True)
class Bandwidth:
    read: float  # bytes per second streamed by a read-only pass (a sum): what a decode step does to its weights
    copy: float  # bytes per second of a copy, read + write counted, for reference


def measure_bandwidth(nbytes: int = 64 * 2**20, repeats: int = 3) -> Bandwidth:
    """This machine's memory bandwidth, best of ``repeats`` over a ``nbytes`` float32 tensor."""
    source = torch.ones(nbytes // 4, dtype=torch.float32)  # (n,) 4-byte values
    target = torch.empty_like(source)
    size = source.numel() * source.element_size()
    read = copy = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        source.sum()
        read = min(read, time.perf_counter() - start)
        start = time.perf_counter()
        target.copy_(source)
        copy = min(copy, time.perf_counter() - start)
    return Bandwidth(read=size / read, copy=2 * size / copy)


def step_floor_seconds(weight_bytes: int, bandwidth: Bandwidth) -> float:
    """The least time a cached decode step can take: every weight is read from memory once per token.

    >>> step_floor_seconds(500 * 10**6, Bandwidth(read=25e9, copy=20e9))
    0.02
    """
    return weight_bytes / bandwidth.read
