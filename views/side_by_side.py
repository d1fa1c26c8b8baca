"""Side by side: every step's top tokens and logit difference, cached vs recompute."""

import streamlit as st

from gptviz import display, plots, ui_state
from views._runs import require
from views._style import chart, intro

st.title("Side by side: cache vs recompute, step by step")
intro(
    "Each row is one step of writing. On the left the cached model's favourite next tokens, on the right the "
    "recomputing model's. The numbers in the middle say how different their scores (logits) were. They are "
    "not exactly zero, because the two ways add the same numbers in a different order, but they sit at the "
    "level of rounding error of the number format. Switch **Precision** to float64 in the sidebar and watch "
    "the gap collapse."
)
result = require()
run = result.run
if run.recompute is None:
    st.warning("This run has no recompute trace to compare with.")
    st.stop()

table, recompute = ui_state.step_table(run), run.summary().recompute
eps = plots.machine_epsilon(run.cached.dtype)
cols = st.columns(3)
cols[0].metric("Largest |Δlogit|", f"{recompute.max_abs_dlogit:.2e}")
cols[1].metric(f"{run.cached.dtype} machine epsilon", f"{eps:.1e}")
cols[2].metric("Steps where the top token agrees", f"{recompute.argmax_agreement:.0%}")

chart("logit_delta", plots.logit_delta_look_for(run), plots.logit_delta, run)
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "max |Δlogit|": st.column_config.NumberColumn(format="%.2e"),
    "KL": st.column_config.NumberColumn(format="%.1e"),
    **{c: st.column_config.NumberColumn(format="%.1f") for c in table.columns if c.endswith(" ms")},
})
st.caption(f"KL is the divergence between the two next-token distributions, in nats. Tokens: {display.NOTATION}.")
