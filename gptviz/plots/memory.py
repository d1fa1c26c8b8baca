"""The KV cache: bytes per layer, dynamic vs static, what if the model were bigger."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from gptviz import cost, display
from gptviz.plots._base import (
    ALLOCATED_COLOR,
    GREY,
    HELD_COLOR,
    SERIES_COLORS,
    _from_zero,
    _layout,
    _log_axis,
)
from gptviz.settings import positions

# ---- KV cache -------------------------------------------------------------------------------------

def kv_per_layer(run) -> go.Figure:
    """Bytes of keys+values per layer after each step, stacked, with the formula 2·L·H·d·t·bytes on top."""
    trace = run.cached
    bytes_per_value = cost.DTYPE_BYTES[trace.dtype]
    steps = [s.index for s in trace.steps]
    formula = [cost.kv_bytes(trace.layers, trace.heads, trace.head_dim, s.context_len, bytes_per_value)
               for s in trace.steps]
    name, size = display.byte_unit(max(formula))
    fig = go.Figure()
    for layer in range(trace.layers):
        fig.add_trace(go.Bar(x=steps, y=[s.kv_bytes[layer] / size for s in trace.steps], name=f"layer {layer}",
                             marker_color=SERIES_COLORS[layer % len(SERIES_COLORS)]))
    fig.add_trace(go.Scatter(x=steps, y=[f / size for f in formula], mode="markers",
                             name="formula 2·layers·heads·head_dim·t·bytes",
                             marker={"symbol": "diamond-open", "size": 10, "color": GREY, "line": {"width": 2}}))
    return _layout(fig, "KV-cache size per layer after each step (measured), formula on top", barmode="stack",
                   xaxis_title="step", yaxis_title=name)


def kv_allocation(run) -> go.Figure:
    """Memory in use vs allocated by this run's cache (measured), and the other kind's by formula.

    Lines that would lie exactly on top of another are not drawn, so the legend lists what is visible.
    """
    trace = run.cached
    bytes_per_value = cost.DTYPE_BYTES[trace.dtype]
    steps = [s.index for s in trace.steps]
    max_len = positions(trace.prompt_len, len(trace.steps))  # what decode_cached preallocates
    per_token = cost.kv_bytes(trace.layers, trace.heads, trace.head_dim, 1, bytes_per_value)
    allocated = [sum(s.kv_allocated) for s in trace.steps]
    held = [sum(s.kv_bytes) for s in trace.steps]
    name, size = display.byte_unit(max(allocated + [per_token * max_len]))
    fig = go.Figure()
    if allocated != held:
        fig.add_trace(go.Scatter(x=steps, y=[a / size for a in allocated], mode="lines+markers",
                                 name=f"measured: allocated ({trace.cache_kind})",
                                 line={"color": ALLOCATED_COLOR}))
    fig.add_trace(go.Scatter(x=steps, y=[h / size for h in held], mode="lines+markers",
                             name="measured: holding real tokens" if allocated != held
                             else f"measured: allocated = holding real tokens ({trace.cache_kind})",
                             line={"color": HELD_COLOR}))
    if trace.cache_kind != "dynamic":
        fig.add_trace(go.Scatter(x=steps, y=[per_token * s.context_len / size for s in trace.steps], mode="lines",
                                 name="a dynamic cache would grow by torch.cat",
                                 line={"dash": "dot", "color": GREY}))
    if trace.cache_kind != "static":
        fig.add_trace(go.Scatter(x=steps, y=[per_token * max_len / size] * len(steps), mode="lines",
                                 name=f"a static cache would reserve {max_len} tokens",
                                 line={"dash": "dash", "color": ALLOCATED_COLOR}))
    _from_zero(fig)
    return _layout(fig, "Dynamic growth vs static preallocation", xaxis_title="step", yaxis_title=name)


def kv_what_if(shapes: dict[str, cost.Shape], tokens: int, dtype: str = "float32") -> go.Figure:
    """KV-cache size vs context length for GPT-2 sizes (e.g. registry.SHAPES), one line each, log axis."""
    if not shapes:
        raise ValueError("no model shapes given; pass e.g. gptviz.registry.SHAPES.")
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a whole number ≥ 1, got {tokens!r}.")
    bytes_per_value = cost.DTYPE_BYTES.get(dtype)
    if bytes_per_value is None:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(cost.DTYPE_BYTES)}.")
    x = np.unique(np.linspace(1, tokens, 64).round().astype(int))
    lines = {name: [cost.kv_bytes(s.layers, s.heads, s.head_dim, int(t), bytes_per_value) for t in x]
             for name, s in shapes.items()}
    unit, size = display.WHAT_IF_UNIT  # the table beside it (ui_state.what_if_table) shows the same unit
    fig = go.Figure()
    for i, (name, y) in enumerate(lines.items()):
        fig.add_trace(go.Scatter(x=x, y=[v / size for v in y], mode="lines", name=name,
                                 line={"color": SERIES_COLORS[i % len(SERIES_COLORS)]}))
    every = [v / size for y in lines.values() for v in y]
    return _layout(fig, f"KV cache for one sequence ({dtype})", xaxis_title="tokens in context",
                   yaxis=_log_axis(unit, every))
