"""Why cached ≠ recomputed logits outside float64: the same sums, reduced in a different order.

A cached step multiplies a (1, d) row by the weights; a recompute step multiplies a (t, d) block, and
matmul kernels of different shapes add the same products in a different order. In exact arithmetic
both are equal; each number format rounds differently, so the gap tracks the format's precision.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd
import torch
from transformers import DynamicCache

from gptviz import display
from gptviz.lab.settings import labelled
from gptviz.lab.variants import Deltas, deltas, forced, greedy
from gptviz.models import DTYPES

TORCH_DTYPES = {**DTYPES, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The precision table's stable ids (JSON keys, ``python -m gptviz lab --json``) -> the page's column labels.
PRECISION_LABELS = {"dtype": "dtype", "max_abs_cached_vs_recompute": "max |Δ| cached vs recompute",
                    "max_abs_vs_float64": "max |Δ| vs float64", "first_argmax_flip": "first argmax flip"}
COPY_BUDGET = 4 * 2**30  # bytes: the study runs a private float64 copy (gpt2-medium 2.8 GB fits, gpt2-large not)


@torch.no_grad()
def recomputed(model, prompt_ids: list[int], tokens: list[int]) -> torch.Tensor:
    """Naive re-evaluation of the whole sequence every step, teacher-forced: (steps, vocab)."""
    sequence = prompt_ids + tokens
    rows = [model(torch.tensor([sequence[:len(prompt_ids) + i]]), use_cache=False, logits_to_keep=1).logits[0, -1]
            for i in range(len(tokens))]  # each (vocab,), from a (1, prompt + i) input
    return torch.stack(rows)


@dataclass
class PrecisionRow:
    dtype: str
    cached_vs_recompute: list[float]  # per step: max |Δlogit| between the two decoders in this format ([]: not run)
    vs_float64: Deltas | None  # per step: the cached decoder against float64's (max |Δlogit|, KL, same argmax)
    recompute_vs_float64: list[float] | None  # (None for float64 itself, the reference: never compared with itself)
    free_tokens: list[int] | None = None  # with free=True: the cached decoder's own greedy choices in this format

    @property
    def cached_vs_float64(self) -> list[float] | None:
        return None if self.vs_float64 is None else self.vs_float64.max_abs

    @property
    def first_flip(self) -> int | None:
        """First step whose argmax differs from float64's, if any."""
        agrees = [] if self.vs_float64 is None else self.vs_float64.agrees
        return next((i for i, ok in enumerate(agrees) if not ok), None)


@dataclass
class PrecisionResult:
    rows: list[PrecisionRow]
    skipped: str | None = None  # why the study did not run (a float64 copy too big for this server)

    def row(self, dtype: str) -> PrecisionRow:
        return next(r for r in self.rows if r.dtype == dtype)

    def to_frame(self) -> pd.DataFrame:
        """Long format: one row per (format, step)."""
        nan = float("nan")  # the reference row has no distance to itself
        return pd.concat([pd.DataFrame({"dtype": r.dtype, "step": range(len(r.cached_vs_recompute)),
                                        "cached_vs_recompute": r.cached_vs_recompute,
                                        "cached_vs_float64": r.cached_vs_float64 or nan,
                                        "recompute_vs_float64": r.recompute_vs_float64 or nan}) for r in self.rows],
                         ignore_index=True)

    def summary_rows(self) -> list[dict]:
        """One row per number format, keyed by stable ids (the JSON's keys)."""
        return [{"dtype": r.dtype, "max_abs_cached_vs_recompute": max(r.cached_vs_recompute),
                 "max_abs_vs_float64": (max(r.cached_vs_float64 + r.recompute_vs_float64)
                                        if r.cached_vs_float64 is not None else None),  # None: the reference
                 "first_argmax_flip": r.first_flip} for r in self.rows]

    def summary(self) -> pd.DataFrame:
        """``summary_rows`` for display, columns labelled for a reader (PRECISION_LABELS)."""
        return labelled(self.summary_rows(), PRECISION_LABELS)


def precision_study(model, prompt_ids: list[int], tokens: list[int], dtypes: tuple[str, ...], *,
                    recompute: bool = True, free: bool = False) -> PrecisionResult:
    """Both decoders in every format on the same tokens; a private copy per format (the shared model stays).
    ``recompute=False`` runs the cached decoder only (the recompute loop is most of the study's time);
    ``free``: also let each format's cached decoder choose its own tokens (where its text parts from float64's)."""
    copy_bytes = sum(p.numel() for p in model.parameters()) * 8
    if copy_bytes > COPY_BUDGET:
        return PrecisionResult([], f"a float64 copy of this model needs {display.size(copy_bytes)}, over this "
                                   f"lab's {display.size(COPY_BUDGET)}; try it on a smaller model.")
    runs, own = {}, {}
    for name in dtypes:
        twin = copy.deepcopy(model).to(TORCH_DTYPES[name])
        runs[name] = (forced(twin, prompt_ids, tokens, DynamicCache(config=twin.config))[0],
                      recomputed(twin, prompt_ids, tokens) if recompute else None)
        if free:  # a greedy run makes the forced run's very calls while its argmax is the token fed
            follows = runs[name][0].argmax(-1).tolist() == tokens
            own[name] = tokens if follows else greedy(twin, prompt_ids, len(tokens),
                                                      DynamicCache(config=twin.config))[0]
        del twin
    reference = runs["float64"][0] if "float64" in runs else None  # the cached float64 decode
    rows = []
    for name, (cached, again) in runs.items():
        gap = [] if again is None else deltas(cached, again).max_abs
        if reference is None or name == "float64":  # no reference, or the reference itself: nothing to compare
            rows.append(PrecisionRow(name, gap, None, None, own.get(name)))
            continue
        rows.append(PrecisionRow(name, gap, deltas(reference, cached),
                                 [] if again is None else deltas(reference, again).max_abs, own.get(name)))
    return PrecisionResult(rows)
