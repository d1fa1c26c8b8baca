"""Every plot function on a small hand-built Run (no model): data present, shapes right, bad input refused."""

import numpy as np
import pandas as pd
import pytest
import torch

import gptviz
from gptviz import cost, display, plots, registry
from gptviz.compare import Comparison
from gptviz.decoding import DecodeSettings, Run
from gptviz.modes import Mode
from gptviz.trace import Step, Trace

PROMPT, STEPS, LAYERS, HEADS, HEAD_DIM = 3, 5, 2, 3, 4


def packed_attention(total: int, seed: int) -> torch.Tensor:
    """(layers, heads, T(T+1)/2) causal softmax rows, packed like a Trace stores them."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(LAYERS, HEADS, total, total))
    scores[..., np.triu_indices(total, k=1)[0], np.triu_indices(total, k=1)[1]] = -np.inf
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    rows, cols = np.tril_indices(total)
    return torch.from_numpy(weights[..., rows, cols]).to(torch.float16)


DELTAS = [0.0, 1e-7, 2e-7, 5e-8, 3e-7]  # the recompute mode's logit difference at each step (0: bitwise equal)


def make_trace(mode: str, dtype: str = "float32", cache_kind: str | None = "dynamic", steps: int = STEPS) -> Trace:
    bytes_per_value = cost.DTYPE_BYTES[dtype]
    per_layer_token = 2 * HEADS * HEAD_DIM * bytes_per_value
    recorded = []
    for s in range(steps):
        context = PROMPT + s
        held = [per_layer_token * context] * LAYERS
        allocated = [per_layer_token * (PROMPT + steps - 1)] * LAYERS if cache_kind == "static" else held
        recorded.append(Step(
            index=s, token_id=7 + s % 2, token_text="a" if s % 2 else " b", input_len=context if s == 0 else 1,
            context_len=context, seconds=0.01 * (1 + s) if mode != "cached" else 0.01,
            layer_seconds=[0.001 * (layer + 1) * (1 + s) for layer in range(LAYERS)],
            kv_bytes=held if mode == "cached" else [0] * LAYERS,
            kv_allocated=allocated if mode == "cached" else [0] * LAYERS,
            top_ids=[7, 8, 1, 2, 3], top_logits=[5.0, 4.0, 3.0, 2.0, 1.0],
            slice_delta=None if s == 0 or mode == "cached" else 1e-8, top_texts=["<7>", "<8>", "<1>", "<2>", "<3>"]))
    total = PROMPT + steps - 1
    return Trace(mode=mode, model_name="hand-built", dtype=dtype, cache_kind=cache_kind if mode == "cached" else None,
                 prompt_ids=[1, 2, 3], prompt_tokens=["x", "x", "\n"], layers=LAYERS, heads=HEADS, head_dim=HEAD_DIM,
                 steps=recorded, attention=packed_attention(total, seed=SEEDS[mode]))  # each mode its own maps


SEEDS = {"cached": 0, "recompute": 1, "recompute_last": 2}  # distinct data: a pane drawing the wrong trace shows


def make_logits(mode: str, steps: int) -> torch.Tensor:
    """(steps, vocab) last-position logits: the cached mode's, or them moved by DELTAS at one entry."""
    logits = torch.from_numpy(np.random.default_rng(1).normal(size=(steps, 50)))  # float64: deltas stay exact
    if mode != "cached":
        logits[:, 0] += torch.tensor(DELTAS[:steps] if mode == "recompute" else [1e-7] * steps, dtype=torch.float64)
    return logits


def make_run(modes=("cached", "recompute", "recompute_last"), dtype="float32", cache_kind="dynamic",
             steps: int = STEPS) -> Run:
    """A Run with hand-built traces, compared by the real producer (compare.Comparison.of)."""
    traces = {m: make_trace(m, dtype, cache_kind, steps) for m in modes}
    comparison = Comparison.of({m: t.steps for m, t in traces.items()}, {m: make_logits(m, steps) for m in modes},
                               np.zeros(steps) if "recompute" in modes else None)
    return Run("xx\n", DecodeSettings(max_new_tokens=steps, modes=modes, cache=cache_kind), "hand-built", traces,
               comparison, "ba" * 2)


@pytest.fixture
def run():
    return make_run()


def heatmaps(fig):
    return [t for t in fig.data if t.type == "heatmap"]


# ---- Side by side ------------------------------------------------------------------------------

def test_logit_delta_draws_each_recompute_mode_with_zero_marked_and_machine_epsilon(run):
    fig = plots.logit_delta(run)
    assert [t.name.split(" vs")[0] for t in fig.data] == ["recompute (whole sequence)",
                                                          "recompute, last-position logits only"]
    recompute = fig.data[0]
    eps = float(torch.finfo(torch.float32).eps)
    assert recompute.y[0] == pytest.approx(eps * 1e-3)  # the exact zero sits below epsilon, not at 0
    assert list(recompute.marker.symbol) == ["x", "circle", "circle", "circle", "circle"]
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.shapes[0].y0 == pytest.approx(eps)


def test_what_to_look_for_under_logit_delta_is_computed_from_the_run(tiny_model, tokenizer):
    """The Side by side caption: 'step 0 is exact' only when it is, growth only when the numbers grow."""
    real = gptviz.run(tiny_model, tokenizer, "hello there", gptviz.DecodeSettings(max_new_tokens=8))
    agreements = real.comparison.agreement.values()
    worst = max(a.max_abs_dlogit[1:].max() for a in agreements)
    assert f"stay within {worst:.1e}" in plots.logit_delta_look_for(real)
    for agreement in agreements:  # here recompute_last's step 0 differs (6e-8: another matmul shape); make it 0
        agreement.max_abs_dlogit[0] = 0.0
    note = plots.logit_delta_look_for(real)
    assert note.startswith("step 0 is exact") and "do not grow" in note
    for agreement in agreements:  # force the bad cases on the real comparison
        agreement.max_abs_dlogit[0] = 3e-6
        agreement.max_abs_dlogit[-1] = 0.5
    note = plots.logit_delta_look_for(real)
    assert note.startswith("step 0 already differs by 3.0e-06") and "grow along the run" in note
    assert "to 5.0e-01" in note


def test_logit_delta_epsilon_follows_the_dtype():
    fig = plots.logit_delta(make_run(dtype="float64"))
    assert fig.layout.shapes[0].y0 == pytest.approx(float(torch.finfo(torch.float64).eps))


def test_logit_delta_needs_a_recompute_trace():
    with pytest.raises(ValueError, match="modes=.*recompute"):
        plots.logit_delta(make_run(modes=("cached",)))


def test_machine_epsilon_refuses_unknown_dtype():
    with pytest.raises(ValueError, match="float32"):
        plots.machine_epsilon("int8")


def test_token_labels_stay_unique_for_repeated_tokens(run):
    labels = plots.token_labels(run.cached)
    assert len(labels) == len(set(labels)) == PROMPT + STEPS
    assert labels[2] == "2:⏎" and labels[3] == "3:␣b"


# ---- Attention ---------------------------------------------------------------------------------

@pytest.mark.parametrize("step", [0, 3])
def test_attention_panes_show_cached_rows_beside_the_lower_triangular_recompute_map(run, step):
    fig = plots.attention_panes(run, layer=1, head=2, step=step)
    left, right = heatmaps(fig)
    t = PROMPT + step
    new_rows = PROMPT if step == 0 else 1
    assert np.asarray(left.z).shape == (new_rows, t)
    full = np.asarray(right.z, dtype=float)
    assert full.shape == (t, t)
    assert np.isnan(full[np.triu_indices(t, k=1)]).all()  # the masked future is blank, not zero
    expected = run.recompute.attention_map(1, 2, step)
    np.testing.assert_allclose(full[np.tril_indices(t)], expected[np.tril_indices(t)])
    cached = run.cached.attention_map(1, 2, step)[t - new_rows:t]  # the left pane is the cached trace's rows
    np.testing.assert_allclose(np.nan_to_num(np.asarray(left.z, dtype=float)), np.tril(cached, k=t - new_rows))
    assert not np.allclose(cached, expected[t - new_rows:t])  # the two traces differ here: a swap would show
    boxes = [(s.y0, s.y1) for s in fig.layout.shapes]
    assert (t - new_rows - 0.5, t - 0.5) in boxes  # the newly computed row(s)
    assert ((-0.5, t - new_rows - 0.5) in boxes) == (step > 0)  # the rows merely re-computed


@pytest.mark.parametrize("kwargs, message", [({"layer": 2, "head": 0, "step": 0}, "layer must be .* 0 to 1"),
                                             ({"layer": 0, "head": -1, "step": 0}, "head must be .* 0 to 2"),
                                             ({"layer": 0, "head": 0, "step": STEPS}, "step must be .* 0 to 4")])
def test_attention_panes_refuse_out_of_range_indices(run, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plots.attention_panes(run, **kwargs)


def test_attention_plots_need_recorded_attention(run):
    run.recompute.attention = None
    with pytest.raises(ValueError, match="record_attention=True"):
        plots.attention_panes(run, 0, 0, 1)
    with pytest.raises(ValueError, match="record_attention=True"):
        plots.attention_heads(run.recompute, 0, 1)


def test_attention_growth_reveals_one_more_row_per_frame(run):
    fig = plots.attention_growth(run, layer=0, head=1)
    total = PROMPT + STEPS - 1
    assert np.asarray(fig.data[0].z).shape == (total, total)
    assert [f.name for f in fig.frames] == [str(s) for s in range(STEPS)]
    for step, frame in enumerate(fig.frames):
        t = PROMPT + step
        covers = [s for s in frame.layout.shapes if s.fillcolor]
        assert [c.y0 for c in covers] == ([t - 0.5] if t < total else [])
    assert fig.layout.updatemenus[0].buttons[0].method == "animate"


def test_attention_heads_draws_every_head_of_the_layer(run):
    fig = plots.attention_heads(run.recompute, layer=1, step=2)
    maps = heatmaps(fig)
    assert len(maps) == HEADS
    assert all(np.asarray(m.z).shape == (PROMPT + 2, PROMPT + 2) for m in maps)


# ---- KV cache ----------------------------------------------------------------------------------

def test_kv_per_layer_stacks_the_measured_bytes_and_the_formula_on_top(tiny_model, tokenizer):
    """On a real run (bytes read off the cache's tensors) the stack meets the formula; a forced mismatch shows."""
    real = gptviz.run(tiny_model, tokenizer, "hello there", gptviz.DecodeSettings(max_new_tokens=5,
                                                                                  modes=("cached",)))
    fig = plots.kv_per_layer(real)
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == tiny_model.config.n_layer and fig.layout.barmode == "stack"
    np.testing.assert_allclose(np.sum([b.y for b in bars], axis=0), fig.data[-1].y)
    real.cached.steps[2].kv_bytes[0] //= 2  # a layer that held half of what it should
    fig = plots.kv_per_layer(real)
    stacked = np.sum([t.y for t in fig.data if t.type == "bar"], axis=0)
    assert stacked[2] < fig.data[-1].y[2] and stacked[3] == pytest.approx(fig.data[-1].y[3])


def test_kv_allocation_compares_static_preallocation_with_dynamic_growth():
    fig = plots.kv_allocation(make_run(cache_kind="static"))
    unit, size = display.byte_unit(max(fig.data[0].y) * 1024)  # the axis is in KiB here
    assert fig.layout.yaxis.title.text == "KiB"
    allocated, held, dynamic = (np.asarray(t.y) * 1024 for t in fig.data)
    per_token = cost.kv_bytes(LAYERS, HEADS, HEAD_DIM, 1, 4)
    np.testing.assert_allclose(allocated, [per_token * (PROMPT + STEPS - 1)] * STEPS)  # measured = preallocation;
    # the last chosen token is never fed, so the static cache holds no slot for it
    np.testing.assert_allclose(held, dynamic)  # what it holds is what a dynamic cache would have grown to
    assert "static" in fig.data[0].name and "dynamic" in fig.data[2].name


def test_kv_allocation_legend_lists_only_lines_that_can_be_seen():
    """A dynamic cache allocates exactly what it holds: one measured line, not three stacked on each other."""
    fig = plots.kv_allocation(make_run(cache_kind="dynamic"))
    assert len(fig.data) == 2 and "allocated = holding" in fig.data[0].name and "static" in fig.data[1].name
    assert not np.array_equal(fig.data[0].y, fig.data[1].y)
    assert fig.layout.yaxis.rangemode == "tozero"


def test_kv_what_if_draws_one_line_per_model_up_to_the_length():
    fig = plots.kv_what_if(registry.SHAPES, 2048, "float16")
    assert [t.name for t in fig.data] == list(registry.SHAPES)
    gpt2 = next(t for t in fig.data if t.name == "gpt2")
    assert gpt2.x[-1] == 2048 and gpt2.y[-1] * 2**20 == cost.kv_bytes(12, 12, 64, 2048, 2)
    assert fig.layout.yaxis.title.text == "MiB" and fig.layout.yaxis.type == "log"  # one unit family: binary


@pytest.mark.parametrize("args, message", [({}, "registry.SHAPES"), (registry.SHAPES, "tokens"),
                                           (registry.SHAPES, "dtype")])
def test_kv_what_if_refuses_bad_input(args, message):
    tokens, dtype = (0, "float32") if message == "tokens" else (16, "int4" if message == "dtype" else "float32")
    with pytest.raises(ValueError, match=message):
        plots.kv_what_if(args, tokens, dtype)


# ---- Timing ------------------------------------------------------------------------------------

def test_step_times_draws_decode_steps_and_prefill_per_mode_with_the_floor(run):
    fig = plots.step_times(run, floor_seconds=0.002)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(lines) == 3 and all(len(t.y) == STEPS - 1 for t in lines)
    assert len([t for t in fig.data if t.mode == "markers"]) == 3  # one prefill point per mode
    floor = [t for t in fig.data if t.mode == "lines"]
    assert len(floor) == 1 and set(floor[0].y) == {0.002} and "floor" in floor[0].name
    assert not [t for t in plots.step_times(run).data if t.mode == "lines"]


def test_cumulative_times_fit_matches_exact_quadratic_growth(run):
    fig = plots.cumulative_times(run)
    recompute_points, recompute_fit = fig.data[2], fig.data[3]
    np.testing.assert_allclose(recompute_fit.y, recompute_points.y, atol=1e-12)  # linear steps: quadratic total
    assert len(fig.data) == 6


def test_cumulative_times_needs_three_decode_steps():
    run = make_run(steps=3)
    with pytest.raises(ValueError, match="at least 4 new tokens"):
        plots.cumulative_times(run)


def test_layer_times_averages_decode_steps_per_layer(run):
    fig = plots.layer_times(run)
    assert len(fig.data) == 3
    expected = np.mean([[0.001 * (layer + 1) * (1 + s) for layer in range(LAYERS)] for s in range(1, STEPS)], axis=0)
    np.testing.assert_allclose(fig.data[0].y, expected)


def test_prefill_decode_compares_step_zero_with_mean_decode(run):
    fig = plots.prefill_decode(run)
    recompute = fig.data[1]
    assert recompute.y[0] == pytest.approx(0.01)
    assert recompute.y[1] == pytest.approx(np.mean([0.02, 0.03, 0.04, 0.05]))


def test_step_flops_follow_the_cost_model(run):
    shape = cost.Shape(LAYERS, HEADS, HEADS * HEAD_DIM, 50)
    fig = plots.step_flops(run, shape)
    cached = fig.data[0]
    assert cached.y[0] == cost.step_flops(shape, "cached", PROMPT, PROMPT)
    assert cached.y[1] == cost.step_flops(shape, "cached", PROMPT + 1, 1)
    assert fig.data[1].y[-1] == cost.step_flops(shape, "recompute", PROMPT + STEPS - 1)


# ---- Frozen past and inside GPT-2 -------------------------------------------------------------

def drift_frame():
    return pd.DataFrame([{"prefix_len": t, "layer": layer, "causal": causal,
                          "drift": 0.0 if causal or layer == 0 else 0.1 * layer / t}
                         for causal in (True, False) for t in (2, 4, 6) for layer in range(3)])


def test_hidden_drift_shows_masked_and_unmasked_worst_drift_per_layer():
    fig = plots.hidden_drift(drift_frame())
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["with causal mask", "without mask"]
    np.testing.assert_allclose(bars[0].y, [0, 0, 0])
    np.testing.assert_allclose(bars[1].y, [0, 0.05, 0.1])
    lines = [t for t in fig.data if t.type == "scatter"]
    assert list(lines[1].x) == [2, 4, 6]


def test_hidden_drift_refuses_a_table_without_the_columns():
    with pytest.raises(ValueError, match="hidden_state_drift"):
        plots.hidden_drift(drift_frame().drop(columns="causal"))


def test_lens_top_tokens_is_a_layers_by_rank_grid():
    frame = pd.DataFrame([{"layer": layer, "rank": r, "token": f"t{r}" if r else "\n", "probability": 0.5 / (r + 1)}
                          for layer in range(4) for r in range(3)])
    fig = plots.lens_top_tokens(frame)
    assert np.asarray(fig.data[0].z).shape == (4, 3)
    assert fig.data[0].text[0][0] == "⏎"


def test_lens_top_tokens_refuses_an_empty_table():
    with pytest.raises(ValueError, match="logit_lens"):
        plots.lens_top_tokens(pd.DataFrame(columns=["layer", "rank", "token", "probability"]))


def test_epsilon_label_sits_on_its_line(run):
    """On a log axis an annotation's y is log10 of the value; the label must be where the dashed line is."""
    fig = plots.logit_delta(run)
    eps = plots.machine_epsilon("float32")
    label = [a for a in fig.layout.annotations if "epsilon" in a.text][0]
    assert label.y == pytest.approx(np.log10(eps)) and label.yref == "y"
    assert fig.layout.shapes[0].y0 == pytest.approx(eps)


def test_log_axes_label_whole_decades(run):
    fig = plots.logit_delta(run)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.dtick in (1, 2, 3)
    assert fig.layout.yaxis.exponentformat == "power"


@pytest.mark.parametrize("make", [lambda r: plots.step_times(r), lambda r: plots.cumulative_times(r)])
def test_time_axes_start_at_zero(run, make):
    assert make(run).layout.yaxis.rangemode == "tozero"


def test_styled_wraps_the_title_left_and_restyles_on_request(run):
    fig = plots.logit_delta(run)
    assert "<br>" in fig.layout.title.text and fig.layout.title.x == 0 and fig.layout.title.xanchor == "left"
    legend = fig.layout.legend  # in a row at the bottom of the figure, below the axis title
    assert legend.orientation == "h" and legend.yref == "container" and legend.y == 0
    plots.styled(fig, display.PRESENTER)
    assert fig.layout.font.size == display.PRESENTER.font and fig.layout.xaxis.tickfont.size == display.PRESENTER.ticks
    assert fig.layout.title.text.count("<br>") == 0  # the wider presenter title fits on one line
    assert fig.layout.margin.t > display.PRESENTER.title  # room for the title above the plot


def test_attention_panes_side_by_side_put_the_new_row_level_with_the_red_row(run):
    fig = plots.attention_panes(run, 0, 0, 2, side_by_side=True, height=500)
    cached, full = fig.data
    assert fig.layout.height == 500 and list(cached.y) == list(full.y)  # one query axis
    z = np.asarray(cached.z, dtype=float)
    rows = run.cached.step_rows(2)
    assert np.isnan(z[: rows.start]).all() and not np.isnan(z[rows.start, 0])  # only the new row is drawn
    np.testing.assert_allclose(z[rows.start, : rows.stop], run.cached.attention_map(0, 0, 2)[rows.start])
    np.testing.assert_allclose(np.asarray(full.z, dtype=float)[rows.start, : rows.stop],
                               run.recompute.attention_map(0, 0, 2)[rows.start])  # each pane its own trace
    assert fig.layout.xaxis2.domain[0] > fig.layout.xaxis.domain[1]  # left and right, not stacked


def test_on_a_real_run_the_cached_row_equals_the_recomputed_row(tiny_model, tokenizer):
    """The lesson the side-by-side panes draw, on real traces (each pane reads its own): equal to rounding."""
    real = gptviz.run(tiny_model, tokenizer, "hello there", gptviz.DecodeSettings(max_new_tokens=6))
    cached, full = plots.attention_panes(real, 1, 1, 4, side_by_side=True, height=500).data
    row = real.cached.step_rows(4).start
    left, right = (np.asarray(p.z, dtype=float)[row, : row + 1] for p in (cached, full))
    np.testing.assert_allclose(left, right, atol=2e-3)  # float16 storage of two different computations
    assert left.sum() == pytest.approx(1, abs=1e-2)  # a softmax row, not a blank one


def test_attention_growth_opens_at_the_requested_step(run):
    fig = plots.attention_growth(run, 0, 0, start=3)
    slider = fig.layout.sliders[0]
    assert slider.steps[slider.active].label == "3"
    assert fig.layout.updatemenus[0].pad.t > slider.pad.t  # the buttons below the slider, not over its labels


def trace_colors(trace) -> set[str]:
    """The colours a trace is drawn in (line and marker; a per-point array of colours counts each)."""
    found = set()
    for part in ("line", "marker"):
        color = getattr(getattr(trace, part, None), "color", None)
        found |= {color} if isinstance(color, str) else {c for c in (color if color is not None else ()) if
                                                          isinstance(c, str)}
    return found


def test_a_modes_colour_marks_that_mode_and_nothing_else(run):
    """Blue, orange and green mean the three modes on every chart; a mask, a byte count or a layer has its own."""
    static = make_run(cache_kind="static")
    figures = [plots.logit_delta(run), plots.attention_panes(run, 0, 0, 2), plots.attention_heads(run.recompute, 0, 2),
               plots.kv_per_layer(run), plots.kv_allocation(run), plots.kv_allocation(static),
               plots.kv_what_if(registry.SHAPES, 2048, "float16"), plots.step_times(run, floor_seconds=0.001),
               plots.cumulative_times(run), plots.layer_times(run), plots.prefill_decode(run),
               plots.step_flops(run, cost.Shape(LAYERS, HEADS, HEADS * HEAD_DIM, 50, 64)),
               plots.hidden_drift(drift_frame())]
    colour_of = {Mode(m).color: Mode(m) for m in Mode}
    seen = set()
    for fig in figures:
        for trace in fig.data:
            for color in trace_colors(trace) & set(colour_of):
                mode = colour_of[color]
                seen.add(mode)
                assert mode.label in (trace.name or "") or trace.legendgroup == mode, (fig.layout.title.text,
                                                                                       trace.name, color)
    assert seen == set(Mode)  # the check saw every mode's colour where it belongs
