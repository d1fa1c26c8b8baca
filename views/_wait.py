"""Running a decode: the server's one queue, waiting in it with live progress, Stop, and when to decode at all.

Decoding is the server's job (gptviz.serve): one queue for every session, one decode per
settings however many students ask at once, finished runs shared. Only the Run button, or
settings nobody has run yet on a first visit, decode; a kept result (views/_runs.py) is shown
again otherwise.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Hashable
from typing import Any

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

import gptviz
from gptviz import cost, serve
from gptviz.serve import tasks
from gptviz.ui_state import AppSettings
from views._model import load_model, policy
from views._runs import MAX_KEPT_RUNS, MAX_KEPT_RUNS_HOSTED, Result, current, kept, show

POLL_SECONDS = 1.0  # how often a waiting session redraws its place or progress (a class of them shares the GIL)


@st.cache_resource
def server() -> serve.Backend:
    """This Streamlit server's one decode queue and shared results (every session and page use it): in this
    process, or every replica's through Redis ($GPTVIZ_REDIS_URL; gptviz/serve/__init__.py)."""
    decodes = serve.connect(nbytes=lambda result: result.nbytes())  # runs, labs
    threads = serve.set_torch_threads(decodes.slots)
    serve.share_the_gil_often()  # its decodes run beside every session's page draws
    log = logging.getLogger(serve.__name__)
    if not log.handlers:  # an operator's log line per decode, on the server's stdout
        log.addHandler(logging.StreamHandler(sys.stdout))
        log.setLevel(logging.INFO)
    log.info("gptviz.serve %d decode slot(s), %d torch thread(s) each", decodes.slots, threads)
    return decodes


def refine_key(result: Result) -> tuple:
    return ("refine", result.run_id)


def refine_task(lm: gptviz.LoadedModel, result: Result) -> tasks.Refine:
    """The timing refinement of ``result`` (gptviz/serve/tasks.py): its first result is stored by its settings."""
    return tasks.Refine(result, serve.key_id(result.settings.key), lm)


def this_session() -> tuple[str | None, Callable[[], bool]]:
    """This browser session's id, and whether it is still connected (a closed tab stops waiting)."""
    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists() or not Runtime.instance().is_active_session(ctx.session_id):
        return None, lambda: True  # not a live server session (AppTest): always waiting
    session, runtime = ctx.session_id, Runtime.instance()
    return session, lambda: runtime.is_active_session(session)


def ask_server(key: Hashable, task: serve.Task | Callable[[serve.JobHandle], Any], *, size: float,
               size_kind: Hashable, fresh: bool = False, priority: int = serve.FIRST,
               role: str | None = None) -> tuple[serve.JobHandle, dict]:
    """Join or queue ``task`` on the server's one queue as this browser session: the job, and the request's
    arguments, to ask again with if the job is skipped while nobody seemed to wait for it. ``role`` waits beside
    the session's other wait (its timing refinement next to the decode it asked for), not instead of it."""
    session, alive = this_session()
    waiter = session if session is None or role is None else (session, role)
    request = dict(waiter=waiter, alive=alive, size=size, size_kind=size_kind, priority=priority)
    return server().request(key, task, fresh=fresh, **request), request


def shared_result(key: Hashable, task: serve.Task, *, size: float, size_kind: Hashable) -> Any:
    """The server's result for ``key`` (another session's, if it has one), waited for without a progress bar; with
    Redis, a worker runs ``task`` and every replica shares its result. What the worker could not do (load the
    model), or a queue that went away, is one line on the page, which stops there; everything above it stays."""
    try:
        job, request = ask_server(key, task, size=size, size_kind=size_kind)
        while True:
            try:
                return job.result()
            except serve.CancelledError:  # skipped while nobody seemed to wait: ask again
                job = server().request(key, task, **request)
    except (gptviz.DecodeError, gptviz.ModelLoadError) as exc:
        st.error(f"**Cannot run this:** {exc}")
    except serve.Unavailable as exc:
        st.error(f"**The server's shared queue is unavailable.** {exc}", icon=":material/cloud_off:")
    st.stop()


def _decode_with_progress(settings: AppSettings, fresh: bool) -> Result:
    """Join or queue the server's decode of ``settings`` and wait for it, showing the place or the progress."""
    limits = policy().limits
    decode = settings.decode_settings().validate(limits)  # before loading: nothing to load for a bad request
    lm = load_model(settings.source, settings.dtype)
    ids = gptviz.decoding.encode(lm.tokenizer, settings.prompt)  # and the rest before queueing
    decode.validate(limits, prompt_len=len(ids), shape=cost.Shape.of(lm.model),
                    value_bytes=next(lm.model.parameters()).element_size())
    task = tasks.FirstPass(settings, lm.name, limits, lm)
    job, request = ask_server(settings.key, task, size=settings.max_new_tokens,
                              size_kind=(lm.name, settings.dtype), fresh=fresh)
    if job.state == "done":
        return job.result()  # another session's run of these settings: nothing to wait for
    waiting, decodes = _waiting(), server()
    waiting["pending"] = settings.key  # a page switch meanwhile rejoins this job
    note = _stopped_note()
    try:
        result = _wait(job, lm, settings, task, request)
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


def _wait(job: serve.JobHandleHandle, lm: gptviz.LoadedModel, settings: AppSettings, task: tasks.FirstPass,
          request: dict) -> Result:
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
                job = server().request(settings.key, task, **request)
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
                progress, others = job.progress, job.waiting() - 1
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
        waited = f" · waited {job.queue_seconds:.0f} s for {first_place.runs()}" if first_place is not None else ""
        status.update(label=f"Done: {settings.max_new_tokens} tokens both ways, {result.seconds:.1f} s{waited}",
                      state="complete", expanded=False)
    return result


def run_if_needed(settings: AppSettings, clicked: bool) -> None:
    """Decode when asked (or on a first visit); otherwise reuse a kept result for settings already run.

    Run with unchanged settings decodes again on purpose: fresh timings on a noisy machine. A run
    this session was waiting for when it switched page is joined again, not restarted.
    """
    runs = kept()
    waiting = _waiting()
    if waiting.pop("stopped", False) and not clicked:  # Stop was pressed during the last wait
        st.info("Stopped: showing your previous run.", icon=":material/stop_circle:")
        return
    pending = waiting.get("pending") == settings.key
    if settings.key in runs and not (clicked or pending):  # already computed for exactly these inputs
        show(settings.key)
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
    except serve.Unavailable as exc:  # Redis down or unreachable (GPTVIZ_REDIS_URL): say so, keep what is shown
        waiting.pop("pending", None)
        kept_note = " Your previous run is still shown below." if current() is not None else ""
        st.error(f"**The server's shared queue is unavailable.** {exc}{kept_note}", icon=":material/cloud_off:")
        return
    waiting.pop("pending", None)  # not on a page switch (Streamlit stops the script): rejoin then
    runs.pop(settings.key, None)  # re-insert: the newest run is the last one evicted
    runs[settings.key] = result
    while len(runs) > (MAX_KEPT_RUNS_HOSTED if policy().hosted else MAX_KEPT_RUNS):
        runs.pop(next(iter(runs)))  # oldest first
    show(settings.key)


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
