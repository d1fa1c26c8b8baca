"""Cache-lab figures: a LabReport (or one of its parts) in, a plotly Figure out."""

from __future__ import annotations

import plotly.graph_objects as go

from gptviz import display
from gptviz.plots import GREY, SERIES_COLORS

# Block table cells: (colour, its name in the title) for a block a sequence owns, shares, or copied on write.
BLOCK_COLORS = {"own": ("#6366F1", "indigo"), "shared": ("#84CC16", "green"),
                "copied": ("#EAB308", "yellow")}


def _layout(fig: go.Figure, title: str, **axes) -> go.Figure:
    fig.update_layout(title=title, legend={"orientation": "h", "y": -0.2}, margin={"t": 60, "b": 40}, **axes)
    return fig


def drift(report) -> go.Figure:
    """Per step: each variant's max |Δlogit| against the exact cache (teacher-forced on the same tokens)."""
    fig = go.Figure()
    for i, v in enumerate(report.variants):
        fig.add_scatter(x=list(range(len(v.deltas.max_abs))), y=v.deltas.max_abs, mode="lines+markers",
                        name=v.variant.name, line={"color": SERIES_COLORS[i % len(SERIES_COLORS)]}, marker={"size": 4})
    return _layout(fig, "What each cache costs in exactness", xaxis_title="step (same tokens as the exact run)",
                   yaxis_title="max |Δlogit| vs the exact cache")


def cache_bytes(report) -> go.Figure:
    """Per step: bytes held by each cache object, measured off its tensors, beside the exact cache."""
    steps = list(range(len(report.exact_bytes)))
    name, size = display.byte_unit(max([*report.exact_bytes, *(b for v in report.variants for b in v.bytes_measured)]))
    fig = go.Figure()
    fig.add_scatter(x=steps, y=[b / size for b in report.exact_bytes], name="exact", mode="lines",
                    line={"color": GREY, "dash": "dash", "width": 3})
    for i, v in enumerate(report.variants):
        fig.add_scatter(x=steps, y=[b / size for b in v.bytes_measured], name=v.variant.name, mode="lines",
                        line={"color": SERIES_COLORS[i % len(SERIES_COLORS)]})
    return _layout(fig, "What each cache buys in bytes (measured)", xaxis_title="step",
                   yaxis={"title": f"KV cache ({name})", "rangemode": "tozero"})  # sizes compared by height


def precision_gap(result) -> go.Figure:
    """Per step and number format: |cached − recomputed| logits, on a log scale (zeros are left out)."""
    fig = go.Figure()
    for i, row in enumerate(result.rows):
        y = [d if d > 0 else None for d in row.cached_vs_recompute]  # log axis: an exact 0 has no place
        fig.add_scatter(x=list(range(len(y))), y=y, name=row.dtype, mode="lines+markers",
                        line={"color": SERIES_COLORS[i % len(SERIES_COLORS)]}, marker={"size": 4})
    fig = _layout(fig, "Cached vs recomputed, per number format (an exact 0 is not drawn)", xaxis_title="step",
                  yaxis_title="max |Δlogit| (log)")
    fig.update_yaxes(type="log", exponentformat="power")
    return fig


def block_table(paged) -> go.Figure:
    """The block table: one row per sequence, one cell per logical block, labelled with its physical block."""
    frame = paged.to_frame()
    names = list(dict.fromkeys(frame["sequence"]))
    width = int(frame["logical"].max()) + 1
    z = [[None] * width for _ in names]
    text = [[""] * width for _ in names]
    for row in frame.itertuples():
        r = names.index(row.sequence)
        z[r][row.logical] = 2 if row.copy_on_write else 1 if row.shared else 0
        text[r][row.logical] = f"{row.physical}" + ("*" if row.copy_on_write else "")
    own, shared, copied = BLOCK_COLORS.values()
    scale = [[0, own[0]], [0.5, shared[0]], [1, copied[0]]]  # z: 0 own, 1 shared, 2 copied on write
    fig = go.Figure(go.Heatmap(z=z, text=text, texttemplate="%{text}", x=list(range(width)), y=names, zmin=0,
                               zmax=2, colorscale=scale, showscale=False, xgap=2, ygap=2,
                               hovertemplate="%{y}, logical block %{x}: physical %{text}<extra></extra>"))
    fig = _layout(fig, f"Block table ({paged.block_size} tokens a block): {own[1]} own, {shared[1]} shared, "
                  f"{copied[1]} copied on write", xaxis_title="logical block", yaxis_title="")
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(dtick=1)
    return fig
