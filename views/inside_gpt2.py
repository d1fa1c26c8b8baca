"""Inside GPT-2: the loaded model's shapes, its tied output projection, and the logit lens."""

import streamlit as st

from gptviz import anatomy, display, plots
from views._model import loaded, logit_lens
from views._runs import require
from views._style import chart, intro

st.title("Inside GPT-2")
intro(
    "This is the model that just wrote for us, opened up. Text becomes token ids, each id picks a row of the "
    "**embedding matrix**, the rows pass through a stack of identical blocks, and the final vectors are "
    "compared with every row of that **same** embedding matrix to score each possible next token. Below, "
    "the read-out is applied after every block, so you can watch the guess take shape."
)
result = require()
lm = loaded(result)
info = lm.info

cols = st.columns(5)
cols[0].metric("Blocks (layers)", info["layers"])
cols[1].metric("Heads per block", info["heads"])
cols[2].metric("Width d_model", info["d_model"])
cols[3].metric("Vocabulary", f"{info['vocab']:,}")
cols[4].metric("Parameters", f"{info['parameters'] / 1e6:.2f} M")

st.subheader("Is the output projection a separate matrix?")
tied = anatomy.tied_embeddings(lm.model)
st.write(f"`lm_head.weight is transformer.wte.weight` → **{tied['same_object']}**; same memory address → "
         f"**{tied['same_memory']}**; largest difference → **{tied['max_abs_difference']}**. "
         f"One `{tied['shape'][0]} × {tied['shape'][1]}` matrix serves both as the input embedding and the output "
         f"projection, saving {tied['saved_parameters']:,} parameters.")
with st.expander("Every weight of the embeddings, block 0 and the head"):
    st.dataframe(anatomy.parameter_shapes(lm.model), hide_index=True, width="stretch")

st.subheader("How logits arise: the logit lens")
text = st.text_area("Text to read (the prompt, so the last row is the run's first token)", value=result.run.prompt,
                    key="lens_text", height=100)
k = st.slider("Top tokens per layer", 1, 10, 5, key="lens_k")
try:
    lens = logit_lens(lm, lm.name, result.settings.dtype, text, k)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
chart("lens", "the early layers guess common tokens; the guess settles in "
      "the last layers, and the last row is the model's real choice.", plots.lens_top_tokens, lens)
final = lens[lens["layer"] == lens["layer"].max()].iloc[0]
st.caption(f"The last row is exactly the model's own prediction: {display.token(final['token'])} with probability "
           f"{final['probability']:.1%}. Layer 0 is the raw embedding read back through the tied matrix. "
           f"Tokens: {display.NOTATION}.")
