"""Look inside a loaded GPT-2 and at a Run: shapes, weight tying, the logit lens, growth fits.

(Named anatomy, not inspect: a module called inspect shadows the standard library's.)

Small, Streamlit-free helpers behind the app's "Inside GPT-2", "KV cache" and "Timing" views;
every number they return is read off the live model or the run's traces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gptviz import cost
from gptviz.modes import Mode


def parameter_shapes(model) -> pd.DataFrame:
    """One row per distinct weight of the embeddings, block 0 and the head (blocks repeat)."""
    rows = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if ".h." in name and ".h.0." not in name:
            continue  # every block has block 0's shapes
        rows.append({"name": name, "shape": str(tuple(p.shape)), "parameters": p.numel(), "dtype": str(p.dtype)})
    return pd.DataFrame(rows)


@torch.no_grad()
def tied_embeddings(model) -> dict:
    """Is the output projection the token embedding? Proven three ways on the live model."""
    head, embedding = model.lm_head.weight, model.transformer.wte.weight
    return {
        "same_object": head is embedding,  # one Parameter registered twice
        "same_memory": head.data_ptr() == embedding.data_ptr(),  # no copy anywhere
        "max_abs_difference": float((head - embedding).abs().max()),
        "shape": tuple(head.shape),  # (vocab, d_model)
        "saved_parameters": head.numel() if head is embedding else 0,
    }


@torch.no_grad()
def logit_lens(model, tokenizer, text: str, k: int = 5) -> pd.DataFrame:
    """The last position's hidden state after each layer, projected onto the vocabulary.

    Layer 0 is the embeddings; the last layer's projection is exactly the model's logits.
    Returns rows (layer, rank, token_id, token, probability).
    """
    ids = tokenizer(text)["input_ids"]
    if not ids:
        raise ValueError("the text is empty: give at least one token to look inside the model.")
    context = model.config.n_positions
    ids = torch.tensor(ids[-context:], dtype=torch.long)[None]  # (1, t): keep the last `context` tokens
    out = model(ids, output_hidden_states=True)
    states = out.hidden_states  # layers + 1 tensors of (1, t, d_model); the last already has ln_f applied
    rows = []
    for layer, h in enumerate(states):
        last = h[0, -1]  # (d_model,)
        if layer < len(states) - 1:
            last = model.transformer.ln_f(last)
        probs = model.lm_head(last).double().softmax(-1)  # (vocab,)
        top = probs.topk(k)
        for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
            rows.append({"layer": layer, "rank": rank, "token_id": i, "token": tokenizer.decode([i]),
                         "probability": p})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class KVTotals:
    """The cached run's KV cache after its last step, measured and by formula (cost.kv_bytes)."""

    measured: int  # bytes of keys + values holding real tokens, read off the cache tensors
    formula: int  # 2 · layers · heads · head_dim · tokens · bytes per value
    allocated: int  # bytes the cache had allocated (a static cache: the whole length)
    per_token: int  # the formula for one token

    @classmethod
    def of(cls, trace) -> KVTotals:
        last, value_bytes = trace.steps[-1], cost.DTYPE_BYTES[trace.dtype]
        return cls(measured=sum(last.kv_bytes), allocated=sum(last.kv_allocated),
                   formula=cost.kv_bytes(trace.layers, trace.heads, trace.head_dim, last.context_len, value_bytes),
                   per_token=cost.kv_bytes(trace.layers, trace.heads, trace.head_dim, 1, value_bytes))


def kv_layout(run) -> pd.DataFrame:
    """The cached run's per-layer key/value tensor shapes after its last step, as the cache held them."""
    trace = run.cached
    last = trace.steps[-1]
    shape = cost.Shape(trace.layers, trace.heads, trace.heads * trace.head_dim, 0)
    bytes_per_value = cost.DTYPE_BYTES[trace.dtype]
    per_slot = 2 * shape.heads * shape.head_dim * bytes_per_value  # keys + values of one position, one layer
    rows = []
    for layer in range(trace.layers):
        held, slots = last.kv_bytes[layer] // per_slot, last.kv_allocated[layer] // per_slot
        rows.append({"layer": layer, "keys": f"[1, {shape.heads}, {slots}, {shape.head_dim}]",
                     "values": f"[1, {shape.heads}, {slots}, {shape.head_dim}]", "tokens held": held,
                     "slots allocated": slots, "bytes allocated": last.kv_allocated[layer]})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Growth:
    """How one mode's cost grows with the text, fitted over the decode steps (the prefill is other work)."""

    mode: Mode
    seconds_per_extra_token: float  # slope of per-step seconds vs tokens in context (flat ≈ 0)
    first_steps_median: float  # median seconds of the first quarter of decode steps
    last_steps_median: float  # median seconds of the last quarter (robust to a few noisy steps)
    quadratic: float  # total seconds after n decode steps ≈ quadratic·n² + linear·n + constant
    linear: float
    constant: float
    cumulative: np.ndarray  # (decode steps,) measured total seconds after each decode step

    @property
    def per_step_growth(self) -> float:
        """Last quarter's median step over the first quarter's: ≈1 is flat, more is growing."""
        return self.last_steps_median / max(self.first_steps_median, 1e-12)

    def total_fit(self, n: np.ndarray) -> np.ndarray:
        """The fitted total seconds after ``n`` decode steps."""
        return np.polyval([self.quadratic, self.linear, self.constant], n)


def growth_fit(comparison) -> list[Growth]:
    """Per mode of a ``compare.Comparison``: how per-step and total time grow (np.polyfit)."""
    decoding = comparison.decoding
    if decoding.sum() < 3:
        raise ValueError(f"fitting growth needs at least 3 decode steps, the run has {decoding.sum()}: "
                         "generate at least 4 new tokens.")
    context = comparison.context_len[decoding].astype(float)
    fits = []
    for mode, all_seconds in comparison.seconds.items():
        seconds = all_seconds[decoding]
        slope, _ = np.polyfit(context, seconds, 1)
        quarter = max(len(seconds) // 4, 1)
        cumulative = np.cumsum(seconds)
        quadratic, linear, constant = np.polyfit(np.arange(1, len(seconds) + 1, dtype=float), cumulative, 2)
        fits.append(Growth(mode, float(slope), float(np.median(seconds[:quarter])),
                           float(np.median(seconds[-quarter:])), float(quadratic), float(linear), float(constant),
                           cumulative))
    return fits
