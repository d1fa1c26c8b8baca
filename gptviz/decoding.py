"""The two decoders, side by side, each recording a Trace; ``start``, ``refine`` and ``run`` drive them.

Both modes see the same tokens: the cached run chooses them with one seeded sampler
(transformers' own logits processors, gptviz/sampling.py), and the recompute runs replay
that sequence, so every comparison is like for like. What a run is asked to do, and its
validation, is gptviz/settings.py.

A run comes in two parts. ``start`` is one pass of the cached and the recompute decoder with
attention recorded: every number but the refined timings (tokens, logits, attention, KV cache).
``refine`` adds one timed pass of every mode (the logits-of-the-last-position variant appears
in the first of them); passes stop once they agree (``AGREE``) or at ``settings.timed_passes``.
A server shows the first part as soon as it is done and refines behind it (gptviz/serve/).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from transformers import DynamicCache, StaticCache

from gptviz import compare, cost
from gptviz.instrument import recording
from gptviz.lockstep import Decoder, Lockstep
from gptviz.modes import Mode
from gptviz.sampling import Replay, Sampler
from gptviz.settings import DecodeError, DecodeSettings, Limits, check_prompt, positions
from gptviz.tape import Tape
from gptviz.trace import Trace

__all__ = ["AGREE", "DecodeError", "DecodeSettings", "Limits", "Run", "Tape", "Timing", "decode_all", "decode_cached",
           "decode_recompute", "refine", "run", "start", "warm_up"]

AGREE = 1.10  # timed passes agree when each recompute mode's speed-up over the cached mode, pass by pass, varies
# by at most this factor (the lockstep lets load hit every mode alike, so the ratio is what a pass can vouch for)

# ------------------------------------------------------------------------------------------
# The two decoders. Read them side by side: the difference is the lesson.
# Each yields after every step, so that a Lockstep can run them a step at a time in turn
# (gptviz/lockstep.py), and returns its Tape; ``lockstep.alone(decode_cached(...))`` runs one by itself.
# ``timing_only``: a pass that only times. It computes exactly what a recording pass computes (the
# same attention kernel, so every pass times the same work and a step's fastest pass is a fair
# minimum) but stores no attention rows, the part of a pass that costs memory and copies.
# ``keep_logits=False``: no (steps, vocab) buffer of last-position logits (26 MB at 128 GPT-2 steps), for a
# timing pass of a mode whose logits were compared already.
# ------------------------------------------------------------------------------------------

@torch.no_grad()
def decode_cached(model, prompt_ids: torch.Tensor, choose, steps: int, cache_kind: str = "dynamic",
                  record_attention: bool = True, on_step: Callable | None = None, timing_only: bool = False,
                  keep_logits: bool = True) -> Decoder[Tape]:
    """KV cache: prefill the prompt once, then feed only the newest token; past keys/values are reused."""
    tape = Tape(model, prompt_ids, steps, Mode.CACHED, record_attention and not timing_only, on_step, keep_logits)
    cache = make_cache(model, cache_kind, max_len=positions(len(prompt_ids), steps))  # static: no unused slot
    ids = prompt_ids[None]  # (1, prompt): the prefill pass
    for step in range(steps):
        with recording(model, record_attention) as rec:
            logits = model(ids, past_key_values=cache, use_cache=True).logits[0, -1]  # (vocab,)
        token = choose(tape.sequence, logits)
        tape.add(step, rec, logits, token, kv=None if timing_only else kv_sizes(cache))  # a scan of the cache
        del rec, logits  # the prefill's outputs span the whole prompt: do not hold them through the next pass
        ids = token.view(1, 1)  # (1, 1): only the new token goes in
        yield  # the next mode's turn (gptviz/lockstep.py)
    return tape


@torch.no_grad()
def decode_recompute(model, prompt_ids: torch.Tensor, choose, steps: int, logits_to_keep: int = 0,
                     record_attention: bool = True, on_step: Callable | None = None, timing_only: bool = False,
                     keep_logits: bool = True) -> Decoder[Tape]:
    """Naive re-evaluation: feed the whole sequence again every step; nothing is reused."""
    mode = Mode.RECOMPUTE_LAST if logits_to_keep == 1 else Mode.RECOMPUTE
    tape = Tape(model, prompt_ids, steps, mode, record_attention and not timing_only, on_step, keep_logits)
    ids = prompt_ids[None]  # (1, prompt)
    for step in range(steps):
        with recording(model, record_attention) as rec:
            logits = model(ids, use_cache=False, logits_to_keep=logits_to_keep).logits[0, -1]  # (vocab,)
        token = choose(tape.sequence, logits)
        tape.add(step, rec, logits, token)
        del rec, logits  # views of all t positions' logits and t x t attention: free before the next pass
        ids = torch.cat([ids, token.view(1, 1)], dim=1)  # (1, t + 1): the whole sequence goes in again
        yield  # the next mode's turn (gptviz/lockstep.py)
    return tape


def make_cache(model, kind: str, max_len: int):
    """A real transformers cache: DynamicCache grows by concatenation, StaticCache is preallocated."""
    if kind == "static":
        return StaticCache(config=model.config, max_cache_len=max_len)
    return DynamicCache(config=model.config)


def kv_sizes(cache) -> tuple[list[int], list[int]]:
    """Per layer: (bytes of the slots holding a token, bytes allocated) of keys + values, read off the tensors.

    A slot holds a token if its key or value is not all zeros (a StaticCache starts zeroed; a real key never
    is), so "measured = formula" is a check of the cache's contents, not of its own length counter.
    """
    used, allocated = [], []
    for layer in cache.layers:
        k, v = layer.keys, layer.values  # (batch, heads, t or max_len, head_dim)
        # A slot's largest |entry| over heads and head_dim: 0 only if all are zero (NaN and denormals count as
        # written, -0.0 does not). Two reductions per tensor: a quarter of the time of comparing every entry
        # with 0 (6.3 → 1.6 ms a step at 141 GPT-2 positions, where a cached step is ~60 ms).
        written = (k.abs().amax(-1) + v.abs().amax(-1)).flatten(0, 1).amax(0)  # (t or max_len,) > 0: holds a token
        per_slot = (k[..., :1, :].numel() * k.element_size() + v[..., :1, :].numel() * v.element_size())
        used.append(int(torch.count_nonzero(written)) * per_slot)
        allocated.append(k.numel() * k.element_size() + v.numel() * v.element_size())
    return used, allocated


@dataclass(frozen=True)
class Timing:
    """How far a run's timing got: the pages say "timing: pass 2 of up to 3" until it is complete."""

    passes: int  # timed passes done (the first pass, with attention recorded, is pass 1)
    most: int  # passes allowed (settings.timed_passes): a busy machine takes them all
    complete: bool  # every mode timed, and the passes agreed or the most were taken
    agreed: bool = False  # stopped early because two passes agreed (a quiet machine)

    def describe(self) -> str:
        """"timing: pass 2 of up to 3" while refining; then how many passes it took, and why it stopped."""
        if not self.complete:
            return f"timing: pass {self.passes + 1} of up to {self.most}"
        if self.passes == 1:
            return "timing: 1 pass"
        if self.agreed:
            return f"timing: {self.passes} passes, within {AGREE - 1:.0%} of each other"
        return f"timing: {self.passes} passes, the most (they differed by over {AGREE - 1:.0%})"


@dataclass
class Run:
    """Everything one prompt produced: a trace per mode and their comparison."""

    prompt: str
    settings: DecodeSettings
    model_name: str
    traces: dict[Mode, Trace]  # by mode
    comparison: compare.Comparison  # per step: every mode vs the cached mode (.to_frame() for a table)
    text: str  # the generated continuation
    info: dict = field(default_factory=dict)
    timing: Timing = Timing(passes=1, most=1, complete=True)

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
    """Decode ``prompt`` in every mode of ``settings.modes`` and compare them with the cached mode: ``start``,
    then ``refine`` until the timing is complete. ``on_step(mode, step, token_id)`` is called after each step."""
    result = start(model, tokenizer, prompt, settings, model_name=model_name, on_step=on_step, limits=limits)
    while not result.timing.complete:
        result = refine(model, tokenizer, result, on_step=on_step)
    return result


def start(model, tokenizer, prompt: str, settings: DecodeSettings = DecodeSettings(), *,
          model_name: str = "model", on_step: Callable | None = None, limits: Limits = Limits()) -> Run:
    """The first pass: the cached decoder and the first recompute decoder of ``settings.modes``, attention
    recorded. Every page but Timing needs only this; ``refine`` times the rest."""
    ids = encode(tokenizer, prompt)
    settings = settings.validate(limits, prompt_len=len(ids), shape=cost.Shape.of(model),
                                 value_bytes=next(model.parameters()).element_size())
    prompt_ids = torch.tensor(ids, dtype=torch.long)
    first = settings.first_modes
    tapes, own = decode_all(model, prompt_ids, settings, on_step, modes=first)
    cached, attention_delta = tapes[Mode.CACHED], None
    if Mode.RECOMPUTE in tapes and cached.attention is not None:
        attention_delta = compare.attention_row_deltas(cached, tapes[Mode.RECOMPUTE])  # in the compute dtype
    for mode, tape in tapes.items():  # only the full recompute's map is kept beside the cache's
        tape.compact(keep_attention=mode != Mode.RECOMPUTE_LAST)
    table = compare.Comparison.of({m: t.steps for m, t in tapes.items()}, {m: t.logits for m, t in tapes.items()},
                                  attention_delta, own)
    # Provisional: this pass ran two modes side by side; a pass of every mode replaces its times on screen.
    traces = {mode: replace(tape.to_trace(model_name, tokenizer, settings.cache if mode == Mode.CACHED else None),
                            provisional_passes=1) for mode, tape in tapes.items()}
    text = tokenizer.decode(cached.sequence[len(ids):].tolist())
    complete = len(first) == len(settings.modes) and settings.timed_passes == 1
    info = {"torch_threads": torch.get_num_threads()}  # what its decoders ran with (gptviz/lockstep.py)
    return Run(prompt, settings, model_name, traces, table, text, info, Timing(1, settings.timed_passes, complete))


def refine(model, tokenizer, result: Run, on_step: Callable | None = None) -> Run:
    """One more timed pass of every mode, nothing but the clock (and a new mode's logits) kept. Returns a new
    Run: ``result`` is left as it was (other sessions may be showing it)."""
    settings, cached = result.settings, result.cached
    prompt_ids = torch.tensor(cached.prompt_ids, dtype=torch.long)
    new = [m for m in settings.modes if m not in result.traces]  # compared with the cached logits of this pass
    compared = {Mode.CACHED, *new} if new else set()
    tapes, own = decode_all(model, prompt_ids, settings, on_step, timing_only=True, keep_logits=compared)
    if [s.token_id for s in tapes[Mode.CACHED].steps] != cached.token_ids:
        raise DecodeError("a timing pass chose other tokens than the first pass: this model does not decode "
                          "deterministically here, so its timings cannot be refined.")
    traces = {}
    for mode, tape in tapes.items():
        if mode in result.traces:
            traces[mode] = result.traces[mode].with_timings(tape.steps)  # a copy: steps' times folded in
        else:  # first timed here: its whole trace, without attention (only the full recompute's map is kept)
            traces[mode] = tape.to_trace(result.model_name, tokenizer, None)
    cached_logits = tapes[Mode.CACHED].logits if new else None
    table = result.comparison.with_modes({m: t.steps for m, t in traces.items()},
                                         {m: tapes[m].logits for m in new}, cached_logits,
                                         {m: own[m] for m in new if m in own})
    passes = result.timing.passes + 1
    agreed = _agree(traces)
    timing = Timing(passes, result.timing.most, complete=passes >= result.timing.most or agreed, agreed=agreed)
    info = {**result.info, "torch_threads": torch.get_num_threads()}  # this pass's, as in ``start``
    return Run(result.prompt, settings, result.model_name, traces, table, result.text, info, timing)


def _agree(traces: dict[Mode, Trace]) -> bool:
    """Every recompute mode timed in two passes or more had the same speed-up over the cached mode, within AGREE,
    in each of them (a mode that joined later is matched with the cached mode's passes from then on)."""
    def totals(trace: Trace) -> list[float]:
        return [sum(s.pass_seconds[p] for s in trace.steps) for p in range(len(trace.steps[0].pass_seconds))]

    cached = totals(traces[Mode.CACHED])
    for mode, trace in traces.items():
        mine = totals(trace)
        if mode == Mode.CACHED or len(mine) < 2:
            continue
        ratios = [m / max(c, 1e-12) for m, c in zip(mine, cached[len(cached) - len(mine):], strict=True)]
        if max(ratios) > AGREE * min(ratios):
            return False
    return True


def decode_all(model, prompt_ids: torch.Tensor, settings: DecodeSettings, on_step: Callable | None = None, *,
               modes: tuple[Mode, ...] | None = None,
               timing_only: bool = False,
               keep_logits: set[Mode] | None = None) -> tuple[dict[Mode, Tape], dict[Mode, list[int]]]:
    """One timed pass of ``modes`` (default: every mode of ``settings``), a step each in turn
    (gptviz/lockstep.py), so that other load on the machine hits them alike. The cached decoder chooses;
    each recompute decoder, a round behind, replays its tokens and notes what it would have chosen itself.
    Returns the tapes and those own choices. ``keep_logits``: the modes whose tapes keep logits (default: all)."""
    n, chosen, replays = settings.max_new_tokens, [], {}

    def begin(mode: Mode):
        def stepped(m, step: int, token_id: int) -> None:
            if m == Mode.CACHED:
                chosen.append(token_id)  # what the recompute decoders replay
            if on_step is not None:
                on_step(m, step, token_id)

        if mode == Mode.CACHED:
            return decode_cached(model, prompt_ids, Sampler(settings), n, settings.cache,
                                 settings.record_attention, stepped, timing_only, mode in logits_kept)
        # Both recompute variants record attention the same way: their timings differ only by logits_to_keep.
        replays[mode] = Replay(chosen, len(prompt_ids), judge=Sampler(settings))
        return decode_recompute(model, prompt_ids, replays[mode], n, mode.logits_to_keep,
                                settings.record_attention, stepped, timing_only, mode in logits_kept)

    modes = [Mode(m) for m in (settings.modes if modes is None else modes)]
    logits_kept = set(modes) if keep_logits is None else keep_logits
    tapes = Lockstep().run({m: (0 if m == Mode.CACHED else 1, begin(m)) for m in modes})
    return {m: tapes[m] for m in modes}, {m: r.own for m, r in replays.items()}


def warm_up(model, tokenizer, text: str = "Warm up.") -> float:
    """Decode a few tokens every way, untimed, so a process's first real run pays no one-time costs
    (allocator growth, lazy kernel setup) in its cached mode, which runs first. Returns seconds spent."""
    started = time.perf_counter()
    for kind in ("dynamic", "static"):
        run(model, tokenizer, text, DecodeSettings(max_new_tokens=2, cache=kind, timed_passes=1))
    return time.perf_counter() - started
