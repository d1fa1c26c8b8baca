"""What every page shares: the one model loader, the sidebar, running with live progress, the current result.

Decoding is the server's job (gptviz.serve): one queue for every session, one decode per
settings however many students ask at once, finished runs shared. Each session keeps the
results it was shown in ``st.session_state``, keyed by the settings that produced them, so
moving a slider on a page (a rerun of the script) never runs the model again; only the Run
button, or settings nobody has run yet on a first visit, do. Sidebar widgets are bound to the URL
(``bind="query-params"``), so the address bar is always a shareable link to the current view.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pandas as pd
import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

import gptviz
from gptviz import anatomy, cost, display, plots, serve, ui_state
from gptviz.decoding import warm_up
from gptviz.hosting import Policy
from gptviz.ui_state import AppSettings

MAX_KEPT_RUNS = 4  # per browser session; a run of the bundled model holds a few MiB of attention
MAX_KEPT_RUNS_HOSTED = 1  # a shared server: GPT-2 runs hold up to ~100 MiB each, times every student
URL = "query-params"
POLL_SECONDS = 1.0  # how often a waiting session redraws its place or progress (a class of them shares the GIL)


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

    def nbytes(self) -> int:
        """Bytes it holds: the traces (attention dominates), and a few numbers per step in the comparison."""
        return sum(t.nbytes() for t in self.run.traces.values()) + 256 * len(self.run.cached.steps)


def _use_preset() -> None:
    st.session_state["prompt"] = ui_state.PRESETS[st.session_state["preset"]]


def sidebar() -> AppSettings:
    """The shared controls; returns what they describe (nothing runs here)."""
    sb, limits = st.sidebar, policy()
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
        st.session_state["prompt"] = AppSettings.prompt
    prompt = sb.text_area("Prompt", key="prompt", bind=URL, height=100)
    # No min/max on the number fields: the browser would keep showing a typed 0 while the last valid value
    # runs. Whatever is typed is what runs, and DecodeSettings.validate says why it cannot.
    max_new = sb.number_input("Max new tokens", value=min(AppSettings.max_new_tokens, limits.max_new_tokens),
                              step=1, key="new", bind=URL, help=f"this server's cap: {limits.max_new_tokens}")
    sampling = sb.radio("Choosing tokens", ["greedy", "sample"], key="sampling", bind=URL, horizontal=True)
    greedy = sampling == "greedy"
    cols = sb.columns(2)
    temperature = cols[0].number_input("Temperature", value=1.0, step=0.05, key="temperature", bind=URL,
                                       disabled=greedy)
    seed = cols[1].number_input("Seed", value=0, step=1, key="seed", bind=URL, disabled=greedy)
    top_k = cols[0].number_input("Top-k (0 = off)", value=0, step=1, key="top_k", bind=URL, disabled=greedy)
    top_p = cols[1].number_input("Top-p (1 = off)", value=1.0, step=0.01, key="top_p", bind=URL, disabled=greedy)
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


@st.cache_resource
def server() -> serve.Server:
    """This Streamlit server's one decode queue and shared results (every session and page use it)."""
    decodes = serve.Server(nbytes=lambda result: result.nbytes())  # runs, labs
    threads = serve.set_torch_threads(decodes.slots)
    log = logging.getLogger(serve.__name__)
    if not log.handlers:  # an operator's log line per decode, on the server's stdout
        log.addHandler(logging.StreamHandler(sys.stdout))
        log.setLevel(logging.INFO)
    log.info("gptviz.serve %d decode slot(s), %d torch thread(s) each", decodes.slots, threads)
    return decodes


@dataclass
class Progress:
    """What the decode worker reports; every session waiting for the run draws it."""

    done: int  # steps finished over all modes
    total: int
    label: str  # e.g. "KV cache (new token only): step 3 of 24"
    text: str  # the prompt and the tokens chosen so far


def _decode(lm: gptviz.LoadedModel, settings: AppSettings, job: serve.Job) -> Result:
    """The decode itself, on a worker thread of ``server()``: no Streamlit calls here."""
    decode, limits = settings.decode_settings(), policy().limits
    per_pass = settings.max_new_tokens * len(decode.modes)
    total, done, produced = per_pass * decode.timed_passes, 0, []

    def on_step(mode: str, step: int, token_id: int) -> None:
        nonlocal done
        if mode == gptviz.Mode.CACHED and done < per_pass:
            produced.append(lm.tokenizer.decode([token_id]))
        done += 1
        job.report(Progress(done, total, f"timed pass {(done - 1) // per_pass + 1} of {decode.timed_passes} · "
                                         f"{gptviz.Mode(mode).label}: step {step + 1} of {settings.max_new_tokens}",
                            settings.prompt + "".join(produced)))

    started = time.perf_counter()
    run = gptviz.run(lm.model, lm.tokenizer, settings.prompt, decode, model_name=lm.name, on_step=on_step,
                     limits=limits)
    return Result(settings, run, lm.name, lm.notice, time.perf_counter() - started)


def _waiter() -> tuple[str | None, Callable[[], bool]]:
    """This browser session's id, and whether it is still connected (a closed tab stops waiting)."""
    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists() or not Runtime.instance().is_active_session(ctx.session_id):
        return None, lambda: True  # not a live server session (AppTest): always waiting
    session, runtime = ctx.session_id, Runtime.instance()
    return session, lambda: runtime.is_active_session(session)


def _decode_with_progress(settings: AppSettings, fresh: bool) -> Result:
    """Join or queue the server's decode of ``settings`` and wait for it, showing the place or the progress."""
    limits = policy().limits
    decode = settings.decode_settings().validate(limits)  # before loading: nothing to load for a bad request
    lm = load_model(settings.source, settings.dtype)
    ids = gptviz.decoding.encode(lm.tokenizer, settings.prompt)  # and the rest before queueing
    decode.validate(limits, prompt_len=len(ids), shape=cost.Shape.of(lm.model),
                    value_bytes=next(lm.model.parameters()).element_size())
    waiter, alive = _waiter()
    request = dict(waiter=waiter, alive=alive, size=settings.max_new_tokens, size_kind=(lm.name, settings.dtype))
    job = server().request(settings.key, partial(_decode, lm, settings), fresh=fresh, **request)
    if job.state == "done":
        return job.result()  # another session's run of these settings: nothing to wait for
    waiting, decodes = _waiting(), server()
    waiting["pending"] = settings.key  # a page switch meanwhile rejoins this job
    note = _stopped_note()
    try:
        result = _wait(job, lm, settings, request)
    except StopException:  # Stop pressed: forget this run (a page switch is a RerunException: it rejoins)
        # Plain Python only: once Stop is pressed every Streamlit call, session-state writes included, raises.
        waiting.pop("pending", None)
        waiting["stopped"] = True
        decodes.leave(job, request["waiter"])
        raise
    except BaseException:
        note.empty()
        raise
    note.empty()
    return result


def _waiting() -> dict:
    """This session's wait: 'pending' (the settings key it waits for), 'stopped' (Stop was pressed). A dict
    changed in place, because after Stop a write to st.session_state itself raises before it happens."""
    return st.session_state.setdefault("gptviz_wait", {})


def _stopped_note():
    """What a student sees after pressing Stop while waiting, drawn now and hidden (CSS) while the script runs.

    Streamlit sends nothing once Stop is pressed, so the note must already be on the page: when the script
    stops it shows, hides the spinning status, and its button (clicked at once by its script) reruns the app,
    which then draws the previous run. A finished wait removes the note.
    """
    note = st.empty()
    with note.container(key="stopped_note"):
        if current() is None:
            st.info("Stopped. Press **Run** to decode.", icon=":material/stop_circle:")
        else:
            st.info("Stopped: showing your previous run…", icon=":material/stop_circle:")
            st.button("Show my previous run", key="show_previous")
            st.html(SHOW_PREVIOUS_JS, unsafe_allow_javascript=True)
    return note


def _wait(job: serve.Job, lm: gptviz.LoadedModel, settings: AppSettings, request: dict) -> Result:
    with st.container(key="decoding"), st.status(f"Decoding with {lm.name}…", expanded=True) as status:
        line, bar, text = st.empty(), st.empty(), st.empty()
        shown, first_place = None, None
        while True:
            try:
                result = job.result(timeout=0 if shown is None else POLL_SECONDS)  # draw the place at once
                break
            except TimeoutError:
                pass
            except serve.CancelledError:  # skipped while nobody seemed to wait: ask again
                job = server().request(settings.key, partial(_decode, lm, settings), **request)
                continue
            except gptviz.DecodeError:
                status.update(label="Could not decode this input", state="error")
                raise
            if job.state == "queued":
                place = server().place(job)
                first_place = first_place or place
                now = ("queued", place)
                if now != shown:
                    status.update(label=f"Waiting for the server: {place.describe()}")
                    line.caption("One run is timed at a time, so that every timing you see had the computer "
                                 "to itself. Runs start in the order they were asked for.")
            else:
                progress, others = job.progress, len(job.waiters) - 1
                now = ("running", progress, others)
                if now != shown:
                    status.update(label=f"Decoding with {lm.name}…")
                    line.caption(f"{others} other student{'s' if others != 1 else ''} will see this same run."
                                 if others > 0 else "")
                    if progress is not None:
                        bar.progress(progress.done / progress.total, text=progress.label)
                        text.text(progress.text)
            shown = now
        if job.progress is not None:  # the finished run's last report: all steps, the whole text
            bar.progress(1.0, text=job.progress.label)
            text.text(job.progress.text)
        waited = (f" · waited {job.queue_seconds:.0f} s for the {first_place.describe().split(' ahead')[0]} "
                  "ahead of you" if first_place is not None else "")
        status.update(label=f"Done: {settings.max_new_tokens} tokens, {len(result.run.traces)} ways, "
                            f"{result.seconds:.1f} s{waited}", state="complete", expanded=False)
    return result


def run_if_needed(settings: AppSettings, clicked: bool) -> None:
    """Decode when asked (or on a first visit); otherwise reuse a kept result for settings already run.

    Run with unchanged settings decodes again on purpose: fresh timings on a noisy machine. A run
    this session was waiting for when it switched page is joined again, not restarted.
    """
    runs = _runs()
    waiting = _waiting()
    if waiting.pop("stopped", False) and not clicked:  # Stop was pressed during the last wait
        st.info("Stopped: showing your previous run.", icon=":material/stop_circle:")
        return
    pending = waiting.get("pending") == settings.key
    if settings.key in runs and not (clicked or pending):  # already computed for exactly these inputs
        st.session_state["gptviz_shown"] = settings.key
        return
    if not (clicked or pending or current() is None):
        st.info("The sidebar settings changed: press **Run** to decode them. Showing the previous run below.")
        return
    try:
        result = _decode_with_progress(settings, fresh=clicked and not pending)
    except (gptviz.DecodeError, gptviz.ModelLoadError) as exc:
        waiting.pop("pending", None)
        st.error(f"**Cannot run this:** {exc}")
        return
    waiting.pop("pending", None)  # not on a page switch (Streamlit stops the script): rejoin then
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
    """A page's opening paragraph; in presenter mode folded away (the teacher says it), leaving room for the charts."""
    if style().intro_open:
        st.markdown(text)
    else:
        st.expander("What this page shows").markdown(text)


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


PRESENT_HELP = ("For a projector: larger text and token labels, the Attention panes side by side, no chart "
                "toolbar, page introductions folded away. Kept in the share link (?present=true).")


def presenter_toggle(where) -> bool:
    return where.toggle("Presenter mode", key="present", bind=URL, help=PRESENT_HELP)


def style() -> display.Style:
    """How this session's pages and charts are sized: presenter mode (a sidebar toggle kept in the link) or not."""
    return display.style(bool(st.session_state.get("present", False)))


# A stopped decode: the note drawn while waiting shows once the script no longer runs, and hides the
# status still spinning above it (see _stopped_note).
# Narrow screens (Streamlit's own breakpoint for the overlay sidebar): plotly's toolbar would sit on
# the chart titles (and a phone has no hover to use it), and the settings hide behind », so say so.
PAGE_CSS = """
.st-key-stopped_note { display: none; }
[data-test-script-state="notRunning"] .st-key-stopped_note { display: block; }
[data-test-script-state="notRunning"]:has(.st-key-stopped_note) .st-key-decoding { display: none; }
.st-key-small_screen_hint { display: none; }
@media (max-width: 768px) {
  .st-key-small_screen_hint { display: block; }
  .modebar-container { display: none !important; }
}
"""


SHOW_PREVIOUS_JS = """<script>
(() => {  // once the script stops with the note still on the page (Stop was pressed), show the previous run
  const app = document.querySelector('[data-testid="stApp"]');
  const watch = new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') !== 'notRunning') return;
    watch.disconnect();
    const show = document.querySelector('.st-key-show_previous button');
    if (show) show.click();
  });
  watch.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
})();
</script>"""


def page_style() -> None:
    """The page's CSS: small-screen rules always, presenter font sizes (from display.Style) when presenting."""
    s, css = style(), PAGE_CSS
    if s.name == "presenter":
        px = s.page_font
        css += f"""
.stMain .stMarkdown p, .stMain .stMarkdown li, .stMain [data-testid="stWidgetLabel"] p,
.stMain summary p {{ font-size: {px}px; }}
.stMain [data-testid="stCaptionContainer"], .stMain [data-testid="stCaptionContainer"] p {{ font-size: {px - 2}px; }}
.stMain [data-testid="stMetricValue"] {{ font-size: {2 * px}px; }}
.stMain h1 {{ font-size: {round(1.8 * px)}px; }}
.stMain h2, .stMain h3 {{ font-size: {round(1.35 * px)}px; }}
"""
    st.html(f"<style>{css}</style>")  # style only: Streamlit puts it where it takes no space


def small_screen_hint() -> None:
    """Shown on phones only (CSS above): the settings and Run live behind the » at the top left."""
    st.container(key="small_screen_hint").caption(
        ":material/tune: Settings and **Run** are behind **»** at the top left.")


def close_sidebar_on_small_screens() -> None:
    """After Run on a phone, fold the sidebar away so the progress and results show.

    Streamlit has no API to collapse the sidebar of a running app (set_page_config's
    initial_sidebar_state applies to a first load only), so a one-line script clicks its « button.
    """
    st.html("<script>if (window.innerWidth <= 768) { const b = window.parent.document.querySelector("
            "'[data-testid=\"stSidebarCollapseButton\"] button'); if (b) b.click(); }</script>",
            unsafe_allow_javascript=True)


def chart(fig, key: str, look_for: str) -> None:
    """A plotly figure sized for the audience, then one sentence on what to look for in it.

    The camera button exports a complete PNG at one slide size, whatever the window's width.
    """
    s = style()
    width, height = display.EXPORT_SIZE
    st.plotly_chart(plots.styled(fig, s), key=key, config={
        "displaylogo": False, "displayModeBar": "hover" if s.toolbar else False,
        "toImageButtonOptions": {"format": "png", "filename": key, "width": width, "height": height, "scale": 1}})
    st.caption(f"**What to look for:** {look_for}")
