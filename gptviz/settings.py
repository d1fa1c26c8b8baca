"""What a run is asked to do, its defaults, and the one place it is validated.

The command line, the app and the hosting policy all build a ``DecodeSettings`` and call
``validate``: once with no model (every choice in range, within the server's ``Limits``),
and ``decoding.run`` calls it again with the prompt length and model shape (fits the
context and the memory budget). Add a new check to ``validate``; every caller gets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Literal

import torch

from gptviz import cost, display
from gptviz.modes import MODES, Mode

NEW_TOKENS = 24  # default tokens to generate
TIMED_PASSES = 3  # the most timed passes of every mode per run (they stop once two agree: decoding.AGREE); a step's
# fastest over them is robust to a busy machine
MAX_TIMED_PASSES = 10
APP_MAX_NEW_TOKENS = 512  # the app's cap per run on a private server (hosted servers set their own)
MEMORY_BUDGET = 512 * 2**20  # default bytes of attention one run may hold (see cost.run_memory_bytes)
SAMPLINGS = ("greedy", "sample")
CACHES = ("dynamic", "static")
DTYPES = {"float32": torch.float32, "float64": torch.float64}  # compute dtypes a model can be loaded in
DTYPE = "float32"  # the default compute dtype (app, CLIs)


SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes a 64-bit seed


class DecodeError(ValueError):
    """Inputs that cannot be decoded; the message says what to change."""


def positions(prompt_len: int, new_tokens: int) -> int:
    """Positions a run feeds the model: the prompt and every new token but the last (it is never fed back).

    The cache holds this many tokens at the end, and the context must fit them.
    """
    return prompt_len + new_tokens - 1


def check_prompt(prompt) -> str:
    """The prompt, if it is text a tokenizer can take; else DecodeError with the fix (app, CLI, decoding.run)."""
    if not isinstance(prompt, str):
        raise DecodeError(f"the prompt must be text (str), got {type(prompt).__name__}.")
    if not prompt.strip():
        raise DecodeError("the prompt is empty: type some text to continue.")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates; invalid UTF-8 in argv arrives as U+DC80..U+DCFF
        char = prompt[exc.start]
        what = (f"the byte 0x{ord(char) - 0xDC00:02X}, which is not UTF-8" if 0xDC80 <= ord(char) <= 0xDCFF
                else f"a lone surrogate U+{ord(char):04X}, which is not a character")
        raise DecodeError(f"the prompt holds {what} (at character {exc.start + 1}): save or paste it as UTF-8 "
                          "text, or remove that character.") from None
    return prompt


@dataclass(frozen=True)
class Limits:
    """What one run may use on this server (hosting.Policy gives a shared server tighter ones)."""

    max_new_tokens: int | None = None  # hard cap per run on top of the model's context (None: only the context)
    memory_budget: int = MEMORY_BUDGET  # bytes of attention one run may hold (cost.run_memory_bytes)


@dataclass(frozen=True)
class DecodeSettings:
    max_new_tokens: int = NEW_TOKENS  # tokens to generate after the prompt
    sampling: Literal["greedy", "sample"] = SAMPLINGS[0]  # argmax, or draw from the processed distribution
    temperature: float = 1.0  # sampling only: divides the logits (> 0)
    top_k: int = 0  # sampling only: keep the k best tokens (0 = off)
    top_p: float = 1.0  # sampling only: keep the smallest set with probability >= p (1 = off)
    seed: int = 0  # seeds the one sampler that chooses tokens for every mode
    cache: Literal["dynamic", "static"] = CACHES[0]  # growing DynamicCache or preallocated StaticCache
    timed_passes: int = TIMED_PASSES  # at most this many lockstep passes of every mode; each step keeps its fastest
    modes: tuple[Mode, ...] = MODES  # which decoders to run; cached first (it chooses the tokens)
    record_attention: bool = True  # keep attention maps (the memory-heavy part of a trace)

    def validate(self, limits: Limits = Limits(), *, prompt_len: int | None = None,
                 shape: cost.Shape | None = None, value_bytes: int = 4) -> DecodeSettings:
        """Raise DecodeError with the fix for anything that would fail or blow up mid-run; else return these
        settings with plain Python numbers (numpy integers and floats are accepted).

        Without ``prompt_len`` and ``shape`` (no model loaded yet) only the model-free checks run.

        >>> try:
        ...     DecodeSettings(max_new_tokens=40).validate(Limits(max_new_tokens=32))
        ... except DecodeError as error:
        ...     print(error)
        this server allows at most 32 new tokens per run (asked for 40).
        """
        _check_choices(self)
        plain = replace(self, **{f: _plain(getattr(self, f), kind) for f, kind in NUMBERS.items()})
        _check_limits(plain, limits)
        if prompt_len is not None and shape is not None:
            _check_fits(plain, prompt_len, shape.context)
            _check_memory(plain, prompt_len, shape, value_bytes, limits.memory_budget)
        return plain

    @property
    def first_modes(self) -> tuple[Mode, ...]:
        """What the first pass (``decoding.start``) decodes: the cached mode, which chooses the tokens, and the
        recompute decoder it is compared with; timing passes (``decoding.refine``) decode every mode."""
        return self.modes[:2]

    def steps(self, *, first_pass: bool) -> int:
        """Steps one pass reports (``on_step`` calls): every new token in each mode it decodes."""
        return self.max_new_tokens * len(self.first_modes if first_pass else self.modes)

    def normalized(self) -> DecodeSettings:
        """Equal for settings that must give the same run: sampling knobs cannot change a greedy one."""
        if self.sampling == "greedy":
            return replace(self, temperature=1.0, top_k=0, top_p=1.0, seed=0)
        return self


NUMBERS = {"max_new_tokens": int, "temperature": float, "top_k": int, "top_p": float, "seed": int}


def _plain(value, kind: type):
    """numpy's int64(2) -> 2, float32(0.5) -> 0.5; anything else unchanged (greedy ignores its sampling knobs)."""
    if isinstance(value, bool) or not isinstance(value, Integral if kind is int else Real):
        return value
    return kind(value)


def _whole(value, minimum: int, below: int | None = None) -> bool:
    """A whole number (Python or numpy; not a bool) in [minimum, below)."""
    return (isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum
            and (below is None or value < below))


def _real(value) -> bool:
    """A finite real number (Python or numpy; not a bool, not a string)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_choices(s: DecodeSettings) -> None:
    if not _whole(s.max_new_tokens, 1):
        raise DecodeError(f"max new tokens must be a whole number ≥ 1, got {s.max_new_tokens!r}.")
    if not _whole(s.timed_passes, 1, MAX_TIMED_PASSES + 1):
        raise DecodeError(f"timed passes must be a whole number from 1 to {MAX_TIMED_PASSES}, "
                          f"got {s.timed_passes!r}.")
    if s.sampling not in SAMPLINGS:
        raise DecodeError(f"sampling must be 'greedy' or 'sample', got {s.sampling!r}.")
    if s.sampling == "sample":  # greedy ignores these three knobs (normalized() resets them)
        if not (_real(s.temperature) and s.temperature > 0):
            raise DecodeError(f"temperature must be > 0 and finite, got {s.temperature!r}; for deterministic "
                              "output choose greedy decoding.")
        if not _whole(s.top_k, 0):
            raise DecodeError(f"top-k must be a whole number ≥ 0 (0 turns it off), got {s.top_k!r}.")
        if not (_real(s.top_p) and 0 < s.top_p <= 1):
            raise DecodeError(f"top-p must be a number in (0, 1] (1 turns it off), got {s.top_p!r}.")
    if not _whole(s.seed, 0, SEED_LIMIT):  # checked in greedy too, though only sampling builds a generator
        raise DecodeError(f"seed must be a whole number from 0 to 2**64 - 1 = {SEED_LIMIT - 1}, got {s.seed!r}.")
    if s.cache not in CACHES:
        raise DecodeError(f"cache must be 'dynamic' or 'static', got {s.cache!r}.")
    if not isinstance(s.modes, (tuple, list)) or not s.modes or s.modes[0] != Mode.CACHED \
            or set(s.modes) - set(MODES) or len(set(s.modes)) != len(s.modes):
        raise DecodeError(f"modes must start with 'cached' (it chooses the tokens), got {s.modes!r}.")
    if not isinstance(s.record_attention, bool):
        raise DecodeError(f"record_attention must be True or False, got {s.record_attention!r}.")


def _check_limits(s: DecodeSettings, limits: Limits) -> None:
    if limits.max_new_tokens is not None and s.max_new_tokens > limits.max_new_tokens:
        raise DecodeError(f"this server allows at most {limits.max_new_tokens} new tokens per run "
                          f"(asked for {s.max_new_tokens}).")


def _check_fits(s: DecodeSettings, prompt_len: int, context: int) -> None:
    check_fits(prompt_len, s.max_new_tokens, context)


def check_fits(prompt_len: int, new_tokens: int, context: int, what: str = "prompt") -> None:
    """The one context rule (decoding, the Cache lab): the ``positions`` a run feeds must fit the context."""
    if prompt_len < 1:
        raise DecodeError(f"the {what} is empty: type some text to continue.")
    if prompt_len > context:
        raise DecodeError(f"the {what} is {prompt_len} tokens but the model's context is {context}: "
                          f"shorten it to at most {context} tokens.")
    if positions(prompt_len, new_tokens) > context:
        raise DecodeError(f"{what} ({prompt_len} tokens) + max new tokens ({new_tokens}) needs "
                          f"{positions(prompt_len, new_tokens)} positions (the last new token is never fed "
                          f"back), over the model's context of {context}: at most {context - prompt_len + 1} new "
                          f"tokens fit, or shorten the {what}.")


def _check_memory(s: DecodeSettings, prompt_len: int, shape: cost.Shape, value_bytes: int, budget: int) -> None:
    if not s.record_attention:
        return
    tokens = positions(prompt_len, s.max_new_tokens)  # rows of the stored attention maps
    need = cost.run_memory_bytes(shape, tokens, value_bytes)
    if need > budget:
        fits = (t for t in range(1, tokens + 1) if cost.run_memory_bytes(shape, t, value_bytes) <= budget)
        fit = max(fits, default=0)
        raise DecodeError(f"keeping every attention map for {tokens} tokens needs {display.size(need)}, over "
                          f"this server's budget of {display.size(budget)}: use at most "
                          f"{max(fit - prompt_len + 1, 0)} new tokens with this prompt.")
