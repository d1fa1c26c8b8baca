"""Pure plotting functions: a Run, Trace or DataFrame in, a plotly Figure out.

No model is touched here and nothing is drawn until a caller shows the figure, so the
same functions serve the app, notebooks and tests. Colours are fixed mid-tones that
read on light and dark backgrounds; inputs that cannot be drawn fail at once with a
message that says what to pass instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from gptviz import anatomy, cost
from gptviz.modes import Mode
from gptviz.trace import Trace

LAYER_COLORS = ["#3B82F6", "#F97316", "#22A06B", "#E11D48", "#8B5CF6", "#0EA5E9", "#EAB308", "#EC4899",
                "#14B8A6", "#A3A3A3", "#84CC16", "#6366F1"]
NEW_ROW_COLOR = "#E11D48"  # the row a step computes for the first time
COVER_COLOR = "rgba(128,128,128,0.85)"  # hides future rows; grey reads on light and dark themes
ATTENTION_SCALE = "Viridis"
LABELLED_SCALE = [[0, "#1E1B4B"], [1, "#0E7490"]]  # dark to mid only, so white cell text stays legible
MAX_ANIMATION_FRAMES = 64


# ---- checks that fail early with the fix ---------------------------------------------------------

def _needs(run, mode: str) -> Trace:
    if mode not in run.traces:
        raise ValueError(f"this run has no '{mode}' trace (it ran {sorted(run.traces)}); decode with "
                         f"DecodeSettings(modes=('cached', '{mode}', ...)) to plot it.")
    return run.traces[mode]


def _attention_of(trace: Trace) -> None:
    if trace.attention is None:
        raise ValueError(f"the {trace.mode} trace kept no attention maps; decode with "
                         "DecodeSettings(record_attention=True) to plot attention.")


def _index(name: str, value: int, count: int) -> int:
    if not isinstance(value, (int, np.integer)) or not 0 <= value < count:
        raise ValueError(f"{name} must be a whole number from 0 to {count - 1}, got {value!r}.")
    return int(value)


def _columns(frame: pd.DataFrame, needed: list[str], made_by: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if frame.empty or missing:
        raise ValueError(f"expected a non-empty table with columns {needed} (missing {missing}); "
                         f"build it with {made_by}.")


def machine_epsilon(dtype: str) -> float:
    """The spacing of floats near 1.0 in ``dtype`` ('float32' or 'float64')."""
    if dtype not in cost.DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(cost.DTYPE_BYTES)}.")
    return float(torch.finfo(getattr(torch, dtype)).eps)


def token_labels(trace: Trace) -> list[str]:
    """'position:token' for every attention row, unique so plotly keeps every row."""
    texts = trace.prompt_tokens + [s.token_text for s in trace.steps]
    shown = [t.replace("\n", "⏎").replace(" ", "␣") or "∅" for t in texts]
    return [f"{i}:{t[:12]}" for i, t in enumerate(shown)]


def _layout(fig: go.Figure, title: str, **axes) -> go.Figure:
    fig.update_layout(title=title, legend={"orientation": "h", "y": -0.2}, margin={"t": 60, "b": 40}, **axes)
    return fig


# ---- Side by side ---------------------------------------------------------------------------------

def logit_delta(run) -> go.Figure:
    """max |Δlogit| per step vs the cached mode, log axis, with the dtype's machine epsilon."""
    _needs(run, "recompute")
    comparison, eps = run.comparison, machine_epsilon(run.cached.dtype)
    floor = eps * 1e-3  # where exact zeros are drawn: a log axis has no 0
    fig = go.Figure()
    for mode, agreement in comparison.agreement.items():
        delta = agreement.max_abs_dlogit
        zero = delta == 0
        fig.add_trace(go.Scatter(x=comparison.step, y=np.where(zero, floor, delta), mode="lines+markers",
                                 name=f"{Mode(mode).label} vs cache", line={"color": Mode(mode).color},
                                 marker={"symbol": np.where(zero, "x", "circle")},
                                 customdata=delta, hovertemplate="step %{x}: |Δ| = %{customdata:.3g}<extra></extra>"))
    fig.add_hline(y=eps, line_dash="dash", line_color="#A3A3A3",
                  annotation_text=f"{run.cached.dtype} machine epsilon {eps:.1e}", annotation_position="top left")
    return _layout(fig, "Largest logit difference per step (× = exactly equal)", xaxis_title="step",
                   yaxis={"type": "log", "title": "max |Δlogit|", "exponentformat": "power"})


# ---- Attention ------------------------------------------------------------------------------------

def _lower(matrix: np.ndarray) -> np.ndarray:
    """Blank the masked upper triangle so it is not drawn as zero-valued attention."""
    out = matrix.astype(float).copy()
    out[np.triu_indices(out.shape[0], k=1)] = np.nan
    return out


def attention_panes(run, layer: int, head: int, step: int) -> go.Figure:
    """Cached mode's new row(s) next to recompute mode's full map at ``step``, re-computed rows marked."""
    cached, recompute = run.cached, _needs(run, "recompute")
    _attention_of(cached), _attention_of(recompute)
    layer, head = _index("layer", layer, cached.layers), _index("head", head, cached.heads)
    step = _index("step", step, len(cached.steps))
    rows, labels = cached.step_rows(step), token_labels(cached)
    t = cached.steps[step].context_len
    cached_rows = _lower(cached.attention_map(layer, head, step))[rows.start:rows.stop]  # (new rows, t)
    full = _lower(recompute.attention_map(layer, head, step))  # (t, t)
    # Stacked on one key axis, so the cached row lines up with the red row it equals; rows keep one height.
    new = max(len(rows), 2)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[new / (new + t), t / (new + t)],
                        vertical_spacing=0.1, subplot_titles=(
                            f"KV cache: {len(rows)} new row(s) × {t} keys — all this step computes",
                            f"recompute: the whole {t} × {t} map again; rows above the red one were already known"))
    zmax = float(max(np.nanmax(full), np.nanmax(cached_rows)))
    common = {"coloraxis": "coloraxis", "hovertemplate": "query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"}
    fig.add_trace(go.Heatmap(z=cached_rows, x=labels[:t], y=labels[rows.start:rows.stop], **common), 1, 1)
    fig.add_trace(go.Heatmap(z=full, x=labels[:t], y=labels[:t], **common), 2, 1)
    if rows.start > 0:  # rows the recompute pass derived again although they were known
        fig.add_shape(type="rect", xref="x2", yref="y2", x0=-0.5, x1=t - 0.5, y0=-0.5, y1=rows.start - 0.5,
                      line={"color": "#A3A3A3", "dash": "dot", "width": 2})
    fig.add_shape(type="rect", xref="x2", yref="y2", x0=-0.5, x1=t - 0.5, y0=rows.start - 0.5, y1=rows.stop - 0.5,
                  line={"color": NEW_ROW_COLOR, "width": 3})
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(coloraxis={"colorscale": ATTENTION_SCALE, "cmin": 0, "cmax": zmax,
                                 "colorbar": {"title": "weight"}}, height=max(460, 16 * (t + new) + 200))
    return _layout(fig, f"Layer {layer}, head {head}, step {step}")


def attention_growth(run, layer: int, head: int) -> go.Figure:
    """Animated recompute map: step s reveals the top-left block of the final map (the slice property)."""
    recompute = _needs(run, "recompute")
    _attention_of(recompute)
    layer, head = _index("layer", layer, recompute.layers), _index("head", head, recompute.heads)
    full = _lower(recompute.attention_map(layer, head))  # (T, T): the final map
    total, labels = full.shape[0], token_labels(recompute)[: full.shape[0]]
    fig = go.Figure(go.Heatmap(z=full, x=labels, y=labels, colorscale=ATTENTION_SCALE, zmin=0,
                               zmax=float(np.nanmax(full)), colorbar={"title": "weight"}))

    def shapes_at(step: int) -> list[dict]:
        rows = recompute.step_rows(step)
        t = recompute.steps[step].context_len
        covers = [{"type": "rect", "x0": -0.5, "x1": total - 0.5, "y0": t - 0.5, "y1": total - 0.5,
                   "fillcolor": COVER_COLOR, "line": {"width": 0}}] if t < total else []
        return covers + [{"type": "rect", "x0": -0.5, "x1": t - 0.5, "y0": rows.start - 0.5,
                          "y1": rows.stop - 0.5, "line": {"color": NEW_ROW_COLOR, "width": 3}}]

    steps = np.unique(np.linspace(0, len(recompute.steps) - 1, MAX_ANIMATION_FRAMES).round().astype(int))
    fig.frames = [go.Frame(name=str(s), layout={"shapes": shapes_at(int(s))}) for s in steps]
    fig.update_layout(
        shapes=shapes_at(0), height=max(460, 12 * total + 260), yaxis={"autorange": "reversed"},
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0, "y": 0, "xanchor": "left", "yanchor": "top",
                      "pad": {"t": 90}, "buttons": [
            {"label": "▶ Play", "method": "animate",
             "args": [None, {"frame": {"duration": 400, "redraw": True}, "fromcurrent": True}]},
            {"label": "⏸ Pause", "method": "animate",
             "args": [[None], {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}]}]}],
        sliders=[{"active": 0, "x": 0.18, "y": 0, "yanchor": "top", "len": 0.82, "pad": {"t": 80},
                  "currentvalue": {"prefix": "step "}, "steps": [
            {"label": str(s), "method": "animate",
             "args": [[str(s)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}]} for s in steps]}],
    )
    return _layout(fig, f"Recompute map growing, layer {layer} head {head}: each step is a slice of the last")


def attention_heads(trace: Trace, layer: int, step: int, columns: int = 4) -> go.Figure:
    """Every head of one layer at ``step`` (recompute map, or the cached mode's rows so far)."""
    _attention_of(trace)
    layer, step = _index("layer", layer, trace.layers), _index("step", step, len(trace.steps))
    maps = trace.layer_attention(layer, step)  # (heads, t, t)
    columns = min(columns, trace.heads)
    grid_rows = -(-trace.heads // columns)
    fig = make_subplots(rows=grid_rows, cols=columns, subplot_titles=[f"head {h}" for h in range(trace.heads)],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    for h in range(trace.heads):
        fig.add_trace(go.Heatmap(z=_lower(maps[h]), coloraxis="coloraxis",
                                 hovertemplate=f"head {h}<br>query %{{y}} key %{{x}}<br>%{{z:.3f}}<extra></extra>"),
                      h // columns + 1, h % columns + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(coloraxis={"colorscale": ATTENTION_SCALE, "cmin": 0, "cmax": 1}, height=230 * grid_rows + 80)
    return _layout(fig, f"All heads of layer {layer} at step {step} ({trace.mode})")


# ---- KV cache -------------------------------------------------------------------------------------

def kv_per_layer(run) -> go.Figure:
    """Bytes of keys+values per layer after each step, stacked, with the formula 2·L·H·d·t·bytes on top."""
    trace = run.cached
    bytes_per_value = cost.DTYPE_BYTES[trace.dtype]
    steps = [s.index for s in trace.steps]
    fig = go.Figure()
    for layer in range(trace.layers):
        fig.add_trace(go.Bar(x=steps, y=[s.kv_bytes[layer] for s in trace.steps], name=f"layer {layer}",
                             marker_color=LAYER_COLORS[layer % len(LAYER_COLORS)]))
    formula = [cost.kv_bytes(trace.layers, trace.heads, trace.head_dim, s.context_len, bytes_per_value)
               for s in trace.steps]
    fig.add_trace(go.Scatter(x=steps, y=formula, mode="markers", name="formula 2·layers·heads·head_dim·t·bytes",
                             marker={"symbol": "diamond-open", "size": 10, "color": "#A3A3A3", "line": {"width": 2}}))
    return _layout(fig, "KV-cache bytes per layer after each step (measured), formula on top", barmode="stack",
                   xaxis_title="step", yaxis_title="bytes")


def kv_allocation(run) -> go.Figure:
    """Bytes in use vs bytes allocated: this run's cache measured, and both kinds by formula."""
    trace = run.cached
    bytes_per_value = cost.DTYPE_BYTES[trace.dtype]
    steps = [s.index for s in trace.steps]
    max_len = trace.prompt_len + len(trace.steps)
    per_token = cost.kv_bytes(trace.layers, trace.heads, trace.head_dim, 1, bytes_per_value)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=[sum(s.kv_allocated) for s in trace.steps], mode="lines+markers",
                             name=f"measured allocated ({trace.cache_kind})", line={"color": Mode.CACHED.color}))
    fig.add_trace(go.Scatter(x=steps, y=[sum(s.kv_bytes) for s in trace.steps], mode="lines+markers",
                             name="measured holding real tokens", line={"color": Mode.RECOMPUTE.color}))
    fig.add_trace(go.Scatter(x=steps, y=[per_token * s.context_len for s in trace.steps], mode="lines",
                             name="dynamic: grows by torch.cat", line={"dash": "dot", "color": "#A3A3A3"}))
    fig.add_trace(go.Scatter(x=steps, y=[per_token * max_len] * len(steps), mode="lines",
                             name=f"static: preallocated for {max_len} tokens",
                             line={"dash": "dash", "color": "#8B5CF6"}))
    return _layout(fig, "Dynamic growth vs static preallocation", xaxis_title="step", yaxis_title="bytes")


def kv_what_if(shapes: dict[str, cost.Shape], tokens: int, dtype: str = "float32") -> go.Figure:
    """KV-cache bytes vs context length for GPT-2 sizes (e.g. registry.SHAPES), one line each."""
    if not shapes:
        raise ValueError("no model shapes given; pass e.g. gptviz.registry.SHAPES.")
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a whole number ≥ 1, got {tokens!r}.")
    bytes_per_value = cost.DTYPE_BYTES.get(dtype)
    if bytes_per_value is None:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(cost.DTYPE_BYTES)}.")
    x = np.unique(np.linspace(1, tokens, 64).round().astype(int))
    fig = go.Figure()
    for i, (name, s) in enumerate(shapes.items()):
        y = [cost.kv_bytes(s.layers, s.heads, s.head_dim, int(t), bytes_per_value) for t in x]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name,
                                 line={"color": LAYER_COLORS[i % len(LAYER_COLORS)]}))
    return _layout(fig, f"KV cache for one sequence ({dtype})", xaxis_title="tokens in context",
                   yaxis={"title": "bytes", "type": "log", "exponentformat": "SI"})


# ---- Timing ---------------------------------------------------------------------------------------

def step_times(run, floor_seconds: float | None = None) -> go.Figure:
    """Wall time of every step per mode vs tokens in context; the prefill pass drawn as a diamond."""
    c = run.comparison
    fig = go.Figure()
    for mode, seconds in c.seconds.items():
        color = mode.color
        fig.add_trace(go.Scatter(x=c.context_len[c.decoding], y=seconds[c.decoding], mode="lines+markers",
                                 name=mode.label, line={"color": color}, legendgroup=mode))
        fig.add_trace(go.Scatter(x=c.context_len[:1], y=seconds[:1], mode="markers",
                                 name=f"prefill ({mode})", legendgroup=mode, showlegend=mode == "cached",
                                 marker={"symbol": "diamond", "size": 12, "color": color}))
    if floor_seconds is not None:
        fig.add_hline(y=floor_seconds, line_dash="dash", line_color="#A3A3A3",
                      annotation_text="memory-bandwidth floor: read every weight once",
                      annotation_position="bottom right")
    return _layout(fig, "Seconds per step", xaxis_title="tokens in context", yaxis_title="seconds")


def cumulative_times(run) -> go.Figure:
    """Total decode time so far per mode, with a dashed quadratic fitted to each (np.polyfit)."""
    fig = go.Figure()
    for fit in anatomy.growth_fit(run.comparison):
        steps = np.arange(1, len(fit.cumulative) + 1)
        fig.add_trace(go.Scatter(x=steps, y=fit.cumulative, mode="markers", name=fit.mode.label,
                                 marker={"color": fit.mode.color}, legendgroup=fit.mode))
        fig.add_trace(go.Scatter(x=steps, y=fit.total_fit(steps), mode="lines",
                                 line={"dash": "dash", "color": fit.mode.color}, legendgroup=fit.mode,
                                 name=f"fit {fit.quadratic:.2g}·n² + {fit.linear:.2g}·n", hoverinfo="skip"))
    return _layout(fig, "Cumulative decode time (dashed: quadratic fit)", xaxis_title="tokens generated after prefill",
                   yaxis_title="seconds")


def layer_times(run) -> go.Figure:
    """Mean wall time inside each transformer block over the decode steps, per mode."""
    fig = go.Figure()
    for mode, trace in run.traces.items():
        seconds = np.array([s.layer_seconds for s in trace.steps[1:] or trace.steps])  # (steps, layers)
        fig.add_trace(go.Bar(x=[f"layer {i}" for i in range(trace.layers)], y=seconds.mean(axis=0),
                             name=Mode(mode).label, marker_color=Mode(mode).color))
    return _layout(fig, "Time inside each block (decode mean)", barmode="group", yaxis_title="seconds")


def prefill_decode(run) -> go.Figure:
    """Step 0 (the prompt pass) next to the mean decode step, per mode."""
    c = run.comparison
    fig = go.Figure()
    for mode, seconds in c.seconds.items():
        decode = seconds[c.decoding]
        fig.add_trace(go.Bar(x=["prefill (step 0)", "mean decode step"],
                             y=[seconds[0], decode.mean() if len(decode) else np.nan],
                             name=mode.label, marker_color=mode.color))
    return _layout(fig, "Prefill vs decode", barmode="group", yaxis_title="seconds")


def step_flops(run, shape: cost.Shape) -> go.Figure:
    """Analytic FLOPs of each step per mode (cost.step_flops), on a log axis."""
    c = run.comparison
    inputs = [s.input_len for s in run.cached.steps]
    fig = go.Figure()
    for mode in run.traces:
        flops = [cost.step_flops(shape, mode, int(t), q) for t, q in zip(c.context_len, inputs, strict=True)]
        fig.add_trace(go.Scatter(x=c.step, y=flops, mode="lines+markers", name=Mode(mode).label,
                                 line={"color": Mode(mode).color}))
    return _layout(fig, "Analytic FLOPs per step", xaxis_title="step",
                   yaxis={"title": "FLOPs", "type": "log", "exponentformat": "SI"})


# ---- Why the past is frozen -----------------------------------------------------------------------

def hidden_drift(frame: pd.DataFrame) -> go.Figure:
    """Past positions' hidden-state drift per layer, with and without the causal mask
    (the output of compare.hidden_state_drift for causal=True and False, concatenated)."""
    _columns(frame, ["prefix_len", "layer", "causal", "drift"],
             "pd.concat([compare.hidden_state_drift(m, ids, causal=c) for c in (True, False)])")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("largest drift per layer", "drift vs prefix length"))
    for causal, name, color in ((True, "with causal mask", Mode.CACHED.color),
                                (False, "without mask", Mode.RECOMPUTE.color)):
        part = frame[frame["causal"] == causal]
        if part.empty:
            continue
        worst = part.groupby("layer")["drift"].max()
        fig.add_trace(go.Bar(x=worst.index, y=worst.to_numpy(), name=name, marker_color=color, legendgroup=name,
                             texttemplate="%{y:.0e}", textposition="outside"), 1, 1)
        last = part[part["layer"] == part["layer"].max()]
        fig.add_trace(go.Scatter(x=last["prefix_len"], y=last["drift"], mode="lines+markers", marker_color=color,
                                 name=f"{name}, last layer", legendgroup=name), 1, 2)
    fig.update_xaxes(title_text="layer (0 = embeddings)", row=1, col=1)
    fig.update_xaxes(title_text="prefix length t", row=1, col=2)
    fig.update_yaxes(title_text="max |h_t+1[i] − h_t[i]|, i < t", row=1, col=1)
    return _layout(fig, "How far past hidden states move when a token is appended", barmode="group")


# ---- Inside GPT-2 ---------------------------------------------------------------------------------

def lens_top_tokens(frame: pd.DataFrame) -> go.Figure:
    """Top tokens of the last hidden state after each layer (anatomy.logit_lens), coloured by probability."""
    _columns(frame, ["layer", "rank", "token", "probability"], "gptviz.anatomy.logit_lens(model, tokenizer, text)")
    z = frame.pivot(index="layer", columns="rank", values="probability")
    text = frame.pivot(index="layer", columns="rank", values="token").map(
        lambda t: t.replace("\n", "⏎").replace(" ", "␣") or "∅")
    fig = go.Figure(go.Heatmap(z=z.to_numpy(), x=[f"#{r + 1}" for r in z.columns], y=[f"layer {i}" for i in z.index],
                               text=text.to_numpy(), texttemplate="%{text}", textfont={"color": "white"},
                               colorscale=LABELLED_SCALE, zmin=0,
                               zmax=float(z.to_numpy().max()), colorbar={"title": "probability"},
                               hovertemplate="%{y}, %{x}: '%{text}' p=%{z:.3f}<extra></extra>"))
    fig.update_layout(height=80 + 45 * len(z))
    return _layout(fig, "The last position read out after every layer (logit lens)", yaxis={"autorange": "reversed"})
