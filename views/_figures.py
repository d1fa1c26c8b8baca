"""Figures built once per result and style, shared by every session that shows them.

Profiling the first render of a session whose result was already stored (py-spy on a real server, ten
websocket students on one link) put ~85% of the server's CPU into charts: building the plotly figures
(~45%), restyling them for the audience (~40% of that again) and serialising them. A class showing one
run draws the same figures thirty times. Here each (builder, its arguments, style) is built and styled
once, and every later render only serialises the finished figure. A result lands for thirty waiting sessions
at once, so the build is single flight too: the first session builds a figure, the others wait for it (a
py-spy profile of 60 students on one link had 37% of the replicas' GIL time in thirty copies of each build).

Results are keyed by identity (a Run is not hashable, and equal runs may differ in timings), and an
entry goes away with the object it was built from.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go

from gptviz import display, plots

MAX_FIGURES = 512  # across the server: a few pages' charts for each result kept in the shared store

_lock = threading.Lock()
_figures: collections.OrderedDict[tuple, go.Figure] = collections.OrderedDict()
_keys_of: dict[int, set[tuple]] = {}  # id of an argument kept by identity -> the entries built from it
_building: dict[tuple, threading.Event] = {}  # figures being built now -> set when done: one build per figure
_forgotten: list[int] = []  # ids whose objects have gone, noted by their finalizers (see _forget)


def styled(style: display.Style, build: Callable[..., go.Figure], *args: Any, **kwargs: Any) -> go.Figure:
    """``plots.styled(build(*args, **kwargs), style)``, built once and shared; arguments that cannot be keyed
    (neither hashable nor weak-referenceable) get a figure of their own every time."""
    values = [*args, *(value for _, value in sorted(kwargs.items()))]
    by_identity = [v for v in values if not _hashable(v)]
    try:
        for value in by_identity:
            weakref.ref(value)
    except TypeError:
        return plots.styled(build(*args, **kwargs), style)
    key = (build.__module__, build.__qualname__, style.name, *sorted(kwargs),
           *(("object", id(v)) if not _hashable(v) else v for v in values))
    while True:
        with _lock:
            _drop_forgotten()
            figure = _figures.get(key)
            if figure is not None:
                _figures.move_to_end(key)
                return figure
            building = _building.get(key)
            if building is None:  # this session builds it; the others asking meanwhile wait for it
                building = _building[key] = threading.Event()
                break
        building.wait()  # then take it from the store (or build it, if the builder failed)
    try:
        figure = plots.styled(build(*args, **kwargs), style)  # outside the lock: other figures build meanwhile
        with _lock:
            _figures[key] = figure
            for value in by_identity:
                if id(value) not in _keys_of:
                    weakref.finalize(value, _forget, id(value))  # the entries go with the object
                _keys_of.setdefault(id(value), set()).add(key)
            while len(_figures) > MAX_FIGURES:
                _figures.popitem(last=False)
        return figure
    finally:
        with _lock:
            del _building[key]
        building.set()


def cached_count() -> int:
    with _lock:
        _drop_forgotten()
        return len(_figures)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _forget(ident: int) -> None:
    """A finalizer: it may run inside any allocation, even one made while this thread holds ``_lock``, so it only
    notes the id (a list append needs no lock); the next caller holding the lock drops its entries."""
    _forgotten.append(ident)


def _drop_forgotten() -> None:
    """With ``_lock`` held: the entries of objects that have gone."""
    while _forgotten:
        for key in _keys_of.pop(_forgotten.pop(), ()):
            _figures.pop(key, None)
