"""Shared prefix: prefill the common start of two prompts once, then continue each from a copy."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import pandas as pd
import torch
from transformers import DynamicCache

from gptviz.lab.caches import measured_bytes
from gptviz.lab.settings import LabError
from gptviz.lab.variants import forced, greedy

REPEATS = 3  # prefill timings take the best of a few tries (a shared machine is noisy)


@dataclass
class PrefixResult:
    prompts: tuple[str, str]
    shared_tokens: int  # prefilled once
    own_tokens: tuple[int, int]  # each prompt's tokens after the shared prefix
    max_abs: tuple[float, float]  # max |Δlogit| reused-prefix vs fresh prefill, over each continuation
    fresh_seconds: float  # prefill both prompts from scratch
    reused_seconds: float  # prefill the prefix once, then each prompt's own tokens
    prefix_bytes: int  # the prefix's KV, held once instead of twice
    sequences: tuple[list[int], list[int]]  # prompt + continuation token ids (for the paged table)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"prompt": self.prompts, "own tokens": self.own_tokens,
                             "max |Δlogit| vs fresh prefill": self.max_abs})


def common_prefix(a: list[int], b: list[int]) -> int:
    """Tokens both start with, leaving each at least one token of its own to feed."""
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n] == b[n]:
        n += 1
    return n


@torch.no_grad()
def _prefill_seconds(model, prompts: list[list[int]], prefix: list[int] | None) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        if prefix is None:
            for ids in prompts:
                model(torch.tensor([ids]), past_key_values=DynamicCache(config=model.config), use_cache=True)
        else:
            cache = DynamicCache(config=model.config)
            model(torch.tensor([prefix]), past_key_values=cache, use_cache=True)
            for ids in prompts:
                model(torch.tensor([ids[len(prefix):]]), past_key_values=copy.deepcopy(cache), use_cache=True)
        best = min(best, time.perf_counter() - started)
    return best


@torch.no_grad()
def shared_prefix(model, tokenizer, prompts: tuple[str, str], steps: int) -> PrefixResult:
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    n = common_prefix(*ids)
    if n == 0 and ids[0][:1] == ids[1][:1]:
        raise LabError("each shared-prefix prompt needs a token of its own after the common beginning: "
                       f"{prompts[0]!r} and {prompts[1]!r} are too short.")
    if n == 0:
        raise LabError(f"the two shared-prefix prompts do not start with the same token: {prompts[0]!r} vs "
                       f"{prompts[1]!r}. Give them a common beginning.")
    cache = DynamicCache(config=model.config)
    model(torch.tensor([ids[0][:n]]), past_key_values=cache, use_cache=True)  # the prefix, once
    deltas, sequences = [], []
    for own in ids:
        tokens, fresh, _ = greedy(model, own, steps, DynamicCache(config=model.config))
        reused, _ = forced(model, own[n:], tokens, copy.deepcopy(cache))  # continue from a copy of the prefix
        deltas.append(float((fresh.double() - reused.double()).abs().max()))
        sequences.append(own + tokens)
    return PrefixResult(prompts, n, (len(ids[0]) - n, len(ids[1]) - n), tuple(deltas),
                        _prefill_seconds(model, ids, None), _prefill_seconds(model, ids, ids[0][:n]),
                        measured_bytes(cache), tuple(sequences))
