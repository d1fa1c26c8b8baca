"""Attention maps: the cached row next to the recompute map, growing, every head."""

from __future__ import annotations

import textwrap

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gptviz.modes import Mode
from gptviz.plots._base import (
    ATTENTION_SCALE,
    COVER_COLOR,
    GREY,
    MAX_ANIMATION_FRAMES,
    NEW_ROW_COLOR,
    _attention_of,
    _colorbar,
    _index,
    _layout,
    _needs,
    token_labels,
)
from gptviz.trace import Trace

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
    fig, placed = _panes(side_by_side, titles, rows, cached_rows, full, labels[:t])
    zmax = float(max(np.nanmax(full), np.nanmax(cached_rows)))
    common = {"coloraxis": "coloraxis", "hovertemplate": "query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"}
    for z, y, r, c in placed:
        fig.add_trace(go.Heatmap(z=z, x=labels[:t], y=y, **common), r, c)
    _mark_rows(fig, rows, t, side_by_side)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(coloraxis={"colorscale": ATTENTION_SCALE, "cmin": 0, "cmax": zmax, "colorbar": _colorbar()},
                      height=height or max(460, 16 * (t + max(len(rows), 2)) + 200))
    return _layout(fig, f"Layer {layer}, head {head}, step {step}")


def _panes(side_by_side: bool, titles: tuple[str, str], rows: range, cached_rows: np.ndarray, full: np.ndarray,
           labels: list[str]) -> tuple[go.Figure, list]:
    """The two panes' grid, and what goes where: (z, query labels, grid row, grid column) per pane."""
    if side_by_side:  # one query axis: the cache's new row sits level with the recompute map's red row
        fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.03,
                            subplot_titles=[_wrap_subplot(x, 34) for x in titles])
        only_new = np.full_like(full, np.nan)  # (t, t): the cache computes no other row this step
        only_new[rows.start:rows.stop] = cached_rows
        return fig, [(only_new, labels, 1, 1), (full, labels, 1, 2)]
    new, t = max(len(rows), 2), len(labels)  # stacked on one key axis; rows keep one height
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[new / (new + t), t / (new + t)],
                        vertical_spacing=0.1, subplot_titles=[_wrap_subplot(x, 44) for x in titles])
    return fig, [(cached_rows, labels[rows.start:rows.stop], 1, 1), (full, labels, 2, 1)]


def _mark_rows(fig: go.Figure, rows: range, t: int, side_by_side: bool) -> None:
    """Dotted: the rows recompute derived again although they were known; red: this step's new row(s)."""
    def box(xref: str, yref: str, y0: float, y1: float, line: dict) -> None:
        fig.add_shape(type="rect", xref=xref, yref=yref, x0=-0.5, x1=t - 0.5, y0=y0, y1=y1, line=line)

    new_row = {"color": NEW_ROW_COLOR, "width": 3}
    if rows.start > 0:
        box("x2", "y2", -0.5, rows.start - 0.5, {"color": GREY, "dash": "dot", "width": 2})
    box("x2", "y2", rows.start - 0.5, rows.stop - 0.5, new_row)
    if side_by_side:
        box("x", "y", rows.start - 0.5, rows.stop - 0.5, new_row)


def _wrap_subplot(text: str, width: int) -> str:
    return "<br>".join(textwrap.wrap(text, width))


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
    fig.update_layout(shapes=shapes_at(int(steps[first])), height=max(480, 12 * total + 330),
                      yaxis={"autorange": "reversed"}, **_play_controls(steps, first))
    return _layout(fig, f"Recompute map growing, layer {layer} head {head}: each step is a slice of the last")


def _play_controls(steps: np.ndarray, first: int) -> dict:
    """Play/Pause and a step slider over the animation frames.

    The slider takes the full width, the buttons sit on a row of their own below it: on a 390 px
    phone they would otherwise cover the slider's labels."""
    def goto(frames, duration: int, redraw: bool, **extra) -> list:
        return [frames, {"frame": {"duration": duration, "redraw": redraw}, **extra}]

    return {
        "updatemenus": [{"type": "buttons", "direction": "left", "x": 0, "y": 0, "xanchor": "left", "yanchor": "top",
                         "pad": {"t": 150}, "buttons": [
                             {"label": "▶ Play", "method": "animate", "args": goto(None, 400, True, fromcurrent=True)},
                             {"label": "Pause", "method": "animate",
                              "args": goto([None], 0, False, mode="immediate")}]}],
        "sliders": [{"active": first, "x": 0, "y": 0, "yanchor": "top", "len": 1, "pad": {"t": 70},
                     "currentvalue": {"prefix": "step "},
                     "steps": [{"label": str(s), "method": "animate", "args": goto([str(s)], 0, True, mode="immediate")}
                               for s in steps]}],
    }


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
