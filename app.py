"""gptviz: does GPT-2 re-read the whole text for every new token? Run it both ways and look.

`streamlit run app.py` — the shared sidebar and the Run button live here; each view is a page
in views/ (layout only: every number comes from gptviz and the run it produced). Not `pages/`:
Streamlit treats a `pages/` folder as the legacy multipage app, so a fresh server's first deep
link (or every AppTest rerun) would run the page file alone, without this script's sidebar.
"""

import streamlit as st

from gptviz.hosting import HostingConfigError
from gptviz.lab import quanto
from views import _links
from views._model import policy
from views._runs import show_notice
from views._sidebar import presenter_toggle, sidebar
from views._style import close_sidebar_on_small_screens, page_style, small_screen_hint
from views._timing_follow import follow_timing
from views._wait import run_if_needed

st.set_page_config(page_title="gptviz: KV cache vs recompute", page_icon="🔁", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/side_by_side.py", title="Side by side", icon=":material/compare_arrows:"),
    st.Page("views/attention.py", title="Attention", icon=":material/grid_on:"),
    st.Page("views/kv_cache.py", title="KV cache", icon=":material/memory:"),
    st.Page("views/timing.py", title="Timing", icon=":material/timer:"),
    st.Page("views/frozen_past.py", title="Why the past is frozen", icon=":material/ac_unit:"),
    st.Page("views/inside_gpt2.py", title="Inside GPT-2", icon=":material/account_tree:"),
    st.Page("views/cache_lab.py", title="Cache lab", icon=":material/science:"),
    st.Page("views/divergence.py", title="Divergence lab", icon=":material/call_split:"),
]
page = st.navigation(PAGES)
quanto.warm_in_background()  # int4/int2's C++ kernel compiles once per server, at start, never in a student's wait

try:
    hosting = policy()  # an operator's typo in a GPTVIZ_* variable stops here, in one line, before any page
except HostingConfigError as exc:
    st.error(f"**This server is misconfigured:** {exc}", icon=":material/settings_alert:")
    st.stop()
# Messages that come and go (the link's notes, the decode's progress, errors, the phone's sidebar script) live
# in one slot that is always there: drawn straight into the page, they would move the page's widgets down the
# element tree and back, the browser would re-create them and drop their binding to the address bar (a
# session that opened on /attention with a decode on screen wrote only its first Step change to the URL).
messages = st.container()
with messages:
    _links.check_link(hosting)  # a link's refused or clamped values: fixed before the sidebar reads it, said once

# Run and the presenter switch first, right under the page list: reachable without scrolling on a 720 px projector.
clicked = st.sidebar.button("Run", type="primary", key="run", width="stretch", icon=":material/play_arrow:")
timing_line = st.sidebar.container()  # how far the result's timing got, under Run (views/_timing_follow.py)
presenter_toggle(st.sidebar)
page_style()
settings = sidebar()
st.sidebar.caption("The address bar always holds a link to these exact settings (presenter mode too): share it.")
small_screen_hint()
with messages:
    if clicked:
        close_sidebar_on_small_screens()
    run_if_needed(settings, clicked)
    show_notice()
with timing_line:
    follow_timing()
page.run()
