"""The shared sidebar: model, prompt, presets and decode settings, and the presenter toggle.

Sidebar widgets are bound to the URL (``bind="query-params"``), so the address bar is always a
shareable link to the current view.
"""

from __future__ import annotations

import streamlit as st

from gptviz import ui_state
from gptviz.settings import CACHES, DTYPES, SAMPLINGS
from gptviz.ui_state import AppSettings
from views._links import URL
from views._model import policy
from views._style import PRESENT


def _use_preset() -> None:
    st.session_state["prompt"] = ui_state.PRESETS[st.session_state["preset"]]


def sidebar() -> AppSettings:
    """The shared controls; returns what they describe (nothing runs here)."""
    sb, limits = st.sidebar, policy()
    d = AppSettings  # every default and choice below is the library's (gptviz.settings, through AppSettings)
    choice = sb.selectbox("Model", ui_state.model_choices(limits), key="model", bind=URL,
                          help="'bundled' is a small GPT-2 trained on Shakespeare that works offline; the Hub "
                               "models fall back to it when the Hub cannot be reached.")
    source, directory = choice, sb.container()  # always there: the widgets below keep their place (app.py)
    if choice == ui_state.LOCAL_CHOICE:
        source = directory.text_input("Model directory", key="dir", bind=URL,
                                      placeholder="/path/to/a/gpt2-checkpoint (config.json + *.safetensors)")
    sb.selectbox("Classroom prompts", list(ui_state.PRESETS), key="preset", index=None,
                 placeholder="Pick a preset…", on_change=_use_preset)
    # The prompt is set one way, through session state (the default here, a preset's callback): a widget
    # given a value= as well makes Streamlit warn "created with a default value but also set via the
    # Session State API". A link's ?prompt= still wins: it is read when the widget binds to the URL.
    if "prompt" not in st.session_state and "prompt" not in st.query_params:
        st.session_state["prompt"] = d.prompt
    prompt = sb.text_area("Prompt", key="prompt", bind=URL, height=100)
    # No min/max on the number fields: the browser would keep showing a typed 0 while the last valid value
    # runs. Whatever is typed is what runs, and DecodeSettings.validate says why it cannot.
    max_new = sb.number_input("Max new tokens", value=min(d.max_new_tokens, limits.max_new_tokens),
                              step=1, key="new", bind=URL, help=f"this server's cap: {limits.max_new_tokens}")
    sampling = sb.radio("Choosing tokens", SAMPLINGS, index=SAMPLINGS.index(d.sampling), key="sampling", bind=URL,
                        horizontal=True)
    greedy = sampling == "greedy"
    cols = sb.columns(2)
    temperature = cols[0].number_input("Temperature", value=d.temperature, step=0.05, key="temperature", bind=URL,
                                       disabled=greedy)
    seed = cols[1].number_input("Seed", value=d.seed, step=1, key="seed", bind=URL, disabled=greedy)
    top_k = cols[0].number_input("Top-k (0 = off)", value=d.top_k, step=1, key="top_k", bind=URL, disabled=greedy)
    top_p = cols[1].number_input("Top-p (1 = off)", value=d.top_p, step=0.01, key="top_p", bind=URL, disabled=greedy)
    dtype = sb.segmented_control("Precision", list(DTYPES), default=d.dtype, required=True,
                                 key="dtype", bind=URL)
    cache = sb.segmented_control("KV cache", CACHES, default=d.cache, required=True, key="cache",
                                 bind=URL, help="dynamic grows with every token; static is preallocated")
    return AppSettings(source=(source or "").strip(), prompt=prompt, max_new_tokens=int(max_new), sampling=sampling,
                       temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), seed=int(seed),
                       dtype=dtype, cache=cache)


PRESENT_HELP = ("For a projector: larger text and token labels, the Attention panes side by side, no chart "
                "toolbar, page introductions folded away. Kept in the share link (?present=true).")


def presenter_toggle(where) -> bool:
    return where.toggle("Presenter mode", key=PRESENT, bind=URL, help=PRESENT_HELP)
