"""Equivalence checks between decoding modes, and past-state drift with and without the mask."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gptviz import packed
from gptviz.modes import Mode

TOP_OVERLAP_K = 5  # top-k overlap is measured on this many tokens
KL_CHUNK = 16  # steps whose KL divergence is computed together


def logit_metrics(reference: torch.Tensor, other: torch.Tensor, k: int = TOP_OVERLAP_K) -> pd.DataFrame:
    """Per step: max |Δlogit|, argmax agreement, top-k overlap, KL(reference ‖ other).

    Both are (steps, vocab) last-position logits in the compute dtype; the KL is taken in float64.
    """
    # Row by row chunks (see below): a (steps, vocab) difference at once is 2 x 51 MB at 256 GPT-2 steps.
    delta = torch.cat([(reference[a:a + KL_CHUNK] - other[a:a + KL_CHUNK]).abs().amax(dim=-1)
                       for a in range(0, len(reference), KL_CHUNK)])  # (steps,)
    argmax_equal = reference.argmax(-1) == other.argmax(-1)
    top_ref, top_other = reference.topk(k).indices, other.topk(k).indices  # (steps, k)
    overlap = [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top_ref, top_other, strict=False)]
    # A few steps at a time: float64 temporaries of every step at once would be ~0.5 GB at
    # 256 steps of a 50k vocabulary, the largest allocation of a whole session. Rows are independent.
    # A lone last row would be summed by a different kernel path (last-bit differences): fold it into the chunk before.
    starts = [i for i in range(0, len(reference), KL_CHUNK) if i == 0 or len(reference) - i > 1] + [len(reference)]
    kl = torch.cat([_kl(reference[a:b], other[a:b]) for a, b in zip(starts, starts[1:], strict=False)])
    return pd.DataFrame({"max_abs_dlogit": delta.double().numpy(), "argmax_equal": argmax_equal.numpy(),
                         "topk_overlap": overlap, "kl": kl.numpy()})


def _kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    log_p, log_q = reference.double().log_softmax(-1), other.double().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0)  # rounding can dip below 0


def attention_row_deltas(cached, recompute) -> np.ndarray:
    """Per step: max |Δ| between the rows the cached mode computed and the recompute map's same rows."""
    out = []
    for step in cached.steps:
        last = step.context_len  # rows first..last-1 were computed this step
        first = last - step.input_len
        lo, hi = packed.span(first, last)
        out.append((cached.attention[..., lo:hi] - recompute.attention[..., lo:hi]).abs().max().item())
    return np.array(out)


def step_table(tapes: dict, attention_delta: np.ndarray | None = None) -> pd.DataFrame:
    """One row per step: the token, then every mode's agreement with the cached mode."""
    cached = tapes[Mode.CACHED]
    table = pd.DataFrame({"step": [s.index for s in cached.steps], "token_id": [s.token_id for s in cached.steps],
                          "context_len": [s.context_len for s in cached.steps]})
    reference = cached.logits  # (steps, vocab)
    for mode, tape in tapes.items():
        table[f"{mode}_seconds"] = [s.seconds for s in tape.steps]
        if mode == Mode.CACHED:
            continue
        metrics = logit_metrics(reference, tape.logits)
        for column in metrics:
            table[column + Mode(mode).suffix] = metrics[column].to_numpy()
        if mode == Mode.RECOMPUTE:
            table["slice_delta"] = [s.slice_delta for s in tape.steps]
    if attention_delta is not None:
        table["attn_row_delta"] = attention_delta
    table["kv_bytes"] = [sum(s.kv_bytes) for s in cached.steps]
    table["kv_allocated"] = [sum(s.kv_allocated) for s in cached.steps]
    return table


def summarize(run) -> dict:
    """The headline numbers of a run, all read off its traces."""
    t, c = run.comparison, run.cached
    out = {
        "steps": len(c.steps), "prompt_tokens": c.prompt_len, "dtype": c.dtype,
        "cached_seconds": float(t["cached_seconds"].sum()),
        "kv_cache_bytes": int(t["kv_bytes"].iloc[-1]),
        "kv_cache_allocated": int(t["kv_allocated"].iloc[-1]),
    }
    if "recompute_seconds" in t:
        out.update({
            "same_tokens": run.recompute.token_ids == c.token_ids,
            "max_abs_dlogit": float(t["max_abs_dlogit"].max()),
            "argmax_agreement": float(t["argmax_equal"].mean()),
            "recompute_seconds": float(t["recompute_seconds"].sum()),
            "speedup": float(t["recompute_seconds"].sum() / max(t["cached_seconds"].sum(), 1e-12)),
        })
        if "slice_delta" in t and t["slice_delta"].notna().any():
            out["max_slice_delta"] = float(t["slice_delta"].dropna().max())
        if "attn_row_delta" in t:
            out["max_attn_row_delta"] = float(t["attn_row_delta"].max())
    return out


@torch.no_grad()
def hidden_state_drift(model, token_ids: list[int], causal: bool = True, points: int = 16) -> pd.DataFrame:
    """How far past positions' hidden states move when one more token is appended.

    For up to ``points`` prefix lengths t, run the model on the first t and t+1 tokens and take,
    per layer (0 = embeddings), the max |h_{t+1}[i] - h_t[i]| over past positions i < t. With the
    causal mask this is ~0 (a past position cannot see the new token); with ``causal=False``
    (bidirectional attention) every past state changes.
    """
    ids = torch.tensor(token_ids, dtype=torch.long)[None]  # (1, T)
    total = ids.shape[1]
    if total < 3:
        raise ValueError("drift needs at least 3 tokens: a prefix of 2 and one appended token")
    lengths = sorted(set(np.linspace(2, total - 1, num=min(points, total - 2)).round().astype(int).tolist()))
    rows = []
    for t in lengths:
        before = model(ids[:, :t], output_hidden_states=True, is_causal=causal).hidden_states
        after = model(ids[:, : t + 1], output_hidden_states=True, is_causal=causal).hidden_states
        for layer, (h0, h1) in enumerate(zip(before, after, strict=False)):  # each (1, t or t+1, d_model)
            rows.append({"prefix_len": t, "layer": layer, "causal": causal,
                         "drift": (h1[0, :t] - h0[0, :t]).abs().max().item()})
    return pd.DataFrame(rows)
