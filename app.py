"""gptviz app entry point (placeholder until the app lands)."""

import streamlit as st

st.title("gptviz")
st.write("KV-cached vs recompute decoding of GPT-2, side by side.")
