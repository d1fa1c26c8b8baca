"""A run in two parts: the first pass shows everything but refined timing; timing passes stop once they agree."""

import numpy as np
import pytest
import torch

from gptviz import DecodeError, DecodeSettings, Mode, refine, run, start
from gptviz.models import random_model

PROMPT = "the cat sat on"


@pytest.fixture(scope="module")
def model():
    return random_model(layers=2, heads=2, d_model=32, vocab=64, context=96, seed=3)


def _clocked(monkeypatch, model, tick):
    """The recorder's clock advances ``tick(forward_calls_so_far, in_recompute)`` seconds per reading: every pass
    times exactly what the test says, whatever else the machine is doing (no sleeps, no real load)."""
    from types import SimpleNamespace

    from gptviz import instrument

    now, calls, inside = [0.0], [0], [False]

    def perf_counter():
        now[0] += tick(calls[0], inside[0])
        return now[0]

    forward = model.forward

    def counted(*args, **kwargs):
        recompute = kwargs.get("use_cache") is False
        calls[0] += 1
        inside[0] = recompute
        try:
            return forward(*args, **kwargs)
        finally:
            inside[0] = False

    monkeypatch.setattr(instrument, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(model, "forward", counted)


def test_first_pass_has_every_number_but_refined_timing(model, tokenizer):
    settings = DecodeSettings(max_new_tokens=8)
    first = start(model, tokenizer, PROMPT, settings)
    assert set(first.traces) == {Mode.CACHED, Mode.RECOMPUTE}  # recompute-last only refines timing
    assert not first.timing.complete and first.timing.passes == 1
    assert first.cached.attention is not None and first.recompute.attention is not None
    assert all(len(s.pass_seconds) == 1 for s in first.cached.steps)
    whole = run(model, tokenizer, PROMPT, settings)  # start + refine, the tokens and logits the same
    assert whole.cached.token_ids == first.cached.token_ids
    a, b = first.comparison.agreement[Mode.RECOMPUTE], whole.comparison.agreement[Mode.RECOMPUTE]
    assert np.array_equal(a.max_abs_dlogit, b.max_abs_dlogit)
    assert torch.equal(first.recompute.attention, whole.recompute.attention)


def test_refine_adds_a_pass_without_touching_the_run_it_was_given(model, tokenizer):
    first = start(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=8))
    before = [s.pass_seconds[:] for s in first.cached.steps]
    second = refine(model, tokenizer, first)
    assert [s.pass_seconds for s in first.cached.steps] == before  # other sessions may be showing it
    assert Mode.RECOMPUTE_LAST not in first.traces and Mode.RECOMPUTE_LAST not in first.comparison.agreement
    assert second.timing.passes == 2
    # Shown: the pass of every mode; the first pass (two modes side by side) was provisional.
    assert all(len(s.pass_seconds) == 2 and s.seconds == s.pass_seconds[1] for s in second.cached.steps)
    last = second.traces[Mode.RECOMPUTE_LAST]
    assert last.attention is None  # a timing pass stores no attention rows
    assert last.token_ids == first.cached.token_ids
    assert second.comparison.agreement[Mode.RECOMPUTE_LAST].max_abs_dlogit.max() < 1e-4
    assert second.recompute.attention is first.recompute.attention  # shared, not copied


def test_a_timing_pass_keeps_logits_only_for_the_modes_it_compares_first(model, tokenizer, monkeypatch):
    from gptviz import decoding

    kept, decode_all = [], decoding.decode_all

    def noted(*args, **kwargs):  # the real passes; which of their tapes hold a (steps, vocab) logits buffer
        tapes, own = decode_all(*args, **kwargs)
        kept.append({m for m, tape in tapes.items() if tape._logits is not None})
        return tapes, own

    monkeypatch.setattr(decoding, "decode_all", noted)
    settings = DecodeSettings(max_new_tokens=6, timed_passes=3)
    first = start(model, tokenizer, PROMPT, settings)
    second = refine(model, tokenizer, first)
    third = refine(model, tokenizer, second)
    # The first pass compares recompute with the cache; the second, recompute-last (timed there first) with the
    # cached logits of that same pass; the third compares nothing new, so it holds no logits at all.
    assert kept == [{Mode.CACHED, Mode.RECOMPUTE}, {Mode.CACHED, Mode.RECOMPUTE_LAST}, set()]
    for mode, agreement in second.comparison.agreement.items():  # the numbers shown stay those of their first pass
        assert np.array_equal(third.comparison.agreement[mode].kl, agreement.kl)
    assert third.traces[Mode.RECOMPUTE_LAST].dtype == first.cached.dtype == "float32"


def test_passes_that_agree_stop_at_two(model, tokenizer, monkeypatch):
    _clocked(monkeypatch, model, lambda n, recompute: 0.01)  # every pass alike
    result = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=5, timed_passes=3))
    assert result.timing.complete and result.timing.agreed and result.timing.passes == 2


def test_passes_that_agree_on_the_speed_up_stop_at_two_even_on_a_slower_machine(model, tokenizer, monkeypatch):
    steps = 5  # the first pass is 2 x 5 forward calls; from the second pass on every mode is 6x slower, alike: the
    # speed-up, what a pass vouches for, holds
    _clocked(monkeypatch, model, lambda n, recompute: 0.001 if n <= 2 * steps else 0.006)
    result = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=steps, timed_passes=3))
    assert result.timing.complete and result.timing.agreed and result.timing.passes == 2


def test_passes_that_disagree_take_the_most_allowed(model, tokenizer, monkeypatch):
    steps = 5  # the first pass is 2 x 5 forward calls; from the second pass on, only recompute runs 6x slower
    _clocked(monkeypatch, model, lambda n, recompute: 0.006 if recompute and n > 2 * steps else 0.001)
    result = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=steps, timed_passes=3))
    assert result.timing.complete and not result.timing.agreed and result.timing.passes == 3
    recompute = result.recompute.steps  # shown: the fastest pass of every mode; the two-mode first pass left out
    assert all(s.seconds == min(s.pass_seconds[1:]) > s.pass_seconds[0] for s in recompute)


def test_one_timed_pass_still_times_every_mode(model, tokenizer):
    result = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=4, timed_passes=1))
    assert set(result.traces) == set(Mode) and result.timing.complete


def test_a_timing_pass_that_chooses_other_tokens_is_refused(model, tokenizer, monkeypatch):
    first = start(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=6))
    forward = model.forward

    def shifted(*args, **kwargs):  # a model that no longer decodes as it did: other logits, other tokens
        out = forward(*args, **kwargs)
        out.logits = out.logits.roll(1, dims=-1)
        return out

    monkeypatch.setattr(model, "forward", shifted)
    with pytest.raises(DecodeError, match="other tokens"):
        refine(model, tokenizer, first)
