"""What every figure shares: colours, the checks that fail early with the fix, layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from gptviz import cost, display
from gptviz.display import NORMAL, Style
from gptviz.trace import Trace

# A colour says one thing in every figure: blue, orange and green are the modes (Mode.color), grey is what a
# line is compared with, and every other meaning has a colour of its own below.
GREY = "#A3A3A3"  # a reference: a formula, a floor, the exact run, the other kind of cache
GREY_TEXT = "#737373"  # a note written on a chart (darker than GREY: text needs more contrast than a line)
SERIES_COLORS = ["#8B5CF6", "#0EA5E9", "#EAB308", "#EC4899", "#14B8A6", "#84CC16", "#6366F1", "#E11D48",
                 "#78716C", "#06B6D4"]  # layers, cache variants, model sizes: no mode's colour, no grey
NEW_ROW_COLOR = "#E11D48"  # the row a step computes for the first time
CAUSAL_COLOR, NO_MASK_COLOR = "#14B8A6", "#EC4899"  # the model run with its causal mask, and without it
HELD_COLOR, ALLOCATED_COLOR = "#0EA5E9", "#8B5CF6"  # KV bytes holding real tokens, and bytes reserved for them
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
        font={"size": style.font, "family": display.CHART_FONT},
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


def _colorbar(title: str = "weight") -> dict:
    """A thin colour bar: narrow screens keep their width for the map."""
    return {"title": {"text": title, "side": "top"}, "thickness": 12, "xpad": 4}
