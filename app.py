"""gptviz: does GPT-2 re-read the whole text for every new token? Run it both ways and look.

`streamlit run app.py` — the shared sidebar and the Run button live here; each view is a page
in pages/ (layout only: every number comes from gptviz and the run it produced).
"""

import streamlit as st

from pages import _common as common

st.set_page_config(page_title="gptviz: KV cache vs recompute", page_icon="🔁", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/side_by_side.py", title="Side by side", icon=":material/compare_arrows:"),
    st.Page("pages/attention.py", title="Attention", icon=":material/grid_on:"),
    st.Page("pages/kv_cache.py", title="KV cache", icon=":material/memory:"),
    st.Page("pages/timing.py", title="Timing", icon=":material/timer:"),
    st.Page("pages/frozen_past.py", title="Why the past is frozen", icon=":material/ac_unit:"),
    st.Page("pages/inside_gpt2.py", title="Inside GPT-2", icon=":material/account_tree:"),
]
page = st.navigation(PAGES)

settings = common.sidebar()
clicked = st.sidebar.button("Run", type="primary", key="run", width="stretch", icon=":material/play_arrow:")
st.sidebar.caption("The address bar always holds a link to these exact settings: share it.")
common.run_if_needed(settings, clicked)
common.show_notice()
page.run()
