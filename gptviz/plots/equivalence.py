"""Same answers both ways: logit differences, past-state drift, the logit lens."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gptviz import display
from gptviz.modes import Mode
from gptviz.plots._base import (
    CAUSAL_COLOR,
    GREY,
    GREY_TEXT,
    LABELLED_SCALE,
    NO_MASK_COLOR,
    _colorbar,
    _columns,
    _from_zero,
    _layout,
    _log_axis,
    _needs,
    machine_epsilon,
)

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
    fig.add_hline(y=eps, line_dash="dash", line_color=GREY)
    # On a log axis an annotation's y is log10 of the value (add_hline's own label lands elsewhere).
    fig.add_annotation(x=0, xref="paper", xanchor="left", y=np.log10(eps), yref="y", yanchor="bottom",
                       text=f"{run.cached.dtype} machine epsilon {eps:.1e}", showarrow=False,
                       font={"color": GREY_TEXT})
    return _layout(fig, "Largest logit difference per step (× = exactly equal)", xaxis_title="step",
                   yaxis=_log_axis("max |Δlogit|", drawn))


def logit_delta_look_for(run) -> str:
    """What to look for under logit_delta, from this run's numbers: whether step 0 is exact, how big the later
    differences are against the machine epsilon, and whether they grow along the run."""
    _needs(run, Mode.RECOMPUTE)
    deltas = np.max([a.max_abs_dlogit for a in run.comparison.agreement.values()], axis=0)  # (steps,) worst mode
    eps = machine_epsilon(run.cached.dtype)
    first = ("step 0 is exact (×: both read the prompt the same way)" if deltas[0] == 0
             else f"step 0 already differs by {deltas[0]:.1e}")
    later = deltas[1:]
    if len(later) < 2:
        return f"{first}."
    early, late = later[: len(later) // 2].max(), later[len(later) // 2:].max()
    trend = ("and do not grow: the cache is not drifting" if late <= 10 * max(early, eps)
             else f"and grow along the run (from {early:.1e} in the first half to {late:.1e})")
    worst = later.max()
    return f"{first}; later differences stay within {worst:.1e} ({worst / eps:.0f}× machine epsilon) {trend}."


# ---- Why the past is frozen -----------------------------------------------------------------------

def hidden_drift(frame: pd.DataFrame) -> go.Figure:
    """Past positions' hidden-state drift per layer, with and without the causal mask
    (the output of compare.hidden_state_drift for causal=True and False, concatenated)."""
    _columns(frame, ["prefix_len", "layer", "causal", "drift"],
             "pd.concat([compare.hidden_state_drift(m, ids, causal=c) for c in (True, False)])")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("largest drift per layer", "drift vs prefix length"))
    for causal, name, color in ((True, "with causal mask", CAUSAL_COLOR), (False, "without mask", NO_MASK_COLOR)):
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
