"""Time and FLOPs per step, per mode: flat vs growing."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from gptviz import anatomy, cost
from gptviz.modes import Mode
from gptviz.plots._base import (
    GREY,
    _from_zero,
    _layout,
    _log_axis,
)

# ---- Timing ---------------------------------------------------------------------------------------

def step_times(run, floor_seconds: float | None = None) -> go.Figure:
    """Wall time of every step per mode vs tokens in context; the prefill pass drawn as a diamond.

    The line is each step's fastest timed pass; a bar above it reaches its slowest (the spread)."""
    c = run.comparison
    fig = go.Figure()
    for mode, seconds in c.seconds.items():
        color = mode.color
        trace = run.traces[mode]
        slowest = np.array([max(trace.counted(s)) for s in trace.steps])  # (steps,)
        spread = {"type": "data", "symmetric": False, "array": (slowest - seconds)[c.decoding], "arrayminus": None,
                  "color": color, "thickness": 1, "width": 0}
        fig.add_trace(go.Scatter(x=c.context_len[c.decoding], y=seconds[c.decoding], mode="lines+markers",
                                 name=mode.label, line={"color": color}, legendgroup=mode, error_y=spread))
        fig.add_trace(go.Scatter(x=c.context_len[:1], y=seconds[:1], mode="markers",
                                 name=f"{mode.label}: prefill (step 0)", legendgroup=mode, showlegend=False,
                                 marker={"symbol": "diamond", "size": 12, "color": color}))
    _from_zero(fig)
    if floor_seconds is not None:  # named in the legend: a label on the line would sit on the data near 0
        ends = [int(c.context_len.min()), int(c.context_len.max())]
        fig.add_trace(go.Scatter(x=ends, y=[floor_seconds] * 2, mode="lines", hoverinfo="skip",
                                 name="memory-bandwidth floor: read every weight once",
                                 line={"dash": "dash", "color": GREY}))
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
        flops = [cost.step_flops(shape, mode, int(t), q, run.cached.slots)
                 for t, q in zip(c.context_len, inputs, strict=True)]
        fig.add_trace(go.Scatter(x=c.step, y=flops, mode="lines+markers", name=Mode(mode).label,
                                 line={"color": Mode(mode).color}))
    every = [v for trace in fig.data for v in trace.y]
    return _layout(fig, "Analytic FLOPs per step", xaxis_title="step", yaxis=_log_axis("FLOPs", every))
