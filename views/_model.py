"""The server's models: its hosting policy, the one model loader, and what pages compute from a loaded model.

Every model is loaded once per (source, dtype) for every session of this Streamlit server
(``st.cache_resource``); pages get it through ``loaded(result)``, never by loading it again.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

import gptviz
from gptviz import anatomy, cost, models
from gptviz.hosting import Policy
from gptviz.serve import tasks
from views import _download

if TYPE_CHECKING:
    from views._runs import Result


def policy() -> Policy:
    """GPTVIZ_HOSTED=1 on a shared server: allow-listed models, capped runs (read each rerun: cheap)."""
    return Policy.from_env()


def load_model(source: str, dtype: str) -> gptviz.LoadedModel:
    """The only place a model is loaded: once per (source, dtype) for every session of this server.

    While a Hub download runs, every session waiting for it shows its bytes (views/_download.py).
    """
    return _download.wait_showing_progress((source, dtype), partial(_load_model, source, dtype))


@st.cache_resource(show_spinner=False, max_entries=4)  # the spinner and the bytes: _download, on the script thread
def _load_model(source: str, dtype: str) -> gptviz.LoadedModel:
    try:  # the policy, the fallback and the warm-up: the same as a worker process's (gptviz/serve/tasks.py)
        return tasks.load_model(source, dtype, on_progress=_download.recorder((source, dtype)))
    finally:
        _download.finished((source, dtype))


def forget(source: str, dtype: str) -> None:
    """Drop the loaded ``source``: the next Run asks the Hub again (after a fallback, the way to retry)."""
    _load_model.clear(source, dtype)


def find_loaded(result: Result) -> gptviz.LoadedModel | None:
    """The model that produced ``result`` (from the shared cache), or None if its source now loads another one."""
    lm = load_model(result.settings.source, result.settings.dtype)
    if lm.name != result.model_name:
        lm = load_model(models.source_of(result.model_name), result.settings.dtype)
    return lm if lm.name == result.model_name else None


def loaded(result: Result) -> gptviz.LoadedModel:
    """The model that produced ``result`` (from the shared cache), never another one that its source loads now:
    after a fallback to the bundled model, or the cache's eviction, ``source`` may load a different model."""
    lm = find_loaded(result)
    if lm is None:
        lm = load_model(result.settings.source, result.settings.dtype)
        st.warning(f"This run was made by **{result.model_name}**, which this server no longer loads for "
                   f"'{result.settings.source}' (it now gives {lm.name}): press **Run** to run it again.")
        st.stop()
    return lm


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
