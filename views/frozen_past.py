"""Why the past is frozen: hidden-state drift of past positions with and without the causal mask."""

import streamlit as st

from gptviz import compare, plots
from views._model import hidden_drift, loaded
from views._runs import require
from views._style import chart, intro

st.title("Why the past is frozen")
intro(
    "Wouldn't it be better to recompute old tokens, now that more text has arrived? Not in GPT-2: the "
    "**causal mask** stops every token from looking at later ones, so appending a word cannot change anything "
    "already computed, and recomputing gives the same numbers. Below we append one token at a time and measure "
    "how far the old tokens' hidden states move, with the mask and with it switched off."
)
result = require()
run = result.run
lm = loaded(result)
context = lm.model.config.n_positions
ids = tuple(run.cached.prompt_ids + run.cached.token_ids)[:context]  # a run that fills the context chose one more
if len(run.cached.prompt_ids) + len(run.cached.token_ids) > context:
    st.caption(f"The run's last token lies past the model's context of {context} positions (it was never fed "
               f"back): the drift is measured on the first {context}.")
if len(ids) < 3:
    st.info("Need at least 3 tokens (prompt + generated) to measure drift.")
    st.stop()
most = min(32, len(ids) - 2)  # prefixes of 2 .. len(ids) - 1 tokens, each with one token appended
if most > 1:
    points = st.slider("Prefix lengths to test", 1, most, min(8, most), key="drift_points",
                       help="each one runs the model twice with and twice without the mask")
else:
    points = 1
    st.caption("One prefix length to test (a prefix of 2 tokens, then the third appended): generate more tokens "
               "to test more.")
drift = hidden_drift(lm, lm.name, result.settings.dtype, ids, points)

masked, unmasked = (compare.largest_drift(drift, causal) for causal in (True, False))
cols = st.columns(2)
cols[0].metric("Largest drift with the causal mask", f"{masked:.1e}")
cols[1].metric("Largest drift without the mask", f"{unmasked:.2f}")
chart("hidden_drift", "with the mask the drift is rounding error (the "
      "numbers on the bars); without it the old states move by a visible amount at every layer.",
      plots.hidden_drift, drift)

st.markdown(
    "**With the mask**, the old positions do not move (at most rounding error): a cache that stores their "
    "keys and values is exact, not an approximation. **Without the mask** every token sees the future, so "
    "each new token changes all the old states — a model like that would have to recompute everything at "
    "every step (*iterative refinement*), and no cache could help. GPT-2 was *trained* with the mask, which "
    "is what makes caching exact; switching the mask off here only shows the other world (the model was "
    "never trained for it, so its text would be nonsense)."
)
