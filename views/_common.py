"""What every page shares: the one model loader, the sidebar, running with live progress, the current result.

Results are kept in ``st.session_state`` keyed by the settings that produced them, so moving
a slider on a page (a rerun of the script) never runs the model again; only the Run button,
or settings nobody has run yet on a first visit, do. Sidebar widgets are bound to the URL
(``bind="query-params"``), so the address bar is always a shareable link to the current view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import streamlit as st

import gptviz
from gptviz import anatomy, cost, ui_state
from gptviz.decoding import warm_up
from gptviz.hosting import Policy
from gptviz.ui_state import AppSettings

MAX_KEPT_RUNS = 4  # per browser session; a run of the bundled model holds a few MiB of attention
MAX_KEPT_RUNS_HOSTED = 1  # a shared server: GPT-2 runs hold up to ~100 MiB each, times every student
URL = "query-params"


def policy() -> Policy:
    """GPTVIZ_HOSTED=1 on a shared server: allow-listed models, capped runs (read each rerun: cheap)."""
    return Policy.from_env()


@st.cache_resource(show_spinner="Loading the model (once per server)…", max_entries=4)
def load_model(source: str, dtype: str) -> gptviz.LoadedModel:
    """The only place a model is loaded: once per (source, dtype) for every session of this server."""
    policy().check_source(source)  # a shared server loads only its allow-listed models
    lm = gptviz.load(source, dtype, fallback_to_bundled=True, allow_local=policy().allow_local)
    warm_up(lm.model, lm.tokenizer)  # else the first run's cached mode pays one-time costs
    return lm


@dataclass
class Result:
    settings: AppSettings
    run: gptviz.Run
    model_name: str  # what was actually loaded (the bundled model after a fallback)
    notice: str | None  # why a fallback happened
    seconds: float  # wall time of the whole run, all modes


def _use_preset() -> None:
    st.session_state["prompt"] = ui_state.PRESETS[st.session_state["preset"]]


def sidebar() -> AppSettings:
    """The shared controls; returns what they describe (nothing runs here)."""
    sb, limits = st.sidebar, policy()
    choice = sb.selectbox("Model", ui_state.model_choices(limits), key="model", bind=URL,
                          help="'bundled' is a small GPT-2 trained on Shakespeare that works offline; the Hub "
                               "models fall back to it when the Hub cannot be reached.")
    source = choice
    if choice == ui_state.LOCAL_CHOICE:
        source = sb.text_input("Model directory", key="dir", bind=URL,
                               placeholder="/path/to/a/gpt2-checkpoint (config.json + *.safetensors)")
    sb.selectbox("Classroom prompts", list(ui_state.PRESETS), key="preset", index=None,
                 placeholder="Pick a preset…", on_change=_use_preset)
    prompt = sb.text_area("Prompt", value=AppSettings.prompt, key="prompt", bind=URL, height=100)
    max_new = sb.number_input("Max new tokens", min_value=1, max_value=limits.max_new_tokens,
                              value=min(AppSettings.max_new_tokens, limits.max_new_tokens), key="new", bind=URL)
    sampling = sb.radio("Choosing tokens", ["greedy", "sample"], key="sampling", bind=URL, horizontal=True)
    greedy = sampling == "greedy"
    cols = sb.columns(2)
    temperature = cols[0].number_input("Temperature", 0.05, 5.0, 1.0, 0.05, key="temperature", bind=URL,
                                       disabled=greedy)
    seed = cols[1].number_input("Seed", 0, 2**31 - 1, 0, key="seed", bind=URL, disabled=greedy)
    top_k = cols[0].number_input("Top-k (0 = off)", 0, 100_000, 0, key="top_k", bind=URL, disabled=greedy)
    top_p = cols[1].number_input("Top-p (1 = off)", 0.01, 1.0, 1.0, 0.01, key="top_p", bind=URL, disabled=greedy)
    dtype = sb.segmented_control("Precision", ["float32", "float64"], default="float32", required=True,
                                 key="dtype", bind=URL)
    cache = sb.segmented_control("KV cache", ["dynamic", "static"], default="dynamic", required=True, key="cache",
                                 bind=URL, help="dynamic grows with every token; static is preallocated")
    return AppSettings(source=(source or "").strip(), prompt=prompt, max_new_tokens=int(max_new), sampling=sampling,
                       temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), seed=int(seed),
                       dtype=dtype, cache=cache)


def _runs() -> dict:
    return st.session_state.setdefault("gptviz_runs", {})


def current() -> Result | None:
    """The result on screen: the last successful run (bad input never replaces it)."""
    return _runs().get(st.session_state.get("gptviz_shown"))


def _decode_with_progress(settings: AppSettings) -> Result:
    limits = policy().limits
    decode = settings.decode_settings().validate(limits)  # before loading: nothing to load for a bad request
    lm = load_model(settings.source, settings.dtype)
    total, done, produced = settings.max_new_tokens * len(decode.modes), 0, []
    with st.status(f"Decoding with {lm.name}…", expanded=True) as status:
        bar = st.progress(0.0, text="starting")
        text = st.empty()

        shown_at = 0.0

        def on_step(mode: str, step: int, token_id: int) -> None:
            nonlocal done, shown_at
            done += 1
            if mode == "cached":
                produced.append(lm.tokenizer.decode([token_id]))
            # At most ~8 screen updates a second: sending them takes the GIL from the timed forward passes.
            last = step + 1 == settings.max_new_tokens
            if time.perf_counter() - shown_at < 0.12 and not last:
                return
            shown_at = time.perf_counter()
            bar.progress(done / total, text=f"{gptviz.Mode(mode).label}: step {step + 1} of "
                                            f"{settings.max_new_tokens}")
            if mode == "cached":  # tokens appear as the cached decoder chooses them
                text.text(settings.prompt + "".join(produced))

        started = time.perf_counter()
        try:
            run = gptviz.run(lm.model, lm.tokenizer, settings.prompt, decode, model_name=lm.name, on_step=on_step,
                             limits=limits)
        except gptviz.DecodeError:
            status.update(label="Could not decode this input", state="error")
            raise
        seconds = time.perf_counter() - started
        status.update(label=f"Done: {settings.max_new_tokens} tokens, {len(decode.modes)} ways, {seconds:.1f} s",
                      state="complete", expanded=False)
    return Result(settings, run, lm.name, lm.notice, seconds)


def run_if_needed(settings: AppSettings, clicked: bool) -> None:
    """Decode when asked (or on a first visit); otherwise reuse a kept result for settings already run.

    Run with unchanged settings decodes again on purpose: fresh timings on a noisy machine.
    """
    runs = _runs()
    if settings.key in runs and not clicked:  # already computed for exactly these inputs: no model call
        st.session_state["gptviz_shown"] = settings.key
        return
    if not (clicked or current() is None):
        st.info("The sidebar settings changed: press **Run** to decode them. Showing the previous run below.")
        return
    try:
        result = _decode_with_progress(settings)
    except (gptviz.DecodeError, gptviz.ModelLoadError) as exc:
        st.error(f"**Cannot run this:** {exc}")
        return
    runs.pop(settings.key, None)  # re-insert: the newest run is the last one evicted
    runs[settings.key] = result
    while len(runs) > (MAX_KEPT_RUNS_HOSTED if policy().hosted else MAX_KEPT_RUNS):
        runs.pop(next(iter(runs)))  # oldest first
    st.session_state["gptviz_shown"] = settings.key


def show_notice() -> None:
    result = current()
    if result is not None and result.notice:
        st.warning(result.notice, icon=":material/cloud_off:")


def require() -> Result:
    """The result to draw; stops the page with a hint when there is none yet."""
    result = current()
    if result is None:
        st.info("No results yet: choose a model and a prompt in the sidebar and press **Run**.")
        st.stop()
    return result


def loaded(result: Result) -> gptviz.LoadedModel:
    """The model that produced ``result`` (from the shared cache; never loaded twice)."""
    return load_model(result.settings.source, result.settings.dtype)


def intro(text: str) -> None:
    st.markdown(text)


@st.cache_data(show_spinner="Running the model with and without the causal mask…", max_entries=16)
def hidden_drift(_lm: gptviz.LoadedModel, source: str, dtype: str, token_ids: tuple[int, ...],
                 points: int) -> pd.DataFrame:
    """Drift with and without the mask; keyed by model + tokens (``_lm`` is not hashed)."""
    return pd.concat([gptviz.compare.hidden_state_drift(_lm.model, list(token_ids), causal=c, points=points)
                      for c in (True, False)], ignore_index=True)


@st.cache_data(show_spinner=False, max_entries=32)
def logit_lens(_lm: gptviz.LoadedModel, source: str, dtype: str, text: str, k: int) -> pd.DataFrame:
    return anatomy.logit_lens(_lm.model, _lm.tokenizer, text, k)


@st.cache_resource(show_spinner="Measuring memory bandwidth…")
def memory_bandwidth() -> cost.Bandwidth:
    return cost.measure_bandwidth()


def chart(fig, key: str) -> None:
    """A plotly figure with the PNG export button kept in the toolbar."""
    st.plotly_chart(fig, key=key, config={"displaylogo": False, "toImageButtonOptions": {"format": "png",
                                                                                        "filename": key}})
