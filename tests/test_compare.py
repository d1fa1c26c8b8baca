"""The typed results: Comparison and Summary report what the logits and steps say, and the opposite when it is true."""

import numpy as np
import pytest
import torch

from gptviz import Mode
from gptviz.compare import Agreement, Comparison
from tests.test_plots import DELTAS, STEPS, make_logits, make_run, make_trace


def test_comparison_reports_the_logit_differences_it_is_given():
    comparison = make_run().comparison
    full = comparison.agreement[Mode.RECOMPUTE]
    np.testing.assert_allclose(full.max_abs_dlogit, DELTAS, rtol=1e-6, atol=1e-15)
    assert full.argmax_equal.all() and (full.topk_overlap == 1).all() and (full.kl < 1e-12).all()
    assert np.isnan(comparison.slice_delta[0]) and comparison.slice_delta[1:].tolist() == [1e-8] * (STEPS - 1)
    assert comparison.decoding.tolist() == [False] + [True] * (STEPS - 1)


def test_agreement_sees_a_changed_top_token():
    reference = torch.tensor([[0.0, 5.0, 1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    other = reference.clone()
    other[0, 0] = 9.0  # a different token now scores best
    agreement = Agreement.of(reference, other, k=2)
    assert not agreement.argmax_equal[0] and agreement.max_abs_dlogit[0] == 9.0
    assert agreement.topk_overlap[0] == 0.5 and agreement.kl[0] > 1


def test_to_frame_keeps_the_csv_and_json_columns():
    frame = make_run().comparison.to_frame()
    assert list(frame.columns) == [
        "step", "token_id", "context_len", "cached_seconds", "recompute_seconds", "max_abs_dlogit", "argmax_equal",
        "topk_overlap", "kl", "same_choice", "slice_delta", "recompute_last_seconds", "max_abs_dlogit_last",
        "argmax_equal_last", "topk_overlap_last", "kl_last", "same_choice_last", "attn_row_delta", "kv_bytes",
        "kv_allocated"]
    assert frame["recompute_seconds"].iloc[2] == pytest.approx(0.03) and len(frame) == STEPS


def test_summary_of_a_cached_only_run_has_no_equivalence():
    summary = make_run(modes=("cached",)).summary()
    assert summary.recompute is None and summary.steps == STEPS
    assert set(summary.to_dict()) == {"steps", "prompt_tokens", "dtype", "cached_seconds", "kv_cache_bytes",
                                      "kv_cache_allocated", "timed_passes", "timing_spread"}


def test_summary_headline_follows_the_comparison():
    run = make_run()
    equivalence = run.summary().recompute
    assert equivalence.max_abs_dlogit == pytest.approx(max(DELTAS)) and equivalence.argmax_agreement == 1.0
    assert equivalence.speedup == pytest.approx(sum(0.01 * (1 + s) for s in range(STEPS)) / (0.01 * STEPS))
    assert equivalence.max_slice_delta == pytest.approx(1e-8) and equivalence.max_attn_row_delta == 0.0


def test_summary_says_no_when_the_top_token_differs():
    traces = {m: make_trace(m) for m in ("cached", "recompute")}
    logits = {m: make_logits(m, STEPS) for m in traces}
    logits["recompute"][2] = -logits["cached"][2]  # step 2 would pick another token
    comparison = Comparison.of({m: t.steps for m, t in traces.items()}, logits)
    assert comparison.agreement[Mode.RECOMPUTE].argmax_equal.tolist() == [True, True, False, True, True]
    assert comparison.attn_row_delta is None


def test_same_choice_compares_what_each_mode_would_choose_not_the_replayed_tokens():
    reference = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]], dtype=torch.float64)
    agreement = Agreement.of(reference, reference.clone(), k=2, chosen=[1, 0], own=[1, 2])
    assert agreement.same_choice.tolist() == [True, False]  # step 1's own choice differs, its logits do not
    assert Agreement.of(reference, reference.clone(), k=2).same_choice.all()  # without choices: the argmaxes


def test_largest_drift_reads_each_side_of_the_mask():
    import pandas as pd

    from gptviz.compare import largest_drift

    frame = pd.DataFrame({"causal": [True, True, False, False], "drift": [1e-7, 0.0, 0.3, 0.7]})
    assert largest_drift(frame, True) == 1e-7 and largest_drift(frame, False) == 0.7


def test_the_summary_shows_how_much_the_timed_passes_disagreed():
    run = make_run()
    for trace in run.traces.values():
        for step in trace.steps:
            step.pass_seconds = [step.seconds, step.seconds * 1.02, step.seconds * 5]  # one pass hit by a burst
    steady = run.summary()
    assert steady.timed_passes == 3 and steady.timing_spread == pytest.approx(1.02)  # the median ignores the burst
    for step in run.cached.steps:
        step.pass_seconds = [step.seconds, step.seconds * 2, step.seconds * 2]  # busy for most of the run
    for step in run.recompute.steps:
        step.pass_seconds = [step.seconds] * 3
    busy = run.summary()
    assert busy.timing_spread == pytest.approx(2.0)
    low, high = busy.recompute.speedup_range  # per pass: cached took 1x, 2x, 2x as long
    assert low == pytest.approx(busy.recompute.speedup / 2) and high == pytest.approx(busy.recompute.speedup)
