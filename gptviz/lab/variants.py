"""Run a cache variant beside the exact cache: teacher-forced on the exact tokens, and free-running.

The two loops differ in one line: ``forced`` feeds the exact run's tokens (so every step compares like
for like), ``greedy`` feeds its own choices (so we see where its text first parts from the exact one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch

from gptviz import compare, cost
from gptviz.lab.caches import build, measured_bytes
from gptviz.lab.settings import Variant


@torch.no_grad()
def greedy(model, prompt_ids: list[int], steps: int, cache) -> tuple[list[int], torch.Tensor, list[int]]:
    """Its own argmax choices: (tokens, logits (steps, vocab), cache bytes after each step)."""
    ids, tokens, rows, sizes = torch.tensor([prompt_ids]), [], [], []  # ids: (1, prompt) then (1, 1)
    for _ in range(steps):
        rows.append(model(ids, past_key_values=cache, use_cache=True).logits[0, -1])  # (vocab,)
        sizes.append(measured_bytes(cache))
        tokens.append(int(rows[-1].argmax()))
        ids = torch.tensor([[tokens[-1]]])  # (1, 1): only the new token goes in
    return tokens, torch.stack(rows), sizes


@torch.no_grad()
def forced(model, prompt_ids: list[int], tokens: list[int], cache) -> tuple[torch.Tensor, list[int]]:
    """The logits for ``tokens`` fed one by one (teacher forcing): (logits (steps, vocab), bytes per step)."""
    ids, rows, sizes = torch.tensor([prompt_ids]), [], []
    for token in tokens:
        rows.append(model(ids, past_key_values=cache, use_cache=True).logits[0, -1])  # (vocab,)
        sizes.append(measured_bytes(cache))
        ids = torch.tensor([[token]])  # (1, 1): the exact run's token, whatever this cache would choose
    return torch.stack(rows), sizes


@dataclass
class Deltas:
    max_abs: list[float]  # per step: max |Δlogit| against the reference
    kl: list[float]  # per step: KL(reference ‖ other) in nats
    agrees: list[bool]  # per step: other's argmax == reference's argmax


def deltas(reference: torch.Tensor, other: torch.Tensor) -> Deltas:
    """Per-step differences of two (steps, vocab) logit tensors, computed in float64."""
    ref, oth = reference.double(), other.double()
    return Deltas((ref - oth).abs().amax(-1).tolist(), compare.kl_per_step(ref, oth).tolist(),
                  (ref.argmax(-1) == oth.argmax(-1)).tolist())


def formula_bytes(variant: Variant, config, value_bytes: int, tokens: int, prompt: int) -> int:
    """What ``variant``'s cache holds after ``tokens`` positions (``prompt`` of them prefilled at once),
    from the model's shape alone."""
    layers, heads, head_dim = config.n_layer, config.n_head, config.n_embd // config.n_head
    kind = variant.kind
    if kind == "window":
        return cost.kv_bytes(layers, heads, head_dim, min(tokens, variant.window - 1), value_bytes)
    if kind == "sinks":
        return cost.kv_bytes(layers, heads, head_dim, min(tokens, variant.sinks + variant.window - 1), value_bytes)
    if kind == "gqa":
        return cost.kv_bytes(layers, variant.groups, head_dim, tokens, value_bytes)
    if kind == "fp8":  # one byte a value, plus one float32 scale for keys and one for values per layer
        return cost.kv_bytes(layers, heads, head_dim, tokens, 1) + 2 * layers * 4
    if kind == "quanto":
        return _quanto_bytes(variant, layers, heads, head_dim, value_bytes, tokens, prompt)
    return cost.kv_bytes(layers, heads, head_dim, tokens, value_bytes)


def _quanto_bytes(variant: Variant, layers: int, heads: int, head_dim: int, value_bytes: int, tokens: int,
                  prompt: int) -> int:
    """Per layer, keys and values each: rows of ``q_group_size`` values packed 8/nbits rows to a byte (row count
    rounded up), a scale and a zero-point per row in the states' own dtype, plus the residual kept unquantized."""
    residual = _residual_tokens(variant.residual_length, tokens, prompt)
    rows = heads * (tokens - residual) * head_dim // variant.q_group_size  # groups in one K (or V) tensor
    per_byte = 8 // variant.nbits
    packed = -(-rows // per_byte) * variant.q_group_size  # ceil(rows / per_byte) packed rows
    return 2 * layers * (packed + rows * 2 * value_bytes) + cost.kv_bytes(layers, heads, head_dim, residual,
                                                                          value_bytes)


def _residual_tokens(residual_length: int, tokens: int, prompt: int) -> int:
    """Tokens in QuantizedLayer's full-precision residual: the prefill is quantized at once, then one token
    a step joins the residual until it would reach ``residual_length`` and everything is re-quantized."""
    return (tokens - prompt) % residual_length


@dataclass
class VariantResult:
    variant: Variant
    deltas: Deltas  # teacher-forced, against the exact run
    bytes_measured: list[int]  # per step, read off the cache object's tensors (scales and residuals included)
    bytes_formula: list[int]  # per step, from the model's shape
    free_tokens: list[int]  # its own greedy choices
    first_divergence: int | None  # first step where the free run's token differs from the exact run's
    free_text: str
    seconds: float  # teacher-forced + free run

    def to_frame(self) -> pd.DataFrame:
        d = self.deltas
        return pd.DataFrame({"variant": self.variant.name, "step": range(len(d.max_abs)), "max_abs_dlogit": d.max_abs,
                             "kl": d.kl, "argmax_agrees": d.agrees, "bytes_measured": self.bytes_measured,
                             "bytes_formula": self.bytes_formula})


def run_variant(model, tokenizer, variant: Variant, prompt_ids: list[int], exact_tokens: list[int],
                exact_logits: torch.Tensor) -> VariantResult:
    started = time.perf_counter()
    logits, sizes = forced(model, prompt_ids, exact_tokens, build(variant, model.config))
    free, _, _ = greedy(model, prompt_ids, len(exact_tokens), build(variant, model.config))
    seconds = time.perf_counter() - started
    value_bytes = next(model.parameters()).element_size()
    formula = [formula_bytes(variant, model.config, value_bytes, len(prompt_ids) + i, len(prompt_ids))
               for i in range(len(sizes))]
    parted = next((i for i, (a, b) in enumerate(zip(free, exact_tokens, strict=True)) if a != b), None)
    return VariantResult(variant, deltas(exact_logits, logits), sizes, formula, free, parted,
                         tokenizer.decode(free), seconds)
