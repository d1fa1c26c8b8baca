"""KV cache: how many bytes the remembered keys and values take, and how they are laid out."""

import streamlit as st

from gptviz import anatomy, display, plots, registry, ui_state
from views._runs import require
from views._style import chart, intro

st.title("The KV cache: what is remembered, and how big it gets")
intro(
    "To skip recomputing, each layer keeps the **keys** and **values** of every token so far: two tensors of "
    "shape `[batch, heads, tokens, head_dim]`. They grow by one token per step. A *dynamic* cache grows by "
    "concatenation; a *static* cache reserves room for the longest text up front and writes into it. The "
    "memory is the price we pay for the speed."
)
result = require()
run = result.run
trace = run.cached
kv = anatomy.KVTotals.of(trace)

unit = display.byte_unit(kv.allocated)  # one unit family (binary) for every figure on this page
cols = st.columns(4)
cols[0].metric("Measured at the end", display.in_unit(kv.measured, unit), help=f"{kv.measured:,} B")
cols[1].metric("Formula 2·L·H·d·t·bytes", display.in_unit(kv.formula, unit), help=f"{kv.formula:,} B",
               delta="matches to the byte" if kv.formula == kv.measured else f"{kv.measured - kv.formula:+,} B",
               delta_color="off", delta_arrow="off")
cols[2].metric("Allocated", display.in_unit(kv.allocated, unit), help=f"{kv.allocated:,} B, {trace.cache_kind} cache")
cols[3].metric("Per token", display.in_unit(kv.per_token, display.byte_unit(kv.per_token)), help=f"{kv.per_token:,} B")

chart("kv_per_layer", "every layer grows by the same amount each step, and the "
      "stack lands exactly on the formula's diamonds: the cache holds nothing but keys and values.",
      plots.kv_per_layer, run)
chart("kv_allocation", "a dynamic cache grows by one token a step; a static one "
      "reserves the whole length at the start and fills it in.", plots.kv_allocation, run)

st.subheader("Layout after the last step")
st.caption(f"`[batch, heads, slots, head_dim]` per layer, read off this run's {trace.cache_kind} cache.")
st.dataframe(anatomy.kv_layout(run), hide_index=True, width="stretch")

st.subheader("What if: bigger models, longer texts")
c1, c2, c3 = st.columns([3, 1, 1])
names = c1.multiselect("Models", list(registry.SHAPES), default=["gpt2", "gpt2-medium", "gpt2-xl"], key="wi_models")
tokens = c2.number_input("Tokens", 1, 1_000_000, 1024, step=256, key="wi_tokens")
dtype = c3.selectbox("Number format", ["float16", "float32"], index=1, key="wi_dtype")
if names:
    shapes = {n: registry.SHAPES[n] for n in names}
    chart("kv_what_if", "every line grows in proportion to the "
          "text, and the gap between two models is the same factor at every length (layers × width).",
          plots.kv_what_if, shapes, int(tokens), dtype)
    st.dataframe(ui_state.what_if_table(shapes, int(tokens), dtype), hide_index=True, width="stretch")
else:
    st.caption("Pick at least one model.")
