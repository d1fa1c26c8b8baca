"""KV cache: how many bytes the remembered keys and values take, and how they are laid out."""

import streamlit as st

from gptviz import anatomy, cost, plots, registry, ui_state
from views import _common as common

st.title("The KV cache: what is remembered, and how big it gets")
common.intro(
    "To skip recomputing, each layer keeps the **keys** and **values** of every token so far: two tensors of "
    "shape `[batch, heads, tokens, head_dim]`. They grow by one token per step. A *dynamic* cache grows by "
    "concatenation; a *static* cache reserves room for the longest text up front and writes into it. The "
    "memory is the price we pay for the speed."
)
result = common.require()
run = result.run
trace = run.cached
last = trace.steps[-1]
bytes_per_value = cost.DTYPE_BYTES[trace.dtype]
formula = cost.kv_bytes(trace.layers, trace.heads, trace.head_dim, last.context_len, bytes_per_value)

cols = st.columns(4)
cols[0].metric("Measured at the end", f"{sum(last.kv_bytes):,} B")
cols[1].metric("Formula 2·L·H·d·t·bytes", f"{formula:,} B", delta="matches" if formula == sum(last.kv_bytes)
               else f"{sum(last.kv_bytes) - formula:+,} B", delta_color="off", delta_arrow="off")
cols[2].metric("Allocated", f"{sum(last.kv_allocated):,} B", help=f"{trace.cache_kind} cache")
cols[3].metric("Per token", f"{cost.kv_bytes(trace.layers, trace.heads, trace.head_dim, 1, bytes_per_value):,} B")

common.chart(plots.kv_per_layer(run), key="kv_per_layer")
common.chart(plots.kv_allocation(run), key="kv_allocation")

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
    common.chart(plots.kv_what_if(shapes, int(tokens), dtype), key="kv_what_if")
    st.dataframe(ui_state.what_if_table(shapes, int(tokens), dtype), hide_index=True, width="stretch")
else:
    st.caption("Pick at least one model.")
