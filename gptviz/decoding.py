"""The two decoders, side by side, each recording a Trace; ``run`` drives both.

Both modes see the same tokens: the cached run chooses them with one seeded sampler
(transformers' own logits processors, gptviz/sampling.py), and the recompute runs replay
that sequence, so every comparison is like for like. What a run is asked to do, and its
validation, is gptviz/settings.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, StaticCache

from gptviz import compare, cost, packed
from gptviz.instrument import recording
from gptviz.lockstep import Lockstep
from gptviz.modes import Mode
from gptviz.sampling import Replay, Sampler
from gptviz.settings import DecodeError, DecodeSettings, Limits, check_prompt, positions
from gptviz.trace import Step, Trace

__all__ = ["DecodeError", "DecodeSettings", "Limits", "Run", "Tape", "decode_all", "decode_cached", "decode_recompute",
           "run", "warm_up"]

TOP_LOGITS = 10  # logits kept per step in a trace


# ------------------------------------------------------------------------------------------
# The two decoders. Read them side by side: the difference is the lesson.
# ------------------------------------------------------------------------------------------

@torch.no_grad()
def decode_cached(model, prompt_ids: torch.Tensor, choose, steps: int, cache_kind: str = "dynamic",
                  record_attention: bool = True, on_step: Callable | None = None) -> Tape:
    """KV cache: prefill the prompt once, then feed only the newest token; past keys/values are reused."""
    tape = Tape(model, prompt_ids, steps, Mode.CACHED, record_attention, on_step)
    cache = make_cache(model, cache_kind, max_len=positions(len(prompt_ids), steps))  # static: no unused slot
    ids = prompt_ids[None]  # (1, prompt): the prefill pass
    for step in range(steps):
        with recording(model, record_attention) as rec:
            logits = model(ids, past_key_values=cache, use_cache=True).logits[0, -1]  # (vocab,)
        token = choose(tape.sequence, logits)
        tape.add(step, rec, logits, token, kv=kv_sizes(cache))
        del rec, logits  # the prefill's outputs span the whole prompt: do not hold them through the next pass
        ids = token.view(1, 1)  # (1, 1): only the new token goes in
    return tape


@torch.no_grad()
def decode_recompute(model, prompt_ids: torch.Tensor, choose, steps: int, logits_to_keep: int = 0,
                     record_attention: bool = True, on_step: Callable | None = None) -> Tape:
    """Naive re-evaluation: feed the whole sequence again every step; nothing is reused."""
    mode = Mode.RECOMPUTE_LAST if logits_to_keep == 1 else Mode.RECOMPUTE
    tape = Tape(model, prompt_ids, steps, mode, record_attention, on_step)
    ids = prompt_ids[None]  # (1, prompt)
    for step in range(steps):
        with recording(model, record_attention) as rec:
            logits = model(ids, use_cache=False, logits_to_keep=logits_to_keep).logits[0, -1]  # (vocab,)
        token = choose(tape.sequence, logits)
        tape.add(step, rec, logits, token)
        del rec, logits  # views of all t positions' logits and t x t attention: free before the next pass
        ids = torch.cat([ids, token.view(1, 1)], dim=1)  # (1, t + 1): the whole sequence goes in again
    return tape


def make_cache(model, kind: str, max_len: int):
    """A real transformers cache: DynamicCache grows by concatenation, StaticCache is preallocated."""
    if kind == "static":
        return StaticCache(config=model.config, max_cache_len=max_len)
    return DynamicCache(config=model.config)


def kv_sizes(cache) -> tuple[list[int], list[int]]:
    """Per layer: (bytes holding real tokens, bytes allocated) of keys + values."""
    used, allocated = [], []
    for layer in cache.layers:
        k, v = layer.keys, layer.values  # (batch, heads, t or max_len, head_dim)
        t = int(layer.get_seq_length())
        per_token = (k[..., :1, :].numel() * k.element_size() + v[..., :1, :].numel() * v.element_size())
        used.append(t * per_token)
        allocated.append(k.numel() * k.element_size() + v.numel() * v.element_size())
    return used, allocated


class Tape:
    """Collects one decoder's steps; keeps attention rows packed and checks re-computed rows.

    Attention lives in a packed lower triangle (layers, heads, T(T+1)/2) in the compute
    dtype while decoding. Rows a forward pass produces that are already stored (the
    recompute mode re-derives every past row) are compared with the stored ones: that max
    |Δ| is the step's ``slice_delta``. Rows not yet stored are appended.
    """

    def __init__(self, model, prompt_ids: torch.Tensor, steps: int, mode: str, record_attention: bool,
                 on_step: Callable | None):
        c = model.config
        self.mode, self.on_step, self.prompt_len = mode, on_step, len(prompt_ids)
        self.layers, self.heads, self.head_dim = c.n_layer, c.n_head, c.n_embd // c.n_head
        self.sequence = prompt_ids.clone()  # (t,) prompt + tokens chosen so far
        self.steps: list[Step] = []
        self._logits: torch.Tensor | None = None  # (steps, vocab) last-position logits, filled row by row
        self.max_steps = steps
        self.total_rows = positions(len(prompt_ids), steps)  # T: the last token chosen is never fed
        self.rows_stored = 0
        self.attention = None
        if record_attention:
            dtype = next(model.parameters()).dtype
            self.attention = torch.zeros(c.n_layer, c.n_head, packed.size(self.total_rows),
                                         dtype=dtype)  # (layers, heads, packed)
            self.tril = packed.indices(self.total_rows)  # (2, packed): row and column of each entry

    def _store_rows(self, weights: list[torch.Tensor]) -> float | None:
        """Compare rows already stored, append new ones; weights[l] is (1, heads, q, k)."""
        q, k = weights[0].shape[2], weights[0].shape[3]
        first = len(self.sequence) - q  # row index of the first query position in this pass
        end = first + q
        (lo, hi), mid = packed.span(first, end), packed.size(self.rows_stored)
        flat = packed.offsets(self.tril, first, end, k)  # packed entries' offsets in a q x k map
        # One index_select per layer into one buffer: ~5x faster than 2-D fancy indexing plus a stack,
        # which mattered for the recompute mode's overhead (all t(t+1)/2 rows are gathered every step).
        block = torch.empty(len(weights), self.heads, hi - lo, dtype=weights[0].dtype)  # (layers, heads, packed)
        for layer, w in enumerate(weights):
            torch.index_select(w[0].reshape(self.heads, q * k), 1, flat, out=block[layer])
        split = mid - lo
        delta = None
        if split > 0:
            delta = (block[..., :split] - self.attention[..., lo:mid]).abs().max().item()
        self.attention[..., mid:hi] = block[..., split:]
        self.rows_stored = max(self.rows_stored, end)
        return delta

    def add(self, step: int, rec, logits: torch.Tensor, token: torch.Tensor,
            kv: tuple[list[int], list[int]] | None = None) -> None:
        input_len = len(self.sequence) if (step == 0 or self.mode != Mode.CACHED) else 1
        delta = None
        if self.attention is not None and step < self.total_rows - self.prompt_len + 1:
            delta = self._store_rows(rec.attention)
        top = logits.topk(TOP_LOGITS)
        used, allocated = kv if kv is not None else ([0] * self.layers, [0] * self.layers)
        self.steps.append(Step(
            index=step, token_id=int(token), token_text="", input_len=input_len, context_len=len(self.sequence),
            seconds=rec.seconds, layer_seconds=list(rec.layer_seconds), kv_bytes=used, kv_allocated=allocated,
            top_ids=top.indices.tolist(), top_logits=top.values.tolist(), slice_delta=delta,
            pass_seconds=[rec.seconds],
        ))
        if self._logits is None:  # one buffer: no per-step clones to stack into a second copy later
            self._logits = torch.empty(self.max_steps, logits.shape[-1], dtype=logits.dtype)
        self._logits[step] = logits
        self.sequence = torch.cat([self.sequence, token.view(1)])
        if self.on_step is not None:
            self.on_step(self.mode, step, int(token))

    @property
    def logits(self) -> torch.Tensor:
        """(steps so far, vocab) last-position logits in the compute dtype, for comparisons."""
        return self._logits[: len(self.steps)]

    def add_timings(self, again: Tape) -> None:
        """Fold in another timed pass of the same decode: each step keeps every time and its fastest."""
        for step, other in zip(self.steps, again.steps, strict=True):
            step.pass_seconds.append(other.seconds)
            step.seconds = min(step.pass_seconds)
            step.layer_seconds = [min(a, b) for a, b in zip(step.layer_seconds, other.layer_seconds, strict=True)]

    def compact(self, keep_attention: bool = True) -> None:
        """Drop the working copy of attention: float16 for storage, or nothing."""
        if self.attention is not None:
            self.attention = self.attention.to(torch.float16) if keep_attention else None

    def to_trace(self, model_name: str, tokenizer, cache_kind: str | None) -> Trace:
        """The stored form: token texts filled in, attention packed in float16."""
        for s in self.steps:
            s.token_text = tokenizer.decode([s.token_id])
            s.top_texts = [tokenizer.decode([i]) for i in s.top_ids]
        prompt_ids = self.sequence[: self.prompt_len].tolist()
        return Trace(
            mode=self.mode, model_name=model_name, dtype=str(self.logits[0].dtype).removeprefix("torch."),
            cache_kind=cache_kind, prompt_ids=prompt_ids,
            prompt_tokens=[tokenizer.decode([i]) for i in prompt_ids], layers=self.layers, heads=self.heads,
            head_dim=self.head_dim, steps=self.steps,
            attention=None if self.attention is None else self.attention.to(torch.float16),
        )


@dataclass
class Run:
    """Everything one prompt produced: a trace per mode and their comparison."""

    prompt: str
    settings: DecodeSettings
    model_name: str
    traces: dict[str, Trace]  # by mode
    comparison: compare.Comparison  # per step: every mode vs the cached mode (.to_frame() for a table)
    text: str  # the generated continuation
    info: dict = field(default_factory=dict)

    @property
    def cached(self) -> Trace:
        return self.traces[Mode.CACHED]

    @property
    def recompute(self) -> Trace | None:
        return self.traces.get(Mode.RECOMPUTE)

    def summary(self) -> compare.Summary:
        """The headline numbers (typed; .to_dict() for JSON)."""
        return compare.Summary.of(self)


def encode(tokenizer, prompt: str) -> list[int]:
    return tokenizer(check_prompt(prompt))["input_ids"]


def run(model, tokenizer, prompt: str, settings: DecodeSettings = DecodeSettings(), *,
        model_name: str = "model", on_step: Callable | None = None, limits: Limits = Limits()) -> Run:
    """Decode ``prompt`` in every mode of ``settings.modes`` and compare them with the cached mode.

    ``on_step(mode, step, token_id)`` is called after each step (live progress in the app).
    """
    ids = encode(tokenizer, prompt)
    settings = settings.validate(limits, prompt_len=len(ids), shape=cost.Shape.of(model),
                                 value_bytes=next(model.parameters()).element_size())
    prompt_ids = torch.tensor(ids, dtype=torch.long)
    tapes, own = decode_all(model, prompt_ids, settings, on_step)
    cached, attention_delta = tapes[Mode.CACHED], None
    if Mode.RECOMPUTE in tapes and cached.attention is not None:
        attention_delta = compare.attention_row_deltas(cached, tapes[Mode.RECOMPUTE])  # in the compute dtype
    for mode, tape in tapes.items():  # only the full recompute's map is kept beside the cache's
        tape.compact(keep_attention=mode != Mode.RECOMPUTE_LAST)
    for _ in range(settings.timed_passes - 1):  # the same decode again: only its timings are kept
        for mode, again in decode_all(model, prompt_ids, settings, on_step)[0].items():
            tapes[mode].add_timings(again)
        del again
    table = compare.Comparison.of({m: t.steps for m, t in tapes.items()}, {m: t.logits for m, t in tapes.items()},
                                  attention_delta, own)
    traces = {mode: tape.to_trace(model_name, tokenizer, settings.cache if mode == Mode.CACHED else None)
              for mode, tape in tapes.items()}
    text = tokenizer.decode(cached.sequence[len(ids):].tolist())
    return Run(prompt, settings, model_name, traces, table, text)


def decode_all(model, prompt_ids: torch.Tensor, settings: DecodeSettings,
               on_step: Callable | None = None) -> tuple[dict[Mode, Tape], dict[Mode, list[int]]]:
    """One timed pass of every mode, a step each in turn (gptviz/lockstep.py), so that other load on the
    machine hits them alike. The cached decoder chooses; each recompute decoder, a round behind, replays
    its tokens and notes what it would have chosen itself. Returns the tapes and those own choices."""
    n, chosen, replays = settings.max_new_tokens, [], {}

    def start(mode: Mode):
        def decode(step_done):
            def stepped(m, step: int, token_id: int) -> None:
                if m == Mode.CACHED:
                    chosen.append(token_id)  # what the recompute decoders replay
                if on_step is not None:
                    on_step(m, step, token_id)
                step_done()  # hand over to the next mode

            if mode == Mode.CACHED:
                return decode_cached(model, prompt_ids, Sampler(settings), n, settings.cache,
                                     settings.record_attention, stepped)
            # Both recompute variants record attention the same way: their timings differ only by logits_to_keep.
            replays[mode] = Replay(chosen, len(prompt_ids), judge=Sampler(settings))
            return decode_recompute(model, prompt_ids, replays[mode], n, mode.logits_to_keep,
                                    settings.record_attention, stepped)
        return decode

    modes = [Mode(m) for m in settings.modes]
    tapes = Lockstep().run({m: (0 if m == Mode.CACHED else 1, start(m)) for m in modes})
    return {m: tapes[m] for m in modes}, {m: r.own for m, r in replays.items()}


def warm_up(model, tokenizer, text: str = "Warm up.") -> float:
    """Decode a few tokens every way, untimed, so a process's first real run pays no one-time costs
    (allocator growth, lazy kernel setup) in its cached mode, which runs first. Returns seconds spent."""
    started = time.perf_counter()
    for kind in ("dynamic", "static"):
        run(model, tokenizer, text, DecodeSettings(max_new_tokens=2, cache=kind, timed_passes=1))
    return time.perf_counter() - started
