"""gptviz.anatomy on tiny random models and hand-built runs."""

import copy

import numpy as np
import pytest
import torch

import gptviz
from gptviz import anatomy, cost, settings
from gptviz.decoding import warm_up
from tests.test_plots import STEPS, make_run


def test_tied_embeddings_on_gpt2_are_one_matrix(tiny_model):
    tied = anatomy.tied_embeddings(tiny_model)
    assert tied["same_object"] and tied["same_memory"]
    assert tied["max_abs_difference"] == 0.0 and tied["shape"] == (64, 32)
    assert tied["saved_parameters"] == 64 * 32


def test_tied_embeddings_tells_a_copied_head_apart(tiny_model):
    untied = copy.deepcopy(tiny_model)
    untied.lm_head.weight = torch.nn.Parameter(untied.transformer.wte.weight.detach().clone() + 1.0)
    tied = anatomy.tied_embeddings(untied)
    assert not tied["same_object"] and not tied["same_memory"]
    assert tied["max_abs_difference"] == pytest.approx(1.0) and tied["saved_parameters"] == 0


def test_logit_lens_last_layer_is_the_models_own_prediction(tiny_model, tokenizer):
    lens = anatomy.logit_lens(tiny_model, tokenizer, "hello world", k=3)
    assert sorted(lens["layer"].unique()) == [0, 1, 2]  # embeddings + 2 blocks
    ids = torch.tensor(tokenizer("hello world")["input_ids"])[None]
    probs = tiny_model(ids).logits[0, -1].double().softmax(-1)  # (vocab,)
    last = lens[lens["layer"] == 2].sort_values("rank")
    assert last["token_id"].tolist() == probs.topk(3).indices.tolist()
    np.testing.assert_allclose(last["probability"], probs.topk(3).values.detach().numpy(), rtol=1e-5)
    first = lens[lens["layer"] == 0]
    assert not np.allclose(first["probability"].to_numpy(), last["probability"].to_numpy())


def test_logit_lens_refuses_empty_text(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="at least one token"):
        anatomy.logit_lens(tiny_model, tokenizer, "")


def test_parameter_shapes_lists_embeddings_block_zero_and_the_head(tiny_model):
    table = anatomy.parameter_shapes(tiny_model)
    names = table["name"].tolist()
    assert "transformer.wte.weight" in names and "lm_head.weight" in names
    assert not any(".h.1." in n for n in names)
    assert table.set_index("name").loc["transformer.h.0.attn.c_attn.weight", "shape"] == "(32, 96)"


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_kv_layout_reads_the_cache_shape_of_a_real_run(tiny_model, tokenizer, kind):
    run = gptviz.run(tiny_model, tokenizer, "abcd", gptviz.DecodeSettings(max_new_tokens=3, cache=kind,
                                                                          modes=("cached",)))
    layout = anatomy.kv_layout(run)
    # static: preallocated for every position the run feeds; dynamic: grown to the same tokens fed so far
    assert layout["keys"].tolist() == ["[1, 2, 6, 16]"] * 2
    assert layout["tokens held"].tolist() == [6, 6]


def test_growth_fit_finds_flat_cached_and_growing_recompute_steps():
    fits = {f.mode: f for f in anatomy.growth_fit(make_run().comparison)}
    assert fits["cached"].seconds_per_extra_token == pytest.approx(0, abs=1e-12)
    assert fits["recompute"].seconds_per_extra_token == pytest.approx(0.01)
    assert fits["recompute"].per_step_growth == pytest.approx(0.05 / 0.02)
    assert fits["recompute"].quadratic == pytest.approx(0.005)
    assert fits["cached"].quadratic == pytest.approx(0, abs=1e-12)


def test_growth_fit_needs_three_decode_steps():
    run = make_run(steps=STEPS - 2)
    with pytest.raises(ValueError, match="at least 4 new tokens"):
        anatomy.growth_fit(run.comparison)


def test_measure_bandwidth_gives_plausible_read_and_copy_rates_and_one_floor():
    bandwidth = cost.measure_bandwidth(nbytes=8 * 2**20, repeats=2)
    assert 1e8 < bandwidth.read < 1e13 and 1e8 < bandwidth.copy < 1e13
    # the floor reads every weight once at the *read* rate (not the copy rate)
    floor = cost.step_floor_seconds(10**9, cost.Bandwidth(read=2e9, copy=8e9))
    assert floor == pytest.approx(0.5)


def test_warm_up_decodes_untimed_and_leaves_the_model_unchanged(tiny_model, tokenizer):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    assert warm_up(tiny_model, tokenizer) > 0
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


def test_kv_totals_measure_and_formula_agree_on_a_real_run_and_disagree_when_bytes_are_off(tiny_model, tokenizer):
    run = gptviz.run(tiny_model, tokenizer, "abcd", gptviz.DecodeSettings(max_new_tokens=3, cache="static",
                                                                          modes=("cached",)))
    kv = anatomy.KVTotals.of(run.cached)
    assert kv.measured == kv.formula == 2 * 2 * 2 * 16 * 6 * 4 and kv.per_token == kv.formula // 6
    assert kv.allocated == kv.per_token * settings.positions(4, 3)  # static: every position the run feeds
    run.cached.steps[-1].kv_bytes[0] += 4
    assert anatomy.KVTotals.of(run.cached).measured == kv.formula + 4
