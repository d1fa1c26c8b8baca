"""How pages look: the page CSS and scripts, presenter sizes (from gptviz.display), charts, the phone hints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from gptviz import display
from views import _figures

PRESENT = "present"  # the presenter toggle's key (views/_sidebar.py), its URL parameter too


def style() -> display.Style:
    """How this session's pages and charts are sized: presenter mode (a sidebar toggle kept in the link) or not."""
    return display.style(bool(st.session_state.get(PRESENT, False)))


def intro(text: str) -> None:
    """A page's opening paragraph; in presenter mode folded away (the teacher says it), leaving room for the charts."""
    if style().intro_open:
        st.markdown(text)
    else:
        st.expander("What this page shows").markdown(text)


# A stopped decode: the note drawn while waiting shows once the script no longer runs, and hides the
# status still spinning above it (see _stopped_note in views/_wait.py).
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


def chart(key: str, look_for: str, build: Callable[..., go.Figure], *args: Any, **kwargs: Any) -> None:
    """The figure ``build(*args, **kwargs)`` sized for the audience, then one sentence on what to look for in it.

    Built once per arguments and style for every session of the server (views/_figures.py). The camera
    button exports a complete PNG at one slide size, whatever the window's width.
    """
    s = style()
    width, height = display.EXPORT_SIZE
    st.plotly_chart(_figures.styled(s, build, *args, **kwargs), key=key, config={
        "displaylogo": False, "displayModeBar": "hover" if s.toolbar else False,
        "toImageButtonOptions": {"format": "png", "filename": key, "width": width, "height": height, "scale": 1}})
    st.caption(f"**What to look for:** {look_for}")
