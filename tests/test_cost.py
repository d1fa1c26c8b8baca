"""The analytic cost model against what torch itself counts and what a run really holds."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gptviz import DecodeSettings, cost, run
from gptviz.decoding import decode_cached, decode_recompute
from gptviz.lockstep import alone
from gptviz.models import random_model
from gptviz.sampling import Replay, Sampler

PROMPT, STEPS = 7, 4


@pytest.fixture(scope="module")
def model():
    return random_model(layers=2, heads=4, d_model=64, vocab=100, context=64, seed=3)


def counted(decode) -> tuple[int, object]:
    """FLOPs torch's own counter sees (matmuls: 2 per multiply-add) while ``decode`` runs."""
    with FlopCounterMode(display=False) as counter:
        tape = decode()
    return counter.get_total_flops(), tape


@pytest.mark.parametrize("mode", ["cached", "static", "recompute", "recompute_last"])
def test_step_flops_equal_torchs_flop_counter_over_a_whole_decode(model, mode):
    """Eager attention (a recording) scores every key slot: a StaticCache's preallocated ones too."""
    ids = torch.arange(PROMPT)
    slots = None
    if mode in ("cached", "static"):
        kind = "static" if mode == "static" else "dynamic"
        flops, tape = counted(lambda: alone(decode_cached(model, ids, Sampler(DecodeSettings()), STEPS,
                                                          cache_kind=kind)))
        slots = PROMPT + STEPS - 1 if kind == "static" else None
    else:
        flops, tape = counted(lambda: alone(decode_recompute(model, ids, Replay([5, 6, 7, 8], PROMPT), STEPS,
                                                             logits_to_keep=1 if mode == "recompute_last" else 0)))
    shape = cost.Shape.of(model)
    mode = "cached" if mode == "static" else mode
    expected = sum(cost.step_flops(shape, mode, s.context_len, s.input_len, slots) for s in tape.steps)
    assert flops == expected


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_the_overviews_flops_ratio_is_torchs_count_of_both_decodes(model, tokenizer, kind):
    """The Overview's 'FLOPs ratio, same run', from the cached trace alone, against what torch counts running
    the recompute decode and the cached decode (FLOPs depend on shapes only, not on which tokens)."""
    ids = torch.arange(PROMPT)
    cached_flops, tape = counted(lambda: alone(decode_cached(model, ids, Sampler(DecodeSettings()), STEPS,
                                                             cache_kind=kind)))
    recompute_flops, _ = counted(lambda: alone(decode_recompute(model, ids, Replay([5, 6, 7, 8], PROMPT), STEPS)))
    ratio = cost.FlopsRatio.of(cost.Shape.of(model), tape.to_trace("tiny", tokenizer, kind))
    assert (ratio.mode_flops, ratio.cached_flops) == (recompute_flops, cached_flops)
    assert ratio.ratio == pytest.approx(recompute_flops / cached_flops) and ratio.ratio > 1


def test_the_flop_counter_tells_the_modes_apart(model):
    """Not a tautology: the three modes' counts differ, as the model says they should."""
    shape = cost.Shape.of(model)
    t = PROMPT + 3
    cached, full, last = (cost.step_flops(shape, m, t, 1 if m == "cached" else None)
                          for m in ("cached", "recompute", "recompute_last"))
    assert cached < last < full
    assert full - last == 2 * shape.d_model * shape.vocab * (t - 1)  # the vocab projection of t - 1 rows


def test_trace_bytes_are_the_stored_attention(model, tokenizer):
    result = run(model, tokenizer, "abcdefg", DecodeSettings(max_new_tokens=STEPS))
    c, tokens = model.config, PROMPT + STEPS - 1  # the last token chosen is never fed
    for trace in (result.cached, result.recompute):
        stored = trace.attention.numel() * trace.attention.element_size()
        assert stored == cost.trace_bytes(c.n_layer, c.n_head, tokens)
    assert result.traces["recompute_last"].attention is None


def test_kv_bytes_count_bytes_not_elements():
    assert cost.kv_bytes(layers=2, heads=3, head_dim=4, tokens=5, bytes_per_value=4) == 2 * 2 * 3 * 4 * 5 * 4
    assert cost.kv_bytes(2, 3, 4, 5, 2) * 2 == cost.kv_bytes(2, 3, 4, 5, 4)
