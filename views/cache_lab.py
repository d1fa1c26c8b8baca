"""Cache lab: what quantized, windowed, sink, shared-prefix, paged and grouped-query caches cost and buy."""

import streamlit as st

from gptviz import display, lab
from gptviz.lab import figures, quanto
from gptviz.serve import tasks
from views._model import loaded
from views._runs import require
from views._style import chart, intro
from views._wait import shared_result


def lab_report(lm, source: str, dtype: str, settings: lab.LabSettings) -> lab.LabReport:
    """From the server's queue (one timed job at a time): computed once per model + settings, for every session.
    Keyed by the model loaded (``lm.name``, not the name asked for); a worker loads ``source`` and checks it is
    that model."""
    lab.check(settings, lm.model.config, lm.tokenizer)  # a bad setting is refused at once, without queueing
    with st.spinner("Running every cache variant on this model: one job at a time on this server, shared by "
                    "every session asking for these settings…", show_time=True):
        state = quanto.state()  # int4/int2 join once the server's build is done
        return shared_result(("lab", lm.name, dtype, settings, state),
                             tasks.CacheLab(settings, source, dtype, lm.name, lm, quanto=state),
                             size=settings.max_new_tokens, size_kind=("lab", lm.name, dtype))


st.title("Cache lab: what a smaller KV cache costs")
intro(
    "Real servers shrink the KV cache: fewer bits, a window of recent tokens, shared prefixes, fewer K/V heads. "
    "Each variant below is a real transformers cache object run on **this** model and fed **the same tokens** as "
    "the exact cache, so every step compares like for like; its bytes are read off the cache's own tensors."
)
result = require()
lm = loaded(result)
heads, context = lm.model.config.n_head, lm.model.config.n_positions
c, default = st.columns(5), lab.LabSettings()
window = c[0].number_input("Window W", 0, 100_000, min(default.window, context), key="lab_window",
                           help="tokens each new token attends to, itself included")
sinks = c[1].number_input("Sinks S", 0, 100_000, default.sinks, key="lab_sinks",
                          help="first tokens kept beside the window")
groups = c[2].number_input("GQA groups G", 1, 1024, lab.suggested_groups(heads), key="lab_groups",
                           help=f"K/V heads after mean-pooling; must divide the model's {heads} heads")
backends = c[3].multiselect("Quantized KV", lab.BACKENDS, default=list(lab.BACKENDS), key="lab_backends")
block = c[4].slider("Block size", 0, 64, default.block_size, key="lab_block", help="tokens per paged KV block")
s = result.settings
settings = lab.LabSettings(prompt=s.prompt, max_new_tokens=s.max_new_tokens, window=int(window), sinks=int(sinks),
                           groups=int(groups), backends=tuple(backends))
try:
    report = lab_report(lm, s.source, s.dtype, settings)
    paged = report.paged(int(block))
    st.session_state["lab_good"] = (lm.name, s.dtype, settings, int(block))
except lab.LabError as exc:
    st.error(f"**Cannot run this:** {exc}")
    good = st.session_state.get("lab_good")
    if good is None or good[:2] != (lm.name, s.dtype):
        st.stop()
    report = lab_report(lm, s.source, s.dtype, good[2])  # the last good result, straight from the cache
    paged = report.paged(good[3])
st.caption(f"{len(report.exact_tokens)} tokens after a {len(report.prompt_ids)}-token prompt; computed in "
           f"{report.seconds:.1f} s, shared by every session asking for these settings.")
for backend, reason in report.missing.items():
    st.info(f"**{backend}** left out: {reason}")
st.dataframe(report.summary(), hide_index=True, width="stretch")
chart("lab_drift", "each line's height is what that cache costs in exactness: "
      "a window is exact until it fills, quantized and pooled caches differ from the first step.",
      figures.drift, report)
chart("lab_bytes", "a window stops growing once it is full, fp8 holds about a "
      "quarter of float32, and fewer K/V heads divide the bytes by the group size.", figures.cache_bytes, report)
st.markdown(lab.text.variants(report))

st.subheader("Precision: why cached ≠ recomputed")
st.markdown(lab.text.precision(report))
if report.precision.rows:
    small = st.column_config.NumberColumn(format="%.1e")
    st.dataframe(report.precision.summary(), hide_index=True, width="stretch",
                 column_config={lab.PRECISION_LABELS[k]: small for k in ("max_abs_cached_vs_recompute",
                                                                          "max_abs_vs_float64")})
    chart("lab_precision", lab.text.precision_gaps(report.precision), figures.precision_gap, report.precision)

st.subheader("Shared prefix: prefill once, continue twice")
p = report.prefix
m = st.columns(4)
m[0].metric("Shared prefix", f"{p.shared_tokens} tokens", help=f"{p.prefix_bytes:,} B of KV held once")
m[1].metric("Max |Δlogit| vs fresh prefill", f"{max(p.max_abs):.1e}")
m[2].metric("Prefill, both fresh", f"{p.fresh_seconds * 1e3:.1f} ms")
m[3].metric("Prefill, prefix reused", f"{p.reused_seconds * 1e3:.1f} ms")
st.markdown(lab.text.prefix(report))
st.dataframe(p.to_frame(), hide_index=True, width="stretch")

st.subheader("Paged blocks: reserve per block, not per maximum length")
st.dataframe(paged.summary(), hide_index=True, width="stretch")
chart("lab_blocks", "sequences that share a prompt point at the same physical "
      "blocks; only each sequence's last block is partly empty.", figures.block_table, paged)

st.subheader("KV size of any model: count K/V heads, not query heads")
k = st.columns([3, 1])
name = k[0].selectbox("A known config", list(lab.KNOWN_CONFIGS), index=len(lab.KNOWN_CONFIGS) - 3, key="lab_cfg")
tokens = k[1].number_input("Tokens", 1, 10_000_000, 8192, key="lab_tokens")
pasted = st.text_area("…or paste a config.json", key="lab_json", height=80)
try:
    size = lab.kv_size(lab.parse_config(pasted) if pasted.strip() else lab.KNOWN_CONFIGS[name], int(tokens))
    m = st.columns(2)
    unit = display.byte_unit(size.total_if_query_heads)  # the larger: both figures in one unit
    m[0].metric(f"KV cache at {size.tokens:,} tokens", display.in_unit(size.total, unit))
    m[1].metric("Counted with query heads instead", display.in_unit(size.total_if_query_heads, unit),
                help=f"{size.overstatement:.0f}× too much")
    st.dataframe(size.to_frame(), hide_index=True, width="stretch")
except lab.LabError as exc:
    st.error(f"**Cannot size this config:** {exc}")
