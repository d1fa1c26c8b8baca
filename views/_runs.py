"""The session's results: what each run produced, the one on screen, and the hint when there is none.

Each session keeps the results it was shown in ``st.session_state``, keyed by the settings that
produced them, so moving a slider on a page (a rerun of the script) never runs the model again.
"""

from __future__ import annotations

import streamlit as st

from gptviz.serve.tasks import Result
from views import _model

MAX_KEPT_RUNS = 4  # per browser session; a run of the bundled model holds a few MiB of attention
MAX_KEPT_RUNS_HOSTED = 1  # a shared server: GPT-2 runs hold up to ~100 MiB each, times every student
RUNS, SHOWN = "gptviz_runs", "gptviz_shown"  # session-state keys: the kept results, the settings key on screen

__all__ = ["Result", "current", "kept", "replace_current", "require", "show", "show_notice"]


def kept() -> dict:
    """This session's results by settings key, oldest first (run_if_needed in views/_wait.py evicts)."""
    return st.session_state.setdefault(RUNS, {})


def show(key: tuple) -> None:
    """Put the kept result of these settings on screen."""
    st.session_state[SHOWN] = key


def current() -> Result | None:
    """The result on screen: the last successful run (bad input never replaces it)."""
    return kept().get(st.session_state.get(SHOWN))


def replace_current(result: Result) -> None:
    """Put a refined ``result`` where the one on screen with the same identity was (nothing else changes)."""
    key = st.session_state.get(SHOWN)
    shown = kept().get(key)
    if shown is not None and shown.run_id == result.run_id:
        kept()[key] = result


def show_notice() -> None:
    """Why a Hub model fell back to the bundled one, and a way to try the Hub again (the fallback is cached)."""
    result = current()
    if result is not None and result.notice:
        st.warning(result.notice, icon=":material/cloud_off:")
        source, dtype = result.settings.source, result.settings.dtype
        st.button("Try the Hub again on the next Run", key="retry_hub", on_click=_model.forget, args=(source, dtype),
                  help="This server keeps the fallback until then; press Run after this to load from the Hub again")


def require() -> Result:
    """The result to draw; stops the page with a hint when there is none yet."""
    result = current()
    if result is None:
        st.info("No results yet: choose a model and a prompt in the sidebar and press **Run**.")
        st.stop()
    return result
