"""A model load with its Hub download on screen: an ``st.progress`` fed by gptviz.load's ``on_progress``.

The load runs on a worker thread while the script thread draws, for two reasons: huggingface_hub may
report bytes from threads of its own (its Xet downloads), where Streamlit cannot draw, and elements
drawn inside an ``st.cache_resource`` function would be replayed on every later cache hit. The bytes
are kept per model, so every session waiting for the same model sees the same download.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as Pending

import streamlit as st

import gptviz
from gptviz import display, hub

Key = tuple[str, str]  # (source, dtype): what the loader caches by

POLL_SECONDS = 0.25  # how often a waiting session redraws the bytes
QUIET_SECONDS = 0.05  # a model already loaded returns within this: no spinner flashes
SPINNER = "Loading the model (once per server)…"

_IN_FLIGHT: dict[Key, tuple[int, int, str]] = {}  # downloads running now: (bytes done, bytes in all, file)


def recorder(key: Key) -> hub.Progress:
    """The ``on_progress`` for loading ``key``: it only records (any thread may call it)."""
    def record(done: int, total: int, name: str) -> None:
        _IN_FLIGHT[key] = (done, total, name)
    return record


def finished(key: Key) -> None:
    _IN_FLIGHT.pop(key, None)


def wait_showing_progress(key: Key, load: Callable[[], gptviz.LoadedModel]) -> gptviz.LoadedModel:
    """``load()`` on the loader thread; meanwhile a spinner, and the download's bytes while there are any."""
    future = _on_a_thread(load)
    try:
        return future.result(timeout=QUIET_SECONDS)
    except Pending:
        pass
    bar, seen = None, None
    try:
        with st.spinner(SPINNER):
            while True:
                try:
                    result = future.result(timeout=POLL_SECONDS)
                    break
                except Pending:
                    pass
                if (seen := _IN_FLIGHT.get(key, seen)) and seen[1]:
                    bar = bar or st.progress(0.0)
                    done, total, name = seen
                    bar.progress(min(done / total, 1.0),
                                 text=f"Downloading {name} from {hub.endpoint()}: {display.download(done, total)}")
    finally:
        if bar is not None:
            bar.empty()
    if seen is not None and result.notice is None:  # a download was shown, and it loaded: all its bytes came
        st.toast(f"Downloaded {display.size(seen[1])} from {hub.endpoint()} (kept in the Hugging Face cache)")
    return result


def _on_a_thread(load: Callable[[], gptviz.LoadedModel]) -> Future:
    """A thread per call, not a pool: a pool's threads all blocked on one model's download would hold back
    every session whose model is already loaded."""
    future: Future = Future()

    def work() -> None:
        try:
            future.set_result(load())
        except BaseException as exc:  # handed to the waiting script thread, which raises it
            future.set_exception(exc)

    threading.Thread(target=work, name="gptviz-load", daemon=True).start()
    return future
