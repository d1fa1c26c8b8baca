"""What the Cache lab runs: its settings, the variants they describe, and their one validation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from gptviz.settings import NEW_TOKENS, DecodeError, check_fits, check_prompt

BACKENDS = ("fp8", "quanto-int4", "quanto-int2")  # quantized-KV backends the lab knows
PRECISIONS = ("float64", "float32", "bfloat16", "float16")


class LabError(ValueError):
    """Lab settings that cannot run; the message says what to change."""


def labelled(rows: list[dict], labels: dict[str, str]) -> pd.DataFrame:
    """Rows keyed by stable ids as a table for display: the ids' columns in order, renamed to their labels."""
    return pd.DataFrame(rows, columns=list(labels)).rename(columns=labels)


@dataclass(frozen=True)
class LabSettings:
    prompt: str = "ROMEO.\n"  # the prompt every variant continues (same tokens as the exact run)
    max_new_tokens: int = NEW_TOKENS  # tokens the exact run chooses (greedy), then every variant is fed
    window: int = 24  # sliding window: tokens each new token attends to, itself included (≥ 2)
    sinks: int = 4  # attention sinks: first tokens kept forever beside the window (0 = plain window)
    groups: int | None = None  # GQA what-if: K/V head groups dividing the head count (None: suggested_groups)
    backends: tuple[str, ...] = BACKENDS  # quantized KV caches to try
    residual_length: int = 16  # quanto: newest tokens kept unquantized before a flush
    block_size: int = 16  # paged KV: tokens per block
    prefix_prompts: tuple[str, str] = ("ROMEO.\nBut soft, what light", "ROMEO.\nBut soft, who comes")  # share a prefix
    prefix_new_tokens: int | None = None  # each prefix prompt's continuation (None: max_new_tokens, or what fits)


@dataclass(frozen=True)
class Variant:
    name: str  # short id, e.g. "window 24"
    kind: str  # exact | fp8 | quanto | window | sinks | gqa
    window: int = 0
    sinks: int = 0
    groups: int = 0
    nbits: int = 0
    residual_length: int = 0
    q_group_size: int = 0


def suggested_groups(heads: int) -> int:
    """A GQA what-if worth showing: half as many K/V heads (1 group, i.e. MQA, for an odd head count)."""
    return heads // 2 if heads % 2 == 0 else 1


def quanto_missing() -> str | None:
    """None when optimum-quanto's int4/int2 can run now, else why not (shown on the page): not installed, its
    C++ extension still compiling on this server, or no compiler to build it (gptviz.lab.quanto)."""
    from gptviz.lab import quanto

    return quanto.missing()


def variants(settings: LabSettings, head_dim: int) -> tuple[list[Variant], dict[str, str]]:
    """The cache variants to run, and the backends left out with the reason why."""
    s, missing = settings, {}
    out = []
    for backend in s.backends:
        if backend == "fp8":
            out.append(Variant("fp8", "fp8"))
        elif (reason := quanto_missing()) is not None:
            missing[backend] = reason
        else:
            nbits = int(backend.removeprefix("quanto-int"))
            out.append(Variant(backend, "quanto", nbits=nbits, residual_length=s.residual_length,
                               q_group_size=head_dim))
    out.append(Variant(f"window {s.window}", "window", window=s.window))
    out.append(Variant(f"sinks {s.sinks} + window {s.window}", "sinks", window=s.window, sinks=s.sinks))
    out.append(Variant(f"GQA {s.groups} groups", "gqa", groups=s.groups))
    return out, missing


def check(settings: LabSettings, config, tokenizer=None) -> LabSettings:
    """Raise LabError with the fix for any setting the model cannot run; else the settings, made concrete.

    With the model's ``tokenizer`` the prompts are also measured against its context (the prompt for
    ``max_new_tokens``, the two shared-prefix ones for ``prefix_new_tokens``; left at None, that is
    ``max_new_tokens`` or as many as fit beside the longer prefix prompt, which the report says)."""
    s, context, heads = settings, config.n_positions, config.n_head
    _text(s.prompt)
    _whole(s.max_new_tokens, "max new tokens", 1)
    _whole(s.window, "the window", 2, "(a window of 1 keeps no past at all)")
    if s.window > context:
        raise LabError(f"the window ({s.window}) is larger than the model's context ({context}): "
                       f"use at most {context} tokens.")
    _whole(s.sinks, "sinks", 0)
    if s.sinks + s.window > context:
        raise LabError(f"sinks + window ({s.sinks} + {s.window}) exceed the model's context ({context}).")
    if s.groups is None:
        s = replace(s, groups=suggested_groups(heads))
    _whole(s.groups, "GQA groups", 1)
    if heads % s.groups:
        fits = [g for g in range(1, heads + 1) if heads % g == 0]
        raise LabError(f"{s.groups} groups do not divide the model's {heads} heads: choose one of {fits}.")
    _whole(s.block_size, "the block size", 1)
    _whole(s.residual_length, "the residual length", 1)
    unknown = [b for b in s.backends if b not in BACKENDS]
    if unknown:
        raise LabError(f"unknown quantization backend {unknown[0]!r}: choose from {', '.join(BACKENDS)}.")
    if len(s.prefix_prompts) != 2 or not all(p.strip() for p in s.prefix_prompts):
        raise LabError("the shared-prefix demo needs two non-empty prompts.")
    for prompt in s.prefix_prompts:
        _text(prompt)
    if s.prefix_new_tokens is not None:
        _whole(s.prefix_new_tokens, "the shared-prefix new tokens", 1)
    if tokenizer is not None:
        s = _fits(s, tokenizer, context)
    return s


def _fits(s: LabSettings, tokenizer, context: int) -> LabSettings:
    """gptviz.settings' one context rule, for the prompt and each shared-prefix prompt."""
    lengths = {what: len(tokenizer(text)["input_ids"]) for what, text in
               (("prompt", s.prompt), ("first shared-prefix prompt", s.prefix_prompts[0]),
                ("second shared-prefix prompt", s.prefix_prompts[1]))}
    if s.prefix_new_tokens is None:  # as many as the run, or what fits beside the longer prefix prompt
        longest = max(lengths["first shared-prefix prompt"], lengths["second shared-prefix prompt"])
        s = replace(s, prefix_new_tokens=max(1, min(s.max_new_tokens, context - longest + 1)))
    for what, length in lengths.items():
        try:
            check_fits(length, s.max_new_tokens if what == "prompt" else s.prefix_new_tokens, context, what)
        except DecodeError as exc:
            raise LabError(str(exc)) from None
    return s


def _text(prompt) -> None:
    """The app's one prompt check (text, not blank, UTF-8), with the lab's error type."""
    try:
        check_prompt(prompt)
    except DecodeError as exc:
        raise LabError(str(exc)) from None


def _whole(value, what: str, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LabError(f"{what} must be a whole number ≥ {minimum}, got {value!r} {why}".rstrip() + ".")
