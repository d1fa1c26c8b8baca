"""Overview: the headline of this run, and the generated text token by token."""

import streamlit as st

import gptviz
from gptviz import cost, display, ui_state
from views._model import loaded
from views._runs import require
from views._style import intro

st.title("Does GPT-2 re-read the whole text for every new token?")
intro(
    "A language model writes one token at a time. It can either **keep** what it computed for the earlier "
    "tokens (a *KV cache*: only the newest token goes in) or **recompute** everything from scratch at each "
    "step. We just ran the same model both ways on the same prompt. If both give the same answers, the "
    "cache is a free lunch, and the other pages show why."
)
result = require()
run, summary = result.run, result.run.summary()
recompute = summary.recompute

st.caption(f"Model: **{result.model_name}** · {summary.prompt_tokens} prompt tokens · "
           f"{summary.steps} new tokens · {summary.dtype} · {run.settings.cache} cache · "
           f"{run.settings.sampling} · whole run {result.seconds:.1f} s")
cols = st.columns(5)
if recompute is not None:
    cols[0].metric("Same tokens both ways?", "yes" if recompute.same_tokens else
                   f"no, from step {recompute.first_disagreement}",
                   help="At every step, the token the recompute pass's own logits choose (greedy: their argmax; "
                        "sampling: the same seeded sampler applied to them) against the token the cache chose. "
                        f"Argmax agreement {recompute.argmax_agreement:.0%}.")
    cols[1].metric("Largest logit difference", f"{recompute.max_abs_dlogit:.2e}",
                   help="max |Δlogit| over every step and vocabulary entry, cached vs recompute")
    cols[2].metric("Speed-up from the cache", display.speedup(recompute.speedup),
                   help=f"recompute {recompute.recompute_seconds:.3f} s vs cached {summary.cached_seconds:.3f} s "
                        "of forward passes")
if recompute is not None:
    shape = cost.Shape.of(loaded(result).model)
    flops = cost.FlopsRatio.of(shape, run.cached)
    cols[4].metric("FLOPs ratio, same run", display.speedup(flops.ratio),
                   help=f"recompute {flops.mode_flops:,} vs cached {flops.cached_flops:,} FLOPs (the cost model on "
                        "the Timing page): what the speed-up would be if time followed arithmetic alone. "
                        "It does not depend on the machine.")
unit = display.byte_unit(summary.kv_cache_allocated)
cols[3].metric("KV cache at the end", display.in_unit(summary.kv_cache_bytes, unit),
               help=f"allocated: {display.in_unit(summary.kv_cache_allocated, unit)} ({run.settings.cache} cache)")

if recompute is not None and not recompute.same_tokens:
    st.warning(f"From step {recompute.first_disagreement} on, the recompute pass's own logits would have chosen "
               "another token than the cache did (it kept following the cached tokens, so every step stays "
               "comparable). Look at the **Side by side** page for the size of the difference.")
note = None if recompute is None else display.speedup_note(recompute.speedup, loaded(result).info["parameters"],
                                                            summary.prompt_tokens + summary.steps)
if note:
    st.caption(note + " The **Timing** page shows the FLOPs it saves.")

st.subheader("What it wrote")
left, right = st.columns(2)
left.caption("Prompt")
left.code(run.prompt, language=None, wrap_lines=True)
right.caption("Continuation (chosen by the cached run; the recompute runs were fed these tokens)")
right.code(run.text, language=None, wrap_lines=True)
st.caption("Each generated token and the step that produced it (step 0 is the pass over the prompt):")
st.dataframe(ui_state.token_steps(run), hide_index=True, width="stretch", height=240)

with st.expander("Download the traces"):
    st.caption("One row per step (CSV), or everything including attention maps (JSON, reload with "
               "`gptviz.Trace.from_json`).")
    for mode, trace in run.traces.items():
        c1, c2, c3 = st.columns([2, 1, 1])
        c1.write(gptviz.Mode(mode).label)
        # Callables: a trace is serialised only when its button is clicked, not on every rerun.
        c2.download_button("CSV", lambda t=trace: t.to_frame().to_csv(index=False), f"gptviz-{mode}.csv",
                           "text/csv", key=f"csv_{mode}", on_click="ignore")
        c3.download_button("JSON", lambda t=trace: t.to_json(), f"gptviz-{mode}.json", "application/json",
                           key=f"json_{mode}", on_click="ignore")
