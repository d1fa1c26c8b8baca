"""What a share link asked for and did not get, said once (gptviz.links decides; this only shows it).

The sidebar's values are checked on a session's first run, before any widget reads the
address bar: refused ones leave the link, clamped ones are rewritten, and the next run
shows one line for each. A page's own values (layer, head, step) depend on the run, so the
page reports those after its widget has taken what it could.
"""

from __future__ import annotations

import streamlit as st

from gptviz import links, ui_state
from gptviz.hosting import Policy

URL = "query-params"  # bind=URL: a widget kept in the address bar, so the link always holds the view
CHECKED = "gptviz_link_checked"  # session key: the link was checked (holds the notes still to show)


def check_link(policy: Policy) -> None:
    """First run of a session: fix the link and rerun with it; the run after shows what changed, once."""
    state = st.session_state
    if CHECKED not in state:
        given = st.query_params.to_dict()
        result = links.check(given, policy, ui_state.model_choices(policy), ui_state.LOCAL_CHOICE)
        state[CHECKED] = list(result.notes)
        if result.params != given:
            st.query_params.from_dict(result.params)  # nothing is bound to the URL yet on a session's first run
            st.rerun()  # the widgets now start from the fixed link
    notes, state[CHECKED] = state[CHECKED], []
    if notes:
        st.warning("**This link was adjusted.**  \n" + "  \n".join(notes), icon=":material/link_off:")


def link_values(*keys: str) -> dict[str, str | None]:
    """The link's values for a page's widgets, the first time the page draws them this session (else None)."""
    return {key: None if key in st.session_state else st.query_params.get(key) for key in keys}


def note_page_values(given: dict[str, str | None], shown: dict[str, object], ranges: dict[str, str]) -> None:
    """After a page's widgets took what they could of the link: one line per value not taken."""
    notes = [f"Ignored {key}={raw!r} from the link: this run has {ranges[key]}; showing {key} {shown[key]}."
             for key, raw in given.items() if raw is not None and raw != str(shown[key])]
    if notes:
        st.warning("**This link was adjusted.**  \n" + "  \n".join(notes), icon=":material/link_off:")
