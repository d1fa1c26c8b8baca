"""Pure plotting functions: a Run, Trace or DataFrame in, a plotly Figure out.

No model is touched here and nothing is drawn until a caller shows the figure, so the
same functions serve the app, notebooks and tests. Colours are fixed mid-tones that
read on light and dark backgrounds; inputs that cannot be drawn fail at once with a
message that says what to pass instead.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from gptviz import anatomy, cost, display
from gptviz.display import NORMAL, Style
from gptviz.modes import Mode
from gptviz.settings import positions
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
    return [f"{i}:{display.token(t, 12)}" for i, t in enumerate(texts)]


def _layout(fig: go.Figure, title: str, **axes) -> go.Figure:
    fig.update_layout(title=title, **axes)
    return styled(fig, NORMAL)


def styled(fig: go.Figure, style: Style) -> go.Figure:
    """Fit a figure to an audience: font sizes, a left-aligned title wrapped to fit (never under the
    toolbar, which sits top right), and legends in a row below the plot. Safe to apply again."""
    title = style.wrap((fig.layout.title.text or "").replace("<br>", " "))
    lines, line = title.count("<br>") + 1, style.title * 1.3
    # Subplot titles sit just above the top row, inside the top margin: leave room for them under the title.
    above = max((a.text.count("<br>") + 1 for a in fig.layout.annotations
                 if a.yref == "paper" and a.yanchor == "bottom" and a.y is not None and a.y >= 0.99), default=0)
    # Anchored to the plot's top edge: plotly draws a multi-line title's first line there and the rest below
    # it, so the padding lifts it by its extra lines (anchored to the figure's top, the first line is clipped).
    pad = round(8 + (lines - 1) * line + above * style.font * 1.3)
    fig.update_layout(
        font={"size": style.font},
        title={"text": title, "x": 0, "xref": "container", "xanchor": "left", "y": 1, "yref": "paper",
               "yanchor": "bottom", "pad": {"l": 8, "b": pad}, "font": {"size": style.title}},
        # Anchored to the figure's bottom edge (not the plot's): plotly then makes room below the axis title.
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom", "yref": "container",
                "font": {"size": style.font}},
        margin={"t": round(pad + line + 16), "b": 40, "l": 60, "r": 20, "autoexpand": True})
    fig.update_xaxes(tickfont_size=style.ticks, title_font_size=style.font, automargin=True)
    fig.update_yaxes(tickfont_size=style.ticks, title_font_size=style.font, automargin=True)
    fig.update_annotations(font_size=style.font)  # subplot titles and line labels
    return fig


def _from_zero(fig: go.Figure) -> None:
    """Linear axes whose bar or line heights a reader compares start at 0."""
    fig.update_yaxes(rangemode="tozero")


def _log_axis(title: str, values) -> dict:
    """A log axis labelled once per decade (or fewer) as 10^n, never the crowded 2 and 5 in between."""
    return {"title": title, "type": "log", "exponentformat": "power", "showexponent": "all",
            "dtick": display.log_dtick(values), "minor": {"showgrid": False}}


# ---- Side by side ---------------------------------------------------------------------------------

def logit_delta(run) -> go.Figure:
    """max |Δlogit| per step vs the cached mode, log axis, with the dtype's machine epsilon."""
    _needs(run, Mode.RECOMPUTE)
    comparison, eps = run.comparison, machine_epsilon(run.cached.dtype)
    floor = eps * 1e-3  # where exact zeros are drawn: a log axis has no 0
    fig, drawn = go.Figure(), [eps]
    for mode, agreement in comparison.agreement.items():
        delta = agreement.max_abs_dlogit
        zero = delta == 0
        drawn += list(np.where(zero, floor, delta))
        fig.add_trace(go.Scatter(x=comparison.step, y=np.where(zero, floor, delta), mode="lines+markers",
                                 name=f"{Mode(mode).label} vs cache", line={"color": Mode(mode).color},
                                 marker={"symbol": np.where(zero, "x", "circle")},
                                 customdata=delta, hovertemplate="step %{x}: |Δ| = %{customdata:.3g}<extra></extra>"))
    fig.add_hline(y=eps, line_dash="dash", line_color="#A3A3A3")
    # On a log axis an annotation's y is log10 of the value (add_hline's own label lands elsewhere).
    fig.add_annotation(x=0, xref="paper", xanchor="left", y=np.log10(eps), yref="y", yanchor="bottom",
                       text=f"{run.cached.dtype} machine epsilon {eps:.1e}", showarrow=False,
                       font={"color": "#737373"})
    return _layout(fig, "Largest logit difference per step (× = exactly equal)", xaxis_title="step",
                   yaxis=_log_axis("max |Δlogit|", drawn))


# ---- Attention ------------------------------------------------------------------------------------

def _lower(matrix: np.ndarray) -> np.ndarray:
    """Blank the masked upper triangle so it is not drawn as zero-valued attention."""
    out = matrix.astype(float).copy()
    out[np.triu_indices(out.shape[0], k=1)] = np.nan
    return out


def attention_panes(run, layer: int, head: int, step: int, side_by_side: bool = False,
                    height: int | None = None) -> go.Figure:
    """Cached mode's new row(s) next to recompute mode's full map at ``step``, re-computed rows marked.

    Stacked (one key axis, for narrow screens) or ``side_by_side`` (one query axis, for a projector:
    the cache's new row sits level with the recompute map's red row); ``height`` in px overrides the
    height that gives every row the same size.
    """
    cached, recompute = run.cached, _needs(run, Mode.RECOMPUTE)
    _attention_of(cached), _attention_of(recompute)
    layer, head = _index("layer", layer, cached.layers), _index("head", head, cached.heads)
    step = _index("step", step, len(cached.steps))
    rows, labels = cached.step_rows(step), token_labels(cached)
    t = cached.steps[step].context_len
    cached_rows = _lower(cached.attention_map(layer, head, step))[rows.start:rows.stop]  # (new rows, t)
    full = _lower(recompute.attention_map(layer, head, step))  # (t, t)
    titles = (f"KV cache: {len(rows)} new row{'s' * (len(rows) > 1)} × {t} keys, all this step computes",
              f"recompute: all {t} × {t} again (dotted: rows already known)")
    new = max(len(rows), 2)
    if side_by_side:
        fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.03,
                            subplot_titles=[_wrap_subplot(x, 34) for x in titles])
        only_new = np.full_like(full, np.nan)  # (t, t): the cache computes no other row this step
        only_new[rows.start:rows.stop] = cached_rows
        placed = [(only_new, labels[:t], 1, 1), (full, labels[:t], 1, 2)]
        pane = "x2", "y2"
    else:  # stacked on one key axis; rows keep one height
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[new / (new + t), t / (new + t)],
                            vertical_spacing=0.1, subplot_titles=[_wrap_subplot(x, 44) for x in titles])
        placed = [(cached_rows, labels[rows.start:rows.stop], 1, 1), (full, labels[:t], 2, 1)]
        pane = "x2", "y2"
    zmax = float(max(np.nanmax(full), np.nanmax(cached_rows)))
    common = {"coloraxis": "coloraxis", "hovertemplate": "query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"}
    for z, y, r, c in placed:
        fig.add_trace(go.Heatmap(z=z, x=labels[:t], y=y, **common), r, c)
    xref, yref = pane
    if rows.start > 0:  # rows the recompute pass derived again although they were known
        fig.add_shape(type="rect", xref=xref, yref=yref, x0=-0.5, x1=t - 0.5, y0=-0.5, y1=rows.start - 0.5,
                      line={"color": "#A3A3A3", "dash": "dot", "width": 2})
    fig.add_shape(type="rect", xref=xref, yref=yref, x0=-0.5, x1=t - 0.5, y0=rows.start - 0.5,
                  y1=rows.stop - 0.5, line={"color": NEW_ROW_COLOR, "width": 3})
    if side_by_side:
        fig.add_shape(type="rect", xref="x", yref="y", x0=-0.5, x1=t - 0.5, y0=rows.start - 0.5,
                      y1=rows.stop - 0.5, line={"color": NEW_ROW_COLOR, "width": 3})
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(coloraxis={"colorscale": ATTENTION_SCALE, "cmin": 0, "cmax": zmax, "colorbar": _colorbar()},
                      height=height or max(460, 16 * (t + new) + 200))
    return _layout(fig, f"Layer {layer}, head {head}, step {step}")


def _wrap_subplot(text: str, width: int) -> str:
    return "<br>".join(textwrap.wrap(text, width))


def _colorbar(title: str = "weight") -> dict:
    """A thin colour bar: narrow screens keep their width for the map."""
    return {"title": {"text": title, "side": "top"}, "thickness": 12, "xpad": 4}


def attention_growth(run, layer: int, head: int, start: int = 0) -> go.Figure:
    """Animated recompute map: step s reveals the top-left block of the final map (the slice property).

    Opens at step ``start`` (the nearest animation frame); ▶ plays on from there.
    """
    recompute = _needs(run, Mode.RECOMPUTE)
    _attention_of(recompute)
    layer, head = _index("layer", layer, recompute.layers), _index("head", head, recompute.heads)
    start = _index("start", start, len(recompute.steps))
    full = _lower(recompute.attention_map(layer, head))  # (T, T): the final map
    total, labels = full.shape[0], token_labels(recompute)[: full.shape[0]]
    fig = go.Figure(go.Heatmap(z=full, x=labels, y=labels, colorscale=ATTENTION_SCALE, zmin=0,
                               zmax=float(np.nanmax(full)), colorbar=_colorbar()))

    def shapes_at(step: int) -> list[dict]:
        rows = recompute.step_rows(step)
        t = recompute.steps[step].context_len
        covers = [{"type": "rect", "x0": -0.5, "x1": total - 0.5, "y0": t - 0.5, "y1": total - 0.5,
                   "fillcolor": COVER_COLOR, "line": {"width": 0}}] if t < total else []
        return covers + [{"type": "rect", "x0": -0.5, "x1": t - 0.5, "y0": rows.start - 0.5,
                          "y1": rows.stop - 0.5, "line": {"color": NEW_ROW_COLOR, "width": 3}}]

    steps = np.unique(np.linspace(0, len(recompute.steps) - 1, MAX_ANIMATION_FRAMES).round().astype(int))
    first = int(np.abs(steps - start).argmin())
    fig.frames = [go.Frame(name=str(s), layout={"shapes": shapes_at(int(s))}) for s in steps]
    # The step slider takes the full width, the buttons sit on a row of their own below it: on a
    # 390 px phone they would otherwise cover the slider's labels.
    fig.update_layout(
        shapes=shapes_at(int(steps[first])), height=max(480, 12 * total + 330), yaxis={"autorange": "reversed"},
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0, "y": 0, "xanchor": "left", "yanchor": "top",
                      "pad": {"t": 150}, "buttons": [
            {"label": "▶ Play", "method": "animate",
             "args": [None, {"frame": {"duration": 400, "redraw": True}, "fromcurrent": True}]},
            {"label": "Pause", "method": "animate",
             "args": [[None], {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}]}]}],
        sliders=[{"active": first, "x": 0, "y": 0, "yanchor": "top", "len": 1, "pad": {"t": 70},
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
    formula = [cost.kv_bytes(trace.layers, trace.heads, trace.head_dim, s.context_len, bytes_per_value)
               for s in trace.steps]
    name, size = display.byte_unit(max(formula))
    fig = go.Figure()
    for layer in range(trace.layers):
        fig.add_trace(go.Bar(x=steps, y=[s.kv_bytes[layer] / size for s in trace.steps], name=f"layer {layer}",
                             marker_color=LAYER_COLORS[layer % len(LAYER_COLORS)]))
    fig.add_trace(go.Scatter(x=steps, y=[f / size for f in formula], mode="markers",
                             name="formula 2·layers·heads·head_dim·t·bytes",
                             marker={"symbol": "diamond-open", "size": 10, "color": "#A3A3A3", "line": {"width": 2}}))
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
                                 line={"color": Mode.CACHED.color}))
    fig.add_trace(go.Scatter(x=steps, y=[h / size for h in held], mode="lines+markers",
                             name="measured: holding real tokens" if allocated != held
                             else f"measured: allocated = holding real tokens ({trace.cache_kind})",
                             line={"color": Mode.RECOMPUTE.color}))
    if trace.cache_kind != "dynamic":
        fig.add_trace(go.Scatter(x=steps, y=[per_token * s.context_len / size for s in trace.steps], mode="lines",
                                 name="a dynamic cache would grow by torch.cat",
                                 line={"dash": "dot", "color": "#A3A3A3"}))
    if trace.cache_kind != "static":
        fig.add_trace(go.Scatter(x=steps, y=[per_token * max_len / size] * len(steps), mode="lines",
                                 name=f"a static cache would reserve {max_len} tokens",
                                 line={"dash": "dash", "color": "#8B5CF6"}))
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
    unit = "MiB"  # the unit of the what-if table beside it
    size = 2**20
    fig = go.Figure()
    for i, (name, y) in enumerate(lines.items()):
        fig.add_trace(go.Scatter(x=x, y=[v / size for v in y], mode="lines", name=name,
                                 line={"color": LAYER_COLORS[i % len(LAYER_COLORS)]}))
    every = [v / size for y in lines.values() for v in y]
    return _layout(fig, f"KV cache for one sequence ({dtype})", xaxis_title="tokens in context",
                   yaxis=_log_axis(unit, every))


# ---- Timing ---------------------------------------------------------------------------------------

def step_times(run, floor_seconds: float | None = None) -> go.Figure:
    """Wall time of every step per mode vs tokens in context; the prefill pass drawn as a diamond.

    The line is each step's fastest timed pass; a bar above it reaches its slowest (the spread)."""
    c = run.comparison
    fig = go.Figure()
    for mode, seconds in c.seconds.items():
        color = mode.color
        slowest = np.array([max(s.pass_seconds or [s.seconds]) for s in run.traces[mode].steps])  # (steps,)
        spread = {"type": "data", "symmetric": False, "array": (slowest - seconds)[c.decoding], "arrayminus": None,
                  "color": color, "thickness": 1, "width": 0}
        fig.add_trace(go.Scatter(x=c.context_len[c.decoding], y=seconds[c.decoding], mode="lines+markers",
                                 name=mode.label, line={"color": color}, legendgroup=mode, error_y=spread))
        fig.add_trace(go.Scatter(x=c.context_len[:1], y=seconds[:1], mode="markers",
                                 name=f"{mode.label}: prefill (step 0)", legendgroup=mode, showlegend=False,
                                 marker={"symbol": "diamond", "size": 12, "color": color}))
    _from_zero(fig)
    if floor_seconds is not None:
        fig.add_hline(y=floor_seconds, line_dash="dash", line_color="#A3A3A3",
                      annotation_text="memory-bandwidth floor: read every weight once",
                      annotation_position="top right")
    return _layout(fig, "Seconds per step (◆ = the prefill pass over the prompt)", xaxis_title="tokens in context",
                   yaxis_title="seconds")


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
    _from_zero(fig)
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
    every = [v for trace in fig.data for v in trace.y]
    return _layout(fig, "Analytic FLOPs per step", xaxis_title="step", yaxis=_log_axis("FLOPs", every))


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
    _from_zero(fig)
    return _layout(fig, "How far past hidden states move when a token is appended", barmode="group")


# ---- Inside GPT-2 ---------------------------------------------------------------------------------

def lens_top_tokens(frame: pd.DataFrame) -> go.Figure:
    """Top tokens of the last hidden state after each layer (anatomy.logit_lens), coloured by probability."""
    _columns(frame, ["layer", "rank", "token", "probability"], "gptviz.anatomy.logit_lens(model, tokenizer, text)")
    z = frame.pivot(index="layer", columns="rank", values="probability")
    text = frame.pivot(index="layer", columns="rank", values="token").map(display.token)
    fig = go.Figure(go.Heatmap(z=z.to_numpy(), x=[f"#{r + 1}" for r in z.columns], y=[f"layer {i}" for i in z.index],
                               text=text.to_numpy(), texttemplate="%{text}", textfont={"color": "white"},
                               colorscale=LABELLED_SCALE, zmin=0,
                               zmax=float(z.to_numpy().max()), colorbar=_colorbar("probability"),
                               hovertemplate="%{y}, %{x}: '%{text}' p=%{z:.3f}<extra></extra>"))
    fig.update_layout(height=80 + 45 * len(z))
    return _layout(fig, "The last position read out after every layer (logit lens)", yaxis={"autorange": "reversed"},
                   xaxis={"type": "category", "title": "rank"})  # else plotly reads '#2' as the number 2
