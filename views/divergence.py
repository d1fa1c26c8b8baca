"""Divergence lab: where batched, padded, chunked, other-kernel and other-precision logits part from one prompt."""

import streamlit as st

from gptviz import divergence
from gptviz.divergence import figures
from gptviz.serve import tasks
from views._model import loaded
from views._runs import require
from views._style import chart, intro
from views._wait import shared_result


def divergence_report(lm, source: str, dtype: str,
                      settings: divergence.DivergenceSettings) -> divergence.DivergenceReport:
    """From the server's queue (one timed job at a time): computed once per model + settings, for every session.
    Keyed by the model loaded (``lm.name``, not the name asked for); a worker loads ``source`` and checks it is
    that model."""
    divergence.validate(settings, lm.tokenizer, lm.model.config)  # a bad setting is refused at once, unqueued
    with st.spinner("Running every case on this model: one job at a time on this server, shared by every session "
                    "asking for these settings…", show_time=True):
        return shared_result(("divergence", lm.name, dtype, settings),
                             tasks.DivergenceLab(settings, source, dtype, lm.name, lm),
                             size=settings.max_new_tokens, size_kind=("divergence", lm.name, dtype))


st.title("Divergence lab: where “the same logits” stops being true")
intro(
    "Batching prompts, padding them, feeding the prompt in chunks, another attention kernel, another number "
    "format: each should give the logits of the prompt decoded alone. Each case below is computed on **this** "
    "model and fed **the same tokens** as the prompt alone, step by step; it also runs on its own choices, to "
    "show where its text parts. Within the rounding tolerance it is *the same computation, rounded differently*; "
    "beyond it, *a different computation*."
)
result = require()
lm = loaded(result)
default = divergence.DivergenceSettings()
c = st.columns([4, 1])
other = c[0].text_area("Other prompt (the batch partner; longer than the prompt)", default.other_prompt,
                       key="div_other", height=68)
chunks = c[1].number_input("Prefill chunks", 0, 1024, default.chunks, key="div_chunks",
                           help="the prompt goes through the cache in this many forward calls")
s = result.settings
settings = divergence.DivergenceSettings(prompt=s.prompt, other_prompt=other, max_new_tokens=s.max_new_tokens,
                                         chunks=int(chunks))
try:
    report = divergence_report(lm, s.source, s.dtype, settings)
    st.session_state["div_good"] = (lm.name, s.dtype, settings)
except divergence.DivergenceError as exc:
    st.error(f"**Cannot run this:** {exc}")
    good = st.session_state.get("div_good")
    if good is None or good[:2] != (lm.name, s.dtype):
        st.stop()
    report = divergence_report(lm, s.source, s.dtype, good[2])  # the last good result, from the server's store
st.caption(f"Reference: the {len(report.prompt_ids)}-token prompt alone ({report.attn_implementation} attention), "
           f"greedy, {len(report.reference_tokens)} tokens; the other prompt has {len(report.other_ids)}. Computed "
           f"in {report.seconds:.1f} s, shared by every session asking for these settings.")
frame = report.to_frame()
m = st.columns(2)
m[0].metric(divergence.SAME.capitalize(), f"{int(frame['exact_up_to_rounding'].sum())} of {len(frame)} cases")
m[1].metric(divergence.DIFFERENT.capitalize(), f"{int((~frame['exact_up_to_rounding']).sum())} of {len(frame)}")
for case in report.cases:
    sign = "≤" if case.exact_up_to_rounding else ">"
    icon = ":green[:material/check_circle:]" if case.exact_up_to_rounding else ":red[:material/cancel:]"
    st.markdown(f"{icon} **{case.title}:** {case.verdict} — max |Δlogit| {case.max_abs_dlogit:.1e} {sign} "
                f"{case.tolerance:.1e} ({case.dtype} rounding). *{case.why[:1].upper()}{case.why[1:]}.*")
small = st.column_config.NumberColumn(format="%.1e")
st.dataframe(frame[["case", "exact_up_to_rounding", "max_abs_dlogit", "tolerance", "kl", "first_flip",
                    "first_text_divergence"]], hide_index=True, width="stretch",
             height=35 * (len(frame) + 1) + 3,  # every row, no scrolling
             column_config={"exact_up_to_rounding": "rounding only",
                            "max_abs_dlogit": st.column_config.NumberColumn("max |Δlogit|", format="%.1e"),
                            "tolerance": small, "kl": st.column_config.NumberColumn("max KL", format="%.1e"),
                            "first_flip": "first argmax flip (step)", "first_text_divergence": "text parts (step)"})
chart("div_steps", "solid lines (rounding only) stay under their format's dashed tolerance at every step; dotted "
      "lines (different computations) sit orders of magnitude above it.", figures.per_step, report)
if report.precision_skipped:
    st.info(f"The precision cases were skipped: {report.precision_skipped}")

st.subheader("The texts")
st.markdown("**The prompt alone:**")
st.code(report.reference_text, language=None, wrap_lines=True)
for case in report.cases:
    if case.first_text_divergence is not None:
        st.markdown(f"**{case.title}** (parts at step {case.first_text_divergence}):")
        st.code(report.free_texts[case.name], language=None, wrap_lines=True)
if all(case.first_text_divergence is None for case in report.cases):
    st.markdown("Every case continues with exactly the same text.")
