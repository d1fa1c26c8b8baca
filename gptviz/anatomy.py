"""Look inside a loaded GPT-2 and at a Run: shapes, weight tying, the logit lens, growth fits.

(Named anatomy, not inspect: a module called inspect shadows the standard library's.)

Small, Streamlit-free helpers behind the app's "Inside GPT-2", "KV cache" and "Timing" views;
every number they return is read off the live model or the run's traces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gptviz import cost


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


def growth_fit(run) -> pd.DataFrame:
    """How each mode's cost grows: per-step time vs tokens (flat or linear), total vs steps (linear or quadratic).

    Decode steps only (the prefill pass is a different kind of work). Per mode: the slope of a straight
    line through per-step seconds vs context length, the median of the last quarter of steps over the
    median of the first quarter (robust to a few noisy steps), and the quadratic and linear terms of
    cumulative seconds vs step count.
    """
    table = run.comparison
    decode = table[table["step"] > 0]
    if len(decode) < 3:
        raise ValueError(f"fitting growth needs at least 3 decode steps, the run has {len(decode)}: "
                         "generate at least 4 new tokens.")
    rows = []
    for mode in run.traces:
        seconds = decode[f"{mode}_seconds"].to_numpy()
        x = decode["context_len"].to_numpy(dtype=float)
        slope, _ = np.polyfit(x, seconds, 1)
        quarter = max(len(seconds) // 4, 1)
        first, last = np.median(seconds[:quarter]), np.median(seconds[-quarter:])
        steps = np.arange(1, len(seconds) + 1, dtype=float)
        quadratic, linear, _ = np.polyfit(steps, np.cumsum(seconds), 2)
        rows.append({"mode": mode, "seconds_per_extra_token": slope, "first_steps_median": first,
                     "last_steps_median": last, "per_step_growth": last / max(first, 1e-12),
                     "total_quadratic_term": quadratic, "total_linear_term": linear})
    return pd.DataFrame(rows)
