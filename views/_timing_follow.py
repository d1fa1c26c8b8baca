"""Following a result's timing: its refinement is asked for, a line says how far it got, and the pages
update by themselves when a timing pass lands.

The first result (views/_wait.py) is everything but refined timing. Its refinement is a job of its own on the
server's queue at the lower priority (gptviz.serve.REFINE): every session showing the result waits for it,
none of them blocks on it, and it is dropped when nobody shows that result any more.
"""

from __future__ import annotations

from contextvars import ContextVar

import streamlit as st

from gptviz import serve
from views._model import find_loaded
from views._runs import Result, current, replace_current
from views._wait import POLL_SECONDS, ask_server, refine_key, refine_task, server

# True while the line is drawn by the app's own run (not by its timer): a newer result is then simply used by the
# page drawn next. Rerunning the app there would wipe what this run shows (e.g. the error for a Run just pressed).
TIMING_ERRORS = "gptviz_timing_errors"  # session state: why a run's timing could not be refined, by run id
_APP_RUN: ContextVar[bool] = ContextVar("gptviz_timing_app_run", default=False)


def follow_timing() -> None:
    """Draw the timing line of the result on screen (always one line: nothing below it moves when it changes)."""
    try:
        _follow_timing()
    except serve.Unavailable as exc:  # the shared queue (Redis) is gone: the result on screen stays as it is
        st.caption(f":material/timer_off: Timing not refined: {exc}")


def _follow_timing() -> None:
    result = current()
    if result is None:
        return
    if not result.run.timing.complete:
        stored = server().finished(refine_key(result))
        if stored is not None:  # refined already, for another session: show it from the start
            result = stored.result()
            replace_current(result)
    if result.run.timing.complete:
        st.caption(f":material/timer: {result.run.timing.describe()}")
        return
    errors = st.session_state.setdefault(TIMING_ERRORS, {})
    if result.run_id in errors:
        st.caption(f":material/timer_off: Timing not refined: {errors[result.run_id]}")
        return
    lm = find_loaded(result)
    if lm is None:  # the model that made this run is gone (the page says so): nothing to refine it with
        st.caption(f":material/timer_off: {result.run.timing.describe()}: not refined (its model is gone)")
        return
    job, _ = ask_server(refine_key(result), refine_task(lm, result), size=result.settings.max_new_tokens,
                        size_kind=(result.model_name, "refine"), priority=serve.REFINE, role="timing")
    token = _APP_RUN.set(True)
    try:
        _timing_line(job, result.run_id)
    finally:
        _APP_RUN.reset(token)


@st.fragment(run_every=POLL_SECONDS)
def _timing_line(job: serve.JobHandle, run_id: str) -> None:
    """Reruns on its own every second: one line of progress; the whole app reruns when a timing pass lands."""
    shown = current()
    if shown is None or shown.run_id != run_id:
        return  # another result is on screen now: the next full run follows that one
    try:
        _follow(job, shown)
    except serve.Unavailable as exc:
        st.caption(f":material/timer_off: Timing not refined: {exc}")


def _follow(job: serve.JobHandle, shown: Result) -> None:
    run_id = shown.run_id
    latest, error = _latest(job)
    app_run = _APP_RUN.get()
    if latest is None and error is None and job.state in ("done", "skipped") and not app_run:
        st.rerun()  # dropped or skipped while this session seemed gone: the full run asks for it again
    if error is not None:
        st.session_state.setdefault(TIMING_ERRORS, {})[run_id] = error
        if not app_run:
            st.rerun()
    if latest is not None and latest.run.timing.passes > shown.run.timing.passes:
        replace_current(latest)
        if not app_run:
            st.rerun()  # every page redraws with the new timings; widgets keep their values
    # One short line, always there: the sidebar's widgets below it never move.
    if job.state == "queued":
        st.caption(f":material/hourglass_top: {shown.run.timing.describe()} waits ({server().place(job).runs()})",
                   help="Other students' first results go before timing passes.")
    else:
        progress = job.progress
        label = shown.run.timing.describe() if progress is None else progress.label
        st.caption(f":material/timer: {label}", help="More timed passes are running; the Timing page updates by "
                   "itself when each lands.")


def _latest(job: serve.JobHandle) -> tuple[Result | None, str | None]:
    """The refinement's newest result (finished, or after its latest timing pass), or why there is none."""
    if job.state == "done":
        try:
            return job.result(0), None
        except serve.CancelledError:
            return None, None  # dropped while nobody seemed to wait: the next full run asks again
        except Exception as exc:  # a refinement that failed keeps the first result's timing on screen
            return None, str(exc)
    if job.state == "skipped":
        return None, None
    progress = job.progress
    return (None if progress is None else progress.result), None
