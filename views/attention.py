"""Attention: the cached mode's single new row next to the recompute mode's full map."""

import streamlit as st

from gptviz import plots
from gptviz.modes import Mode
from views import _links
from views._runs import require
from views._style import chart, intro, style

st.title("Attention: one new row, or the whole triangle again?")
intro(
    "Every row of an attention map is one token looking back at the tokens before it. With a cache, each step "
    "computes just **one new row**. Recomputing builds the **whole triangle** again, but the rows above the "
    "red one come out the same as last time, because a token can never look ahead. Drag the step slider, or "
    "press play below, and compare the two panes."
)
result = require()
run = result.run
trace = run.recompute
if trace is None or trace.attention is None:
    st.warning("This run kept no recompute attention maps.")
    st.stop()

given = _links.link_values("layer", "head", "step")
c1, c2, c3 = st.columns([1, 1, 3])
layer = c1.selectbox("Layer", range(trace.layers), key="layer", bind=_links.URL)
head = c2.selectbox("Head", range(trace.heads), key="head", bind=_links.URL)
if len(trace.steps) > 1:
    step = c3.slider("Step", 0, len(trace.steps) - 1, style().open_step(len(trace.steps)), key="step",
                     bind=_links.URL)
else:  # a 1-token run has only the prefill step: nothing to slide through
    step = 0
    c3.caption("Step 0 is this run's only step (1 new token): generate more to step through.")
    if given["step"] is not None:
        del st.query_params["step"]  # no slider holds it: a link copied now must not carry it
_links.note_page_values(given, {"layer": layer, "head": head, "step": step},
                        {"layer": f"layers 0–{trace.layers - 1}", "head": f"heads 0–{trace.heads - 1}",
                         "step": f"steps 0–{len(trace.steps) - 1}" if len(trace.steps) > 1 else "step 0 only"})

comparison = run.comparison
m1, m2, m3 = st.columns(3)
m1.metric("Rows computed this step (cache)", len(run.cached.step_rows(step)))
m2.metric("Rows computed this step (recompute)", run.recompute.steps[step].context_len)
slice_delta = comparison.slice_delta[step]
m3.metric("Re-computed rows vs stored: max |Δ|", "—" if slice_delta != slice_delta else f"{slice_delta:.1e}",
          help="The slice proof: the recompute pass derived the old rows again and they match what was stored "
               "at earlier steps (all layers and heads).")
st.caption(f"New row(s), cache vs recompute, max |Δ| over all layers and heads: {comparison.attn_row_delta[step]:.1e}")
look = style()  # a projector shows the panes side by side; a phone stacks them
chart("attention_panes", "the cache's one row is the same as the recompute map's red row; every row above that was "
      "already known and comes out the same again.", plots.attention_panes, run, layer, head, step,
      side_by_side=look.panes_side_by_side, height=look.pane_height or None)

st.subheader(f"All heads of layer {layer}")
which = st.segmented_control("Map", [Mode.RECOMPUTE, Mode.CACHED], default=Mode.RECOMPUTE, required=True,
                             key="grid_mode",
                             help="cached: the rows the cache computed up to this step (the same triangle)")
chart("attention_heads", "every head is a lower "
      "triangle: no token looks at a later one (the causal mask), so old rows cannot change.",
      plots.attention_heads, run.traces[which], layer, step)

st.subheader("Play it")
st.caption("The final map with later rows greyed out: at every step the recompute map is just the top-left "
           "corner of the final one.")
chart("attention_growth", "press ▶: each step only "
      "uncovers a new row at the bottom; the rows already showing never change.",
      plots.attention_growth, run, layer, head, step)
