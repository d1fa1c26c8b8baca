"""Equivalence checks between decoding modes, and past-state drift with and without the mask."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch

from gptviz import packed
from gptviz.modes import Mode

TOP_OVERLAP_K = 5  # top-k overlap is measured on this many tokens
KL_CHUNK = 16  # steps whose KL divergence is computed together
BUSY_SPREAD = 1.25  # timed passes whose medians exceed their fastest by more than this: the machine was busy


@dataclass(frozen=True)
class Agreement:
    """One recompute mode against the cached mode's last-position logits, per step."""

    max_abs_dlogit: np.ndarray  # (steps,) float64: largest |Δlogit| over the vocabulary
    argmax_equal: np.ndarray  # (steps,) bool: both logit vectors put the same token first
    topk_overlap: np.ndarray  # (steps,) fraction of the TOP_OVERLAP_K best tokens they share
    kl: np.ndarray  # (steps,) KL(cached ‖ this mode) in nats, computed in float64
    same_choice: np.ndarray  # (steps,) bool: its own logits, through the same seeded sampler, pick the cached token

    @classmethod
    def of(cls, reference: torch.Tensor, other: torch.Tensor, k: int = TOP_OVERLAP_K, *,
           chosen: list[int] | None = None, own: list[int] | None = None) -> Agreement:
        """Both are (steps, vocab) last-position logits in the compute dtype; ``chosen`` the cached mode's
        tokens and ``own`` what this mode would have chosen itself (without them: greedy, the argmaxes)."""
        # Chunks of rows: a (steps, vocab) difference at once is 2 x 51 MB at 256 GPT-2 steps.
        delta = torch.cat([(reference[a:a + KL_CHUNK] - other[a:a + KL_CHUNK]).abs().amax(dim=-1)
                           for a in range(0, len(reference), KL_CHUNK)])  # (steps,)
        top_ref, top_other = reference.topk(k).indices, other.topk(k).indices  # (steps, k)
        overlap = [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top_ref, top_other, strict=True)]
        same_first = (reference.argmax(-1) == other.argmax(-1)).numpy()  # (steps,)
        same_choice = same_first if own is None else np.array(own) == np.array(chosen)
        return cls(max_abs_dlogit=delta.double().numpy(), argmax_equal=same_first,
                   topk_overlap=np.array(overlap), kl=kl_per_step(reference, other).numpy(), same_choice=same_choice)


def kl_per_step(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per row KL(reference ‖ other) in nats (the one KL of the app and the lab), a few steps at a time: float64
    temporaries of every step at once would be ~0.5 GB at 256 steps of a 50k vocabulary, the largest allocation of
    a whole session. Rows are independent."""
    # A lone last row would be summed by a different kernel path (last-bit differences): fold it into the chunk before.
    n = len(reference)
    starts = [i for i in range(0, n, KL_CHUNK) if i == 0 or n - i > 1] + [n]
    return torch.cat([_kl(reference[a:b], other[a:b]) for a, b in zip(starts, starts[1:], strict=False)])


def _kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    log_p, log_q = reference.double().log_softmax(-1), other.double().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0)  # rounding can dip below 0


def attention_row_deltas(cached, recompute) -> np.ndarray:
    """Per step: max |Δ| between the rows the cached mode computed and the recompute map's same rows."""
    out = []
    for step in cached.steps:
        last = step.context_len  # rows first..last-1 were computed this step
        lo, hi = packed.span(last - step.input_len, last)
        out.append((cached.attention[..., lo:hi] - recompute.attention[..., lo:hi]).abs().max().item())
    return np.array(out)


@dataclass(frozen=True)
class Comparison:
    """Every mode against the cached mode, one entry per step: what the pages, the CLI and the CSV show."""

    step: np.ndarray  # (steps,) 0 is the prefill pass over the prompt
    token_id: np.ndarray  # (steps,) the token chosen (the same in every mode)
    context_len: np.ndarray  # (steps,) tokens attended over at that step
    seconds: dict[Mode, np.ndarray]  # per mode run: (steps,) wall time of each forward pass
    agreement: dict[Mode, Agreement]  # per recompute mode run: its logits vs the cached mode's
    kv_bytes: np.ndarray  # (steps,) cached mode: bytes of keys + values holding real tokens
    kv_allocated: np.ndarray  # (steps,) cached mode: bytes allocated for keys + values
    slice_delta: np.ndarray | None = None  # (steps,) recompute: re-derived past rows vs stored (NaN at step 0)
    attn_row_delta: np.ndarray | None = None  # (steps,) cached rows vs the recompute map's same rows

    @classmethod
    def of(cls, steps: dict[str, list], logits: dict[str, torch.Tensor],
           attention_delta: np.ndarray | None = None, own: dict[str, list[int]] | None = None) -> Comparison:
        """From each mode's recorded Steps and (steps, vocab) last-position logits; cached is the reference.
        ``own[mode]``: the tokens that mode's logits would have chosen itself (see sampling.Replay)."""
        cached = steps[Mode.CACHED]
        chosen, own = [s.token_id for s in cached], own or {}
        recompute = steps.get(Mode.RECOMPUTE)
        slice_delta = None if recompute is None else np.array(
            [np.nan if s.slice_delta is None else s.slice_delta for s in recompute])
        return cls(
            step=np.array([s.index for s in cached]), token_id=np.array([s.token_id for s in cached]),
            context_len=np.array([s.context_len for s in cached]),
            seconds={Mode(m): np.array([s.seconds for s in mode_steps]) for m, mode_steps in steps.items()},
            agreement={Mode(m): Agreement.of(logits[Mode.CACHED], logits[m], chosen=chosen, own=own.get(m))
                       for m in steps if m != Mode.CACHED},
            kv_bytes=np.array([sum(s.kv_bytes) for s in cached]),
            kv_allocated=np.array([sum(s.kv_allocated) for s in cached]),
            slice_delta=slice_delta, attn_row_delta=attention_delta)

    def with_modes(self, steps: dict[str, list], logits: dict[str, torch.Tensor], cached_logits: torch.Tensor | None,
                   own: dict[str, list[int]]) -> Comparison:
        """A copy with every mode's step times read again from ``steps`` (a timed pass was folded in) and the
        modes of ``logits``, timed for the first time, compared with ``cached_logits`` of that same pass (None
        when ``logits`` is empty: a pass that only times keeps no logits)."""
        chosen = self.token_id.tolist()
        agreement = dict(self.agreement)
        for mode, mode_logits in logits.items():
            agreement[Mode(mode)] = Agreement.of(cached_logits, mode_logits, chosen=chosen, own=own.get(mode))
        seconds = {Mode(m): np.array([s.seconds for s in mode_steps]) for m, mode_steps in steps.items()}
        return replace(self, seconds=seconds, agreement=agreement)

    @property
    def decoding(self) -> np.ndarray:
        """(steps,) bool: the decode steps, i.e. every step after the prefill pass."""
        return self.step > 0

    def to_frame(self) -> pd.DataFrame:
        """One row per step, columns as the CSV and the CLI's JSON name them (``max_abs_dlogit_last``, ...)."""
        table = pd.DataFrame({"step": self.step, "token_id": self.token_id, "context_len": self.context_len})
        for mode, seconds in self.seconds.items():
            table[f"{mode}_seconds"] = seconds
            if mode in self.agreement:
                for name, values in asdict(self.agreement[mode]).items():
                    table[name + mode.suffix] = values
            if mode == Mode.RECOMPUTE and self.slice_delta is not None:
                table["slice_delta"] = self.slice_delta
        if self.attn_row_delta is not None:
            table["attn_row_delta"] = self.attn_row_delta
        table["kv_bytes"], table["kv_allocated"] = self.kv_bytes, self.kv_allocated
        return table


@dataclass(frozen=True)
class Equivalence:
    """The recompute mode against the cache, for the headline."""

    same_tokens: bool  # at every step, the recompute pass's own logits choose the token the cache chose
    first_disagreement: int | None  # the first step where they do not (None: they never differ)
    max_abs_dlogit: float  # largest |Δlogit| over every step and vocabulary entry
    argmax_agreement: float  # fraction of steps whose logits put the same token first
    recompute_seconds: float  # forward passes of the recompute mode, summed
    speedup: float  # recompute seconds ÷ cached seconds (each step's fastest timed pass)
    speedup_range: tuple[float, float]  # the lowest and highest speed-up of the single timed passes
    max_slice_delta: float | None  # largest re-derived past attention row vs stored (None: no attention kept)
    max_attn_row_delta: float | None  # largest cached row vs recompute row (None: no attention kept)


@dataclass(frozen=True)
class Summary:
    """The headline numbers of a run, all read off its traces."""

    steps: int  # tokens generated
    prompt_tokens: int
    dtype: str  # compute dtype
    cached_seconds: float  # forward passes of the cached mode, summed
    kv_cache_bytes: int  # keys + values holding real tokens at the end
    kv_cache_allocated: int  # bytes the cache had allocated at the end (static > used)
    recompute: Equivalence | None  # None when the run had no recompute mode
    timed_passes: int  # how often every mode was decoded and timed (in lockstep)
    timing_spread: float  # worst mode: Σ per-step median ÷ Σ per-step fastest over the passes (1 = steady)

    @classmethod
    def of(cls, run) -> Summary:
        c, cached = run.comparison, run.cached
        cached_seconds = float(c.seconds[Mode.CACHED].sum())
        recompute = None
        if Mode.RECOMPUTE in c.agreement:
            a, seconds = c.agreement[Mode.RECOMPUTE], float(c.seconds[Mode.RECOMPUTE].sum())
            recompute = Equivalence(
                same_tokens=bool(a.same_choice.all()), first_disagreement=_first_false(a.same_choice),
                max_abs_dlogit=float(a.max_abs_dlogit.max()),
                argmax_agreement=float(a.argmax_equal.mean()), recompute_seconds=seconds,
                speedup=seconds / max(cached_seconds, 1e-12),
                speedup_range=_pass_speedup_range(run.recompute, cached),
                max_slice_delta=_max(c.slice_delta), max_attn_row_delta=_max(c.attn_row_delta))
        return cls(steps=len(cached.steps), prompt_tokens=cached.prompt_len, dtype=cached.dtype,
                   cached_seconds=cached_seconds, kv_cache_bytes=int(c.kv_bytes[-1]),
                   kv_cache_allocated=int(c.kv_allocated[-1]), recompute=recompute,
                   timed_passes=min(len(s.pass_seconds) for s in cached.steps) if cached.steps else 0,
                   timing_spread=max(_spread(t) for t in run.traces.values()))

    @property
    def busy(self) -> bool:
        """The timed passes disagreed enough that other work on the machine must have slowed some steps."""
        return self.timing_spread > BUSY_SPREAD

    def to_dict(self) -> dict:
        """Flat, as the CLI's JSON report has it: the recompute keys only when it ran, None values left out."""
        out = {k: v for k, v in asdict(self).items() if k != "recompute"}
        if self.recompute is not None:
            out.update({k: v for k, v in asdict(self.recompute).items() if v is not None})
        return out


def _pass_totals(trace) -> np.ndarray:
    """(passes,) the trace's total forward-pass seconds in each counted timed pass (Trace.counted)."""
    return np.array([trace.counted(s) for s in trace.steps]).sum(axis=0)


def _pass_speedup_range(recompute, cached) -> tuple[float, float]:
    ratios = _pass_totals(recompute) / np.maximum(_pass_totals(cached), 1e-12)
    return float(ratios.min()), float(ratios.max())


def _spread(trace) -> float:
    """Σ per-step median ÷ Σ per-step fastest over the timed passes: how much the machine's load moved them."""
    times = np.array([trace.counted(s) for s in trace.steps])  # (steps, passes)
    return float(np.median(times, axis=1).sum() / max(times.min(axis=1).sum(), 1e-12))


def _first_false(flags: np.ndarray) -> int | None:
    misses = np.flatnonzero(~flags)
    return int(misses[0]) if len(misses) else None


def _max(values: np.ndarray | None) -> float | None:
    if values is None or np.isnan(values).all():
        return None
    return float(np.nanmax(values))


@torch.no_grad()
def hidden_state_drift(model, token_ids: list[int], causal: bool = True, points: int = 16) -> pd.DataFrame:
    """How far past positions' hidden states move when one more token is appended.

    For up to ``points`` prefix lengths t, run the model on the first t and t+1 tokens and take,
    per layer (0 = embeddings), the max |h_{t+1}[i] - h_t[i]| over past positions i < t. With the
    causal mask this is ~0 (a past position cannot see the new token); with ``causal=False``
    (bidirectional attention) every past state changes.
    """
    ids = torch.tensor(token_ids, dtype=torch.long)[None]  # (1, T)
    total = ids.shape[1]
    if total < 3:
        raise ValueError("drift needs at least 3 tokens: a prefix of 2 and one appended token")
    if total > model.config.n_positions:  # a run's last token may lie past the context (it is never fed back)
        raise ValueError(f"drift over {total} tokens exceeds the model's context of {model.config.n_positions}: "
                         "pass at most that many")
    lengths = sorted(set(np.linspace(2, total - 1, num=min(points, total - 2)).round().astype(int).tolist()))
    rows = []
    for t in lengths:
        before = model(ids[:, :t], output_hidden_states=True, is_causal=causal).hidden_states
        after = model(ids[:, : t + 1], output_hidden_states=True, is_causal=causal).hidden_states
        for layer, (h0, h1) in enumerate(zip(before, after, strict=False)):  # each (1, t or t+1, d_model)
            rows.append({"prefix_len": t, "layer": layer, "causal": causal,
                         "drift": (h1[0, :t] - h0[0, :t]).abs().max().item()})
    return pd.DataFrame(rows)


def largest_drift(frame: pd.DataFrame, causal: bool) -> float:
    """The largest past-state drift in ``hidden_state_drift`` rows, with (``causal``) or without the mask."""
    return float(frame.loc[frame["causal"] == causal, "drift"].max())
