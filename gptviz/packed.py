"""Packed lower-triangle storage: an attention map kept row by row, without the masked half.

Row r of a causal map has r + 1 entries, so rows [0, t) take ``size(t) = t(t+1)/2`` entries
and the map of the first t tokens is simply the first ``size(t)`` entries. Under the causal
mask the recompute map at step s is the top-left block of the final map: a prefix here.

>>> size(4), rows(10), span(2, 4)
(10, 4, (3, 10))
>>> unpack(np.arange(6.0), 3)
array([[0., 0., 0.],
       [1., 2., 0.],
       [3., 4., 5.]], dtype=float32)
"""

from __future__ import annotations

import math

import numpy as np
import torch


def size(t: int) -> int:
    """Entries of the first ``t`` rows."""
    return t * (t + 1) // 2


def rows(entries: int) -> int:
    """How many rows ``entries`` packed values hold (the inverse of ``size``)."""
    return (math.isqrt(8 * entries + 1) - 1) // 2


def span(first: int, last: int) -> tuple[int, int]:
    """Packed offsets [lo, hi) of rows first .. last - 1."""
    return size(first), size(last)


def unpack(packed: np.ndarray, t: int) -> np.ndarray:
    """(t, t) float32 map with zeros above the diagonal, from the first ``size(t)`` entries."""
    full = np.zeros((t, t), dtype=np.float32)
    full[np.tril_indices(t)] = packed[: size(t)]
    return full


def indices(t: int) -> torch.Tensor:
    """(2, size(t)): row and column of every packed entry of a t x t map, in storage order."""
    return torch.tril_indices(t, t)


def offsets(tril: torch.Tensor, first: int, last: int, keys: int) -> torch.Tensor:
    """Where rows first .. last - 1's packed entries sit in a (last - first) x ``keys`` row-major block.

    ``tril`` is ``indices(T)`` for any T >= last, computed once per map.
    """
    lo, hi = span(first, last)
    return (tril[0, lo:hi] - first) * keys + tril[1, lo:hi]
