"""Timing: per-step and total cost of each way of decoding, measured and fitted."""

import streamlit as st

from gptviz import anatomy, cost, display, plots, ui_state
from views._model import loaded, memory_bandwidth
from views._runs import require
from views._style import chart, intro

st.title("Timing: flat vs growing")
intro(
    "With a cache, every new token costs about the same: one token goes through the network. Recomputing "
    "pushes the whole text through again, so each step gets a little slower and the total grows roughly "
    "with the square of the length. The third variant recomputes everything but only turns the last "
    "position into word scores, which is all that is needed to pick the next token."
)
result = require()
run, summary = result.run, result.run.summary()
recompute = summary.recompute
lm = loaded(result)

cols = st.columns(4)
cols[0].metric("Cached, total", f"{summary.cached_seconds * 1000:.0f} ms")
if recompute is not None:
    cols[1].metric("Recompute, total", f"{recompute.recompute_seconds * 1000:.0f} ms")
    low, high = recompute.speedup_range
    passes = (f"From each step's fastest of {summary.timed_passes} timed passes; the passes one by one gave "
              f"{low:.2f}× to {high:.2f}×.")
    cols[2].metric("Speed-up", display.speedup(recompute.speedup), help=passes if display.is_gain(recompute.speedup)
                   else display.no_gain_reason(lm.info["parameters"], summary.prompt_tokens + summary.steps))
weights = cost.weight_bytes(lm.model)
bandwidth = memory_bandwidth()
floor = cost.step_floor_seconds(weights, bandwidth)
cols[3].metric("Bandwidth floor per cached step", f"{floor * 1000:.2f} ms",
               help=f"{display.size(weights)} of weights ÷ {bandwidth.read / 1e9:.1f} GB/s measured read bandwidth "
                    f"(copy: {bandwidth.copy / 1e9:.1f} GB/s): a decode step must read every weight at least once.")

chart("step_times", "the cached steps stay flat as the text "
      "grows, the recompute steps climb; on a small model both sit near the fixed cost of a call.",
      plots.step_times, run, floor_seconds=floor)
threads = run.info.get("torch_threads")  # absent from a run stored before it was recorded
st.caption(f"Wall-clock times on this computer{display.threads(threads)}; {run.timing.describe()}. The modes take "
           "turns step by step, so that anything else running hits them alike; each point is a step's fastest pass "
           "and its bar reaches the slowest." + ("" if run.timing.complete else " More timed passes are running; "
                                                 "these numbers update by themselves, and the last-position variant "
                                                 "joins with the next pass."))
if summary.busy:
    st.warning(f"The machine was busy during this run: the steps' median times were {summary.timing_spread - 1:.0%} "
               "above their fastest. The speed-up uses each step's fastest pass; press **Run** for a fresh "
               "measurement when the computer is quieter.", icon=":material/speed:")
if run.comparison.decoding.sum() >= 3:
    fits = anatomy.growth_fit(run.comparison)
    chart("cumulative_times", "the cached total is a straight line; the "
          "recompute total bends upward (its dashed fit has a positive n² term).", plots.cumulative_times, run)
    st.caption("How the decode steps grew: the median of the last quarter of steps over the first quarter — "
               + ", ".join(f"{f.mode.label} {f.per_step_growth:.1f}×" for f in fits)
               + ". Flat is ≈1×; a linear per-step cost makes the total quadratic.")
    st.dataframe(ui_state.growth_table(fits), hide_index=True, width="stretch")
else:
    st.caption("Generate at least 4 tokens to fit how the cost grows.")
c1, c2 = st.columns(2)
with c1:
    chart("prefill_decode", "prefill costs about the same every way; the modes "
          "part in the decode steps.", plots.prefill_decode, run)
with c2:
    chart("layer_times", "every block costs about the same, and the cache "
          "makes each one cheaper.", plots.layer_times, run)
shape = cost.Shape.of(lm.model)
chart("step_flops", "the cache's work per step is nearly flat; recompute's "
      "grows with every token (the gap is about the number of tokens in context).", plots.step_flops, run, shape)
last = run.cached.steps[-1].context_len
st.caption(f"At the last step the cached pass needs {cost.step_flops(shape, 'cached', last, 1, run.cached.slots):,} "
           f"FLOPs and the recompute pass {cost.step_flops(shape, 'recompute', last):,}.")
