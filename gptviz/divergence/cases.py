"""The cases: each a real computation on the loaded model, compared step by step with its reference.

Cases 1–5 are compared with the prompt decoded alone (the single-sequence reference) and fed its tokens;
precision with the same decode in float64 (the Cache lab's study); generate's batch with generate alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from gptviz import instrument
from gptviz.divergence import feeds
from gptviz.lab.precision import TORCH_DTYPES, PrecisionResult
from gptviz.lab.variants import Deltas, deltas

SAME = "the same computation, rounded differently"
DIFFERENT = "a different computation"


@dataclass
class Case:
    name: str  # stable identifier (JSON), e.g. "left_pad_positions_from_mask"
    title: str  # what the page calls it
    dtype: str  # the number format it ran in: its tolerance's
    deltas: Deltas  # per step, against its reference (teacher-forced on the reference's tokens)
    free_tokens: list[int]  # its own greedy choices
    reference_tokens: list[int]  # its reference's own choices
    tolerance: float  # largest max |Δlogit| still rounding (settings.tolerance)
    reasons: tuple[str, str]  # why, if within the tolerance / if beyond it
    seconds: float

    @property
    def max_abs_dlogit(self) -> float:
        return max(self.deltas.max_abs)

    @property
    def kl(self) -> float:
        """Largest per-step KL(reference ‖ case), nats."""
        return max(self.deltas.kl)

    @property
    def first_flip(self) -> int | None:
        return next((i for i, same in enumerate(self.deltas.agrees) if not same), None)

    @property
    def first_text_divergence(self) -> int | None:
        pairs = enumerate(zip(self.free_tokens, self.reference_tokens, strict=True))
        return next((i for i, (a, b) in pairs if a != b), None)

    @property
    def exact_up_to_rounding(self) -> bool:
        return self.max_abs_dlogit <= self.tolerance

    @property
    def verdict(self) -> str:
        return SAME if self.exact_up_to_rounding else DIFFERENT

    @property
    def why(self) -> str:
        if self.max_abs_dlogit == 0:
            return "bit for bit: the very same kernels, adding in the very same order"
        return self.reasons[0 if self.exact_up_to_rounding else 1]


@dataclass(frozen=True)
class Reference:
    """The prompt decoded alone, greedily: what every case is compared with."""

    prompt_ids: list[int]
    other_ids: list[int]
    tokens: list[int]
    logits: torch.Tensor  # (steps, vocab)
    dtype: str
    largest_logit: float  # max |logit| over the run: the scale of its rounding
    tolerance: float  # settings.tolerance in its dtype at that scale


def followed(name: str, title: str, model, feed: feeds.Feed, ref: Reference, reasons: tuple[str, str]) -> Case:
    """A case decoded by ``feeds.follow`` on ``model`` (the shared one, or a twin of it)."""
    started = time.perf_counter()
    run = feeds.follow(model, feed, ref.tokens)
    return Case(name, title, ref.dtype, deltas(ref.logits, run.logits), run.free_tokens, ref.tokens, ref.tolerance,
                reasons, time.perf_counter() - started)


def padding(model, ref: Reference, pad_id: int) -> list[Case]:
    """Cases 1–3: the prompt batched with a longer one, padded left or right."""
    pads = len(ref.other_ids) - len(ref.prompt_ids)

    def feed(side: str, positions: bool) -> feeds.Feed:
        return feeds.batch(model, ref.prompt_ids, ref.other_ids, pad_id, side, positions)

    right = feed("right", True)
    return [
        followed("left_pad_positions_from_mask", "Batch, left-padded, position ids from the mask", model,
                 feed("left", True), ref, (
                     f"mask: its {pads} pads are masked out and position ids count real tokens only, so the prompt "
                     "meets the same numbers as alone; a batch of 2 only adds them in another order",
                     "the prompt's logits moved although pads are masked and positions follow the mask: the mask "
                     "or the position ids did not reach the model")),
        followed("left_pad_default_positions", "Batch, left-padded, default position ids", model,
                 feed("left", False), ref, (
                     "positions: no pad precedes the prompt, so column indices are its own positions",
                     f"positions: without position ids each column gets its index, so the prompt's tokens sit {pads} "
                     "places later than alone and add other position embeddings")),
        followed("right_pad_last_real", "Batch, right-padded, read at the last real token", model, right, ref, (
            "mask: the pads come after the prompt and are masked; its last real token's logits are its own "
            "prediction, added in another order", "the logits at the last real token moved: pads leaked in")),
        followed("right_pad_last_column", "Batch, right-padded, read at the last column", model,
                 replace(right, read=-1), ref, (
                     "the last column is the prompt's own last token (no pad after it)",
                     "wrong column: the last column holds a pad, so its logits predict what follows a pad (the "
                     "first step only: later steps feed one token)")),
    ]


def chunked(model, ref: Reference, chunks: int) -> Case:
    """Case 4: the prompt through the cache in ``chunks`` forward calls instead of one."""
    n = len(ref.prompt_ids)
    splits = tuple(n * i // chunks for i in range(1, chunks))
    return followed("chunked_prefill", f"Prefill in {chunks} chunks through the cache", model,
                    feeds.alone(ref.prompt_ids, splits), ref, (
                        "reduction order: each chunk attends to the cached keys and values before it at positions "
                        "that continue the cache's length; the same sums, split into other shapes",
                        "a chunk missed the cache before it or got other positions"))


def attention(model, ref: Reference) -> list[Case]:
    """Case 5: the same prompt under transformers' sdpa and eager attention and the app's recording attention."""
    kernel = ("reduction order: the same softmax(QKᵀ/√d)·V in another kernel, summed in another order",
              "the kernel computed something else: another mask or scale")
    out = [followed(f"attention_{impl}", f"Attention: transformers' {impl}", feeds.twin(model, impl),
                    feeds.alone(ref.prompt_ids), ref, kernel) for impl in ("sdpa", "eager")]
    with instrument.recording(model):  # every forward call inside records its attention weights
        out.append(followed("attention_recording", "Attention: the app's recording (gptviz)", model,
                            feeds.alone(ref.prompt_ids), ref, kernel))
    return out


def precision(study: PrecisionResult, tolerance: Callable[[str], float], seconds: float) -> list[Case]:
    """Case 6, from the Cache lab's precision study: each format's decode against float64's (its reference);
    the study's ``seconds`` are shared out equally (it times no format alone)."""
    if study.skipped:
        return []
    base = study.row("float64")
    out, rows = [], [r for r in study.rows if r.dtype != "float64"]
    seconds /= max(len(rows), 1)
    for row in rows:
        bits = round(-math.log2(torch.finfo(TORCH_DTYPES[row.dtype]).eps))  # stored mantissa bits
        out.append(Case(f"precision_{row.dtype}", f"The same decode in {row.dtype} vs float64", row.dtype,
                        row.vs_float64, row.free_tokens, base.free_tokens, tolerance(row.dtype), (
                            f"precision: {row.dtype} keeps {bits} mantissa bits (float64: 52) of every weight and "
                            "partial sum; the same arithmetic, rounded coarser",
                            f"precision: {row.dtype}'s rounding ({bits} mantissa bits), grown over the layers, moves "
                            "the logits as much as a change of computation would"), seconds))
    return out


def generate(model, ref: Reference, pad_id: int) -> Case:
    """Case 7: transformers' own ``generate`` on the left-padded batch vs on the prompt alone (greedy)."""
    ids, mask = feeds.padded([ref.prompt_ids, ref.other_ids], pad_id, "left")
    return generated(model, ref, ids, mask, pad_id)


def generated(model, ref: Reference, ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> Case:
    """``generate`` on a batch whose row 0 is the prompt (``ids``, ``mask``: (batch, n)) vs on the prompt alone;
    logits compared up to the step where the two texts part (after it, the contexts differ)."""
    started = time.perf_counter()
    alone = torch.tensor([ref.prompt_ids])  # (1, prompt)
    batched, single = (_generate(model, i, m, len(ref.tokens), pad_id) for i, m in
                       ((ids, mask), (alone, torch.ones_like(alone))))
    parted = next((i for i, (a, b) in enumerate(zip(batched[0], single[0], strict=True)) if a != b), None)
    upto = len(ref.tokens) if parted is None else parted + 1
    return Case("generate_batched", "transformers' generate: batch (left padding) vs alone", ref.dtype,
                deltas(single[1][:upto], batched[1][:upto]), batched[0], single[0], ref.tolerance, (
                    "generate derives the mask and position ids from attention_mask itself: the batch row is the "
                    "prompt's own computation, added in another order",
                    "generate's batch row computed other logits than the prompt alone"),
                time.perf_counter() - started)


@torch.no_grad()
def _generate(model, ids: torch.Tensor, mask: torch.Tensor, n: int, pad_id: int) -> tuple[list[int], torch.Tensor]:
    """Row 0's greedy tokens and raw logits (before any processor), ``n`` of them (eos does not stop it early)."""
    out = model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         pad_token_id=pad_id, output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, ids.shape[1]:].tolist(), torch.stack(out.logits)[:, 0]  # (n,), (n, vocab)
