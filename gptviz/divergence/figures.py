"""Divergence-lab figures: a DivergenceReport in, a plotly Figure out."""

from __future__ import annotations

import plotly.graph_objects as go

from gptviz.plots import GREY, GREY_TEXT, SERIES_COLORS


def per_step(report) -> go.Figure:
    """Per step and case: max |Δlogit| against its reference on a log scale; each format's tolerance dashed."""
    fig = go.Figure()
    for i, case in enumerate(report.cases):
        y = [d if d > 0 else None for d in case.deltas.max_abs]  # log axis: an exact 0 has no place
        dash = "solid" if case.exact_up_to_rounding else "dot"
        fig.add_scatter(x=list(range(len(y))), y=y, name=case.name, mode="lines+markers",
                        line={"color": SERIES_COLORS[i % len(SERIES_COLORS)], "dash": dash}, marker={"size": 4})
    steps = len(report.reference_tokens)
    for dtype, tol in dict.fromkeys((c.dtype, c.tolerance) for c in report.cases):  # one line per format
        fig.add_scatter(x=[0, steps - 1], y=[tol] * 2, name=f"tolerance, {dtype}", mode="lines+text",
                        text=["", f"{dtype} tolerance"], textposition="top left", textfont={"color": GREY_TEXT},
                        line={"color": GREY, "dash": "dash", "width": 2}, showlegend=False)
    fig.update_layout(title="How far each case is from its reference, step by step (an exact 0 is not drawn)",
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 60, "b": 40}, xaxis_title="step",
                      yaxis_title="max |Δlogit| (log)")
    fig.update_yaxes(type="log", exponentformat="power")
    return fig
