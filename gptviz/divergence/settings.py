"""What the Divergence lab runs, its one validation, and the tolerance that separates rounding from a change.

Two checks: ``check`` needs no model (the command line refuses bad arguments before loading one), and
``check_lengths`` needs the tokenized prompts and the model's context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gptviz.settings import NEW_TOKENS, DecodeError, check_prompt

# A logit that went through the same arithmetic in another order (or in a coarser format) differs from its
# reference by a few units in the last place (ulps) of the largest logit, accumulated over the layers: measured
# here ≤ 11 ulps (float32: bundled model 4.4, GPT-2-small shape 10.5; bfloat16 0.8 and float16 0.9 against
# float64). A different computation (padding attended, positions shifted) moves logits by O(1): ~10^5 ulps in
# float32. 64 ulps sits between the two; in 16-bit formats it is as large as a real change can be.
ROUNDING_ULPS = 64
OTHER_PROMPT = ("KING HENRY.\nOnce more unto the breach, dear friends, once more; or close the wall up with our "
                "English dead.")  # longer than every app preset, so the prompt is the padded row of the batch


class DivergenceError(ValueError):
    """Settings the lab cannot run; the message says what to change."""


@dataclass(frozen=True)
class DivergenceSettings:
    prompt: str = "ROMEO.\n"  # the reference: decoded alone, greedily; every case is compared with it
    other_prompt: str = OTHER_PROMPT  # its partner in a batch: must be longer, so the prompt gets the padding
    max_new_tokens: int = NEW_TOKENS  # tokens the reference chooses; every case is fed them (teacher forcing)
    chunks: int = 2  # chunked prefill: the prompt goes through the cache in this many forward calls


def tolerance(dtype: torch.dtype, largest_logit: float) -> float:
    """Largest |Δlogit| still called rounding: ROUNDING_ULPS ulps of the largest reference logit in ``dtype``
    (at least of 1.0, so a model with tiny logits is not held to a tighter bound than its arithmetic)."""
    return ROUNDING_ULPS * torch.finfo(dtype).eps * max(1.0, largest_logit)


def check(settings: DivergenceSettings) -> DivergenceSettings:
    """Everything that needs no model; raises DivergenceError with the fix."""
    s = settings
    for what, text in (("the prompt", s.prompt), ("the other prompt", s.other_prompt)):
        try:
            check_prompt(text)
        except DecodeError as exc:
            raise DivergenceError(str(exc).replace("the prompt", what, 1)) from None
    _whole(s.max_new_tokens, "max new tokens", 1)
    _whole(s.chunks, "chunks", 2, "(one chunk is the plain prefill)")
    return s


def check_lengths(settings: DivergenceSettings, prompt_len: int, other_len: int, context: int) -> None:
    """The tokenized prompts against the settings and the model's context."""
    if settings.chunks > prompt_len:
        raise DivergenceError(f"{settings.chunks} chunks need a prompt of at least {settings.chunks} tokens; it "
                              f"has {prompt_len}: use fewer chunks or a longer prompt.")
    if other_len <= prompt_len:
        raise DivergenceError(f"the other prompt ({other_len} tokens) must be longer than the prompt ({prompt_len} "
                              "tokens), so that the prompt is the one padded in the batch: add words to it.")
    if other_len + settings.max_new_tokens > context:
        raise DivergenceError(f"the other prompt ({other_len} tokens) + max new tokens ({settings.max_new_tokens}) "
                              f"exceed the model's context of {context}: at most "
                              f"{max(context - other_len, 0)} new tokens fit.")


def _whole(value, what: str, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DivergenceError(f"{what} must be a whole number ≥ {minimum}, got {value!r} {why}".rstrip() + ".")
