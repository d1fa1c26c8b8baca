"""The engine's promises: same tokens, same logits, same attention, honest KV bytes."""

import threading

import numpy as np
import pytest
import torch

from gptviz import MODES, DecodeError, DecodeSettings, Limits, Mode, cost, decoding, run
from gptviz.compare import Agreement, hidden_state_drift
from gptviz.decoding import decode_cached, decode_recompute, kv_sizes, make_cache
from gptviz.lockstep import alone
from gptviz.models import random_model
from gptviz.sampling import Replay, Sampler
from gptviz.trace import Trace

PROMPT = "the cat sat on"


@pytest.fixture(scope="module")
def model():
    return random_model(layers=3, heads=4, d_model=64, vocab=64, context=96, seed=2)


@pytest.fixture(scope="module")
def model64():
    return random_model(layers=3, heads=4, d_model=64, vocab=64, context=96, seed=2, dtype="float64")


@pytest.mark.parametrize("settings", [
    DecodeSettings(max_new_tokens=12),
    DecodeSettings(max_new_tokens=12, sampling="sample", temperature=1.3, top_k=20, top_p=0.9, seed=7),
    DecodeSettings(max_new_tokens=12, cache="static"),
], ids=["greedy", "sampled", "static"])
def test_modes_choose_same_tokens_and_agree_on_logits(model, tokenizer, settings):
    result = run(model, tokenizer, PROMPT, settings)
    cached, recompute, last = (result.traces[m] for m in ("cached", "recompute", "recompute_last"))
    assert cached.token_ids == recompute.token_ids == last.token_ids
    assert len(cached.steps) == 12
    full, last = result.comparison.agreement[Mode.RECOMPUTE], result.comparison.agreement[Mode.RECOMPUTE_LAST]
    assert full.max_abs_dlogit.max() <= 1e-4
    assert last.max_abs_dlogit.max() <= 1e-4
    assert full.argmax_equal.all() and last.argmax_equal.all()
    assert (full.kl < 1e-8).all()
    assert full.max_abs_dlogit.max() > 0 or settings.cache == "static"  # not bitwise: different shapes
    headline = result.summary().recompute
    assert full.same_choice.all() and headline.same_tokens and headline.first_disagreement is None


@pytest.mark.parametrize("settings", [
    DecodeSettings(max_new_tokens=12),
    DecodeSettings(max_new_tokens=12, sampling="sample", temperature=1.3, seed=7),
], ids=["greedy", "sampled"])
def test_same_tokens_says_no_when_the_recompute_logits_would_choose_otherwise(model, tokenizer, settings,
                                                                              monkeypatch):
    noise = torch.Generator().manual_seed(0)
    forward = model.forward

    def perturbed(*args, use_cache=None, **kwargs):  # only the recompute passes (use_cache=False) are disturbed
        out = forward(*args, use_cache=use_cache, **kwargs)
        if use_cache is False:
            out.logits = out.logits + 20 * torch.randn(out.logits.shape, generator=noise)
        return out

    monkeypatch.setattr(model, "forward", perturbed)
    result = run(model, tokenizer, PROMPT, settings)
    cached, recompute = result.cached, result.recompute
    assert recompute.token_ids == cached.token_ids  # it still replays the cached tokens: like for like
    headline, agreement = result.summary().recompute, result.comparison.agreement[Mode.RECOMPUTE]
    assert not headline.same_tokens
    assert headline.first_disagreement == int(np.flatnonzero(~agreement.same_choice)[0])
    if settings.sampling == "greedy":  # the recompute pass's own choice is its argmax
        own = result.traces[Mode.RECOMPUTE]
        expected = [s.top_ids[0] != c.token_id for s, c in zip(own.steps, cached.steps, strict=True)]
        assert (~agreement.same_choice).tolist() == expected


@pytest.mark.parametrize("settings", [
    DecodeSettings(max_new_tokens=9),
    DecodeSettings(max_new_tokens=9, sampling="sample", temperature=1.3, top_k=20, seed=7),
    DecodeSettings(max_new_tokens=9, cache="static"),
], ids=["greedy", "sampled", "static"])
def test_lockstep_repeated_timing_records_exactly_what_one_pass_alone_records(model, tokenizer, settings):
    result = run(model, tokenizer, PROMPT, settings)  # 2 or 3 timed passes in lockstep
    ids = torch.tensor(tokenizer(PROMPT)["input_ids"])
    n = settings.max_new_tokens
    single = {Mode.CACHED: alone(decode_cached(model, ids, Sampler(settings), n, settings.cache))}  # mode by mode
    tokens = single[Mode.CACHED].sequence[len(ids):].tolist()
    for mode in (Mode.RECOMPUTE, Mode.RECOMPUTE_LAST):
        single[mode] = alone(decode_recompute(model, ids, Replay(tokens, len(ids)), n, mode.logits_to_keep))
    for mode, tape in single.items():
        trace = result.traces[mode]
        assert trace.token_ids == [s.token_id for s in tape.steps] == tokens
        assert [(s.top_ids, s.top_logits) for s in trace.steps] == [(s.top_ids, s.top_logits) for s in tape.steps]
        if mode != Mode.RECOMPUTE_LAST:
            assert torch.equal(trace.attention, tape.attention.to(torch.float16))
        passes = result.timing.passes - (mode == Mode.RECOMPUTE_LAST)  # it joins at the first timing-only pass
        assert all(len(s.pass_seconds) == passes and s.seconds == min(trace.counted(s)) for s in trace.steps)
    assert result.timing.complete and result.timing.passes in (2, 3)
    for mode in (Mode.RECOMPUTE, Mode.RECOMPUTE_LAST):  # whole logit vectors, through the comparison
        own = Agreement.of(single[Mode.CACHED].logits, single[mode].logits)
        locked = result.comparison.agreement[mode]
        assert np.array_equal(own.max_abs_dlogit, locked.max_abs_dlogit) and np.array_equal(own.kl, locked.kl)


def test_float64_shrinks_the_gap(model64, tokenizer):
    result = run(model64, tokenizer, PROMPT, DecodeSettings(max_new_tokens=10))
    assert result.comparison.agreement[Mode.RECOMPUTE].max_abs_dlogit.max() <= 1e-10
    assert result.cached.dtype == result.recompute.dtype == "float64"  # what the run recorded, not the fixture


def test_sampled_runs_depend_on_seed(model, tokenizer):
    a = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=16, sampling="sample", seed=1))
    b = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=16, sampling="sample", seed=1))
    c = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=16, sampling="sample", seed=2))
    assert a.cached.token_ids == b.cached.token_ids
    assert a.cached.token_ids != c.cached.token_ids


@pytest.mark.parametrize("kwargs", [
    {"sampling": "greedy"},
    {"sampling": "sample", "temperature": 0.8, "top_k": 10, "top_p": 0.95, "seed": 5},
], ids=["greedy", "sampled"])
def test_tokens_equal_model_generate(model, tokenizer, kwargs):
    settings = DecodeSettings(max_new_tokens=15, **kwargs)
    ours = run(model, tokenizer, PROMPT, settings).cached.token_ids
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    gen = {"do_sample": False} if settings.sampling == "greedy" else {
        "do_sample": True, "temperature": settings.temperature, "top_k": settings.top_k, "top_p": settings.top_p}
    torch.manual_seed(settings.seed)  # generate draws from the global generator; we from a seeded private one
    out = model.generate(ids, max_new_tokens=15, min_new_tokens=15, pad_token_id=0, **gen)
    assert out[0, ids.shape[1]:].tolist() == ours


def test_cached_rows_equal_recompute_rows_and_slice_proof(model, tokenizer):
    result = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=10))
    cached, recompute = result.cached, result.recompute
    assert cached.attention_len == recompute.attention_len == len(PROMPT) + 10 - 1
    for layer in range(cached.layers):
        for head in range(cached.heads):
            a, b = cached.attention_map(layer, head), recompute.attention_map(layer, head)
            np.testing.assert_allclose(a, b, atol=2e-3)  # stored in float16
            np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=5e-3)  # each row is a distribution
            assert np.all(np.triu(a, k=1) == 0)  # causal: nothing above the diagonal
    comparison = result.comparison
    assert comparison.attn_row_delta.max() <= 1e-5  # compared in float32 before storage
    # Slice proof: every recompute step re-derived the past rows and they matched what was stored.
    slice_deltas = comparison.slice_delta[~np.isnan(comparison.slice_delta)]
    assert len(slice_deltas) == 9 and slice_deltas.max() <= 1e-5
    # The map at step s is the top-left block of the final map.
    step = 4
    block = recompute.attention_map(1, 2, step=step)
    assert block.shape == (len(PROMPT) + step,) * 2
    np.testing.assert_array_equal(block, recompute.attention_map(1, 2)[: len(block), : len(block)])


def test_slice_proof_detects_a_changed_past(model, tokenizer):
    """The check is real: a recompute pass whose past rows moved reports the movement."""
    from gptviz.decoding import Tape
    from gptviz.instrument import Recorder

    ids = torch.tensor(tokenizer(PROMPT)["input_ids"])
    tape = Tape(model, ids, 3, "recompute", True, None)
    t = len(ids)
    for step in range(2):
        rec = Recorder(model.config.n_layer)
        n = t + step
        weights = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]  # (t, t) uniform causal rows
        if step == 1:
            weights[0, 0] = 0.5  # a "past" row that changed
        rec.attention = [weights.expand(1, model.config.n_head, n, n) for _ in range(model.config.n_layer)]
        tape.add(step, rec, torch.zeros(64), torch.tensor(1))
    assert tape.steps[0].slice_delta is None
    assert tape.steps[1].slice_delta == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_kv_bytes_equal_the_formula(model, tokenizer, kind):
    n = 9
    result = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=n, cache=kind, modes=("cached",)))
    c = model.config
    head_dim, p = c.n_embd // c.n_head, len(PROMPT)
    for step in result.cached.steps:
        t = step.context_len  # keys/values held after this step: every token fed so far
        expected = cost.kv_bytes(c.n_layer, c.n_head, head_dim, t, 4)
        assert sum(step.kv_bytes) == expected
        allocated = cost.kv_bytes(c.n_layer, c.n_head, head_dim, p + n - 1 if kind == "static" else t, 4)
        assert sum(step.kv_allocated) == allocated  # static: every position fed, the last chosen token never is
    assert result.cached.steps[-1].kv_bytes == result.cached.steps[-1].kv_allocated  # no slot left unwritten


def test_measured_kv_bytes_read_the_caches_contents_not_its_length_counter(model):
    """Force the bad case: a slot written behind the cache's back must show up as measured ≠ formula."""
    c = model.config
    cache = make_cache(model, "static", max_len=10)
    model(torch.arange(5)[None], past_key_values=cache, use_cache=True)  # 5 of 10 slots written
    per_slot = cost.kv_bytes(1, c.n_head, c.n_embd // c.n_head, 1, 4)
    used, allocated = kv_sizes(cache)
    assert used == [5 * per_slot] * c.n_layer and allocated == [10 * per_slot] * c.n_layer
    cache.layers[0].keys[:, :, 8, :] = 1.0  # a stray write; get_seq_length() still says 5
    assert cache.get_seq_length() == 5 and kv_sizes(cache)[0][0] == 6 * per_slot
    dynamic = make_cache(model, "dynamic", max_len=0)
    model(torch.arange(5)[None], past_key_values=dynamic, use_cache=True)
    dynamic.layers[1].keys[:, :, 2, :] = 0.0  # a token whose key and value were lost
    dynamic.layers[1].values[:, :, 2, :] = 0.0
    assert kv_sizes(dynamic)[0] == [5 * per_slot, 4 * per_slot] + [5 * per_slot] * (c.n_layer - 2)
    # A slot is empty only when every entry is zero: one NaN or one denormal in one head is a written slot.
    dynamic.layers[1].values[:, 3, 2, 7] = float("nan")
    assert kv_sizes(dynamic)[0][1] == 5 * per_slot
    dynamic.layers[1].values[:, 3, 2, 7] = -0.0
    dynamic.layers[1].keys[:, 0, 2, 0] = 1e-45  # float32's smallest denormal
    assert kv_sizes(dynamic)[0][1] == 5 * per_slot
    dynamic.layers[1].keys[:, 0, 2, 0] = -0.0  # negative zero is zero
    assert kv_sizes(dynamic)[0][1] == 4 * per_slot


def test_drift_zero_with_mask_large_without(model, tokenizer):
    ids = tokenizer(PROMPT * 2)["input_ids"]
    causal = hidden_state_drift(model, ids, causal=True, points=6)
    free = hidden_state_drift(model, ids, causal=False, points=6)
    assert set(causal["layer"]) == set(range(model.config.n_layer + 1))
    assert causal["drift"].max() <= 1e-5
    deep = free[free["layer"] >= 1]
    assert deep["drift"].min() > 1e-3  # every layer after the first attention moves
    assert free[free["layer"] == 0]["drift"].max() == 0  # embeddings never see other tokens


def test_recompute_last_projects_one_position(model, tokenizer):
    """logits_to_keep=1 gives the same next-token logits without projecting every position."""
    ids = torch.tensor(tokenizer(PROMPT)["input_ids"])
    replay = Replay([1, 2, 3], len(ids))
    full = alone(decode_recompute(model, ids, replay, 3, logits_to_keep=0, record_attention=False))
    last = alone(decode_recompute(model, ids, replay, 3, logits_to_keep=1, record_attention=False))
    assert full.mode == "recompute" and last.mode == "recompute_last"
    for a, b in zip(full.logits, last.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with torch.no_grad():
        assert model(ids[None], logits_to_keep=1).logits.shape[1] == 1


def test_step_records_timing_and_inputs(model, tokenizer):
    result = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=5))
    cached, recompute = result.cached, result.recompute
    assert [s.input_len for s in cached.steps] == [len(PROMPT), 1, 1, 1, 1]
    assert [s.input_len for s in recompute.steps] == [len(PROMPT) + i for i in range(5)]
    for s in cached.steps + recompute.steps:
        assert s.seconds > 0 and len(s.layer_seconds) == model.config.n_layer
        assert all(t > 0 for t in s.layer_seconds) and sum(s.layer_seconds) <= s.seconds
        assert s.top_logits == sorted(s.top_logits, reverse=True)
    assert all(sum(s.kv_bytes) == 0 for s in recompute.steps)  # nothing persists between steps


def test_trace_round_trips_through_json_and_pandas(model, tokenizer):
    result = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=6))
    trace = result.cached
    back = Trace.from_json(trace.to_json())
    assert back.token_ids == trace.token_ids and back.steps == trace.steps
    assert torch.equal(back.attention, trace.attention)
    assert type(back.mode) is Mode and back.mode.label == Mode.CACHED.label  # was a plain str: .label failed
    recompute = Trace.from_json(result.recompute.to_json(include_attention=False))
    assert recompute.mode is Mode.RECOMPUTE and recompute.attention is None
    frame = trace.to_frame()
    assert list(frame["token_id"]) == trace.token_ids and len(frame) == 6
    assert len(trace.layer_frame()) == 6 * model.config.n_layer
    attention_bytes = trace.attention.numel() * trace.attention.element_size()  # bytes, not elements
    assert attention_bytes < trace.nbytes() < 2 * attention_bytes  # attention dominates


def test_concurrent_decodes_match_sequential(model, tokenizer):
    prompts = ["alpha beta", "gamma delta epsilon", "zeta", "eta theta iota kappa", "lambda mu", "nu xi omicron",
               "pi rho sigma tau", "upsilon phi"]  # 8 sessions sharing one model
    settings = DecodeSettings(max_new_tokens=8, sampling="sample", seed=3)
    sequential = [run(model, tokenizer, p, settings) for p in prompts]
    results: dict[int, object] = {}

    def work(i):
        results[i] = run(model, tokenizer, prompts[i], settings)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, expected in enumerate(sequential):
        got = results[i]
        for mode in expected.traces:
            assert got.traces[mode].token_ids == expected.traces[mode].token_ids
            a, b = got.traces[mode].attention, expected.traces[mode].attention
            assert (a is None and b is None) or torch.equal(a, b)
            assert [s.top_ids for s in got.traces[mode].steps] == [s.top_ids for s in expected.traces[mode].steps]
        assert len(got.cached.steps[0].layer_seconds) == model.config.n_layer


@pytest.mark.parametrize("prompt,settings,match", [
    ("", DecodeSettings(), "empty"),
    ("   \n", DecodeSettings(), "empty"),
    ("x" * 97, DecodeSettings(), "the prompt is 97 tokens but the model's context is 96: shorten it to at most 96"),
    ("hello", DecodeSettings(max_new_tokens=93), "needs 97 positions .* at most 92 new tokens fit"),
    ("hello", DecodeSettings(max_new_tokens=0), "≥ 1"),
    ("hello", DecodeSettings(max_new_tokens=-3), "≥ 1"),
    ("hello", DecodeSettings(sampling="sample", temperature=0), "temperature"),
    ("hello", DecodeSettings(sampling="sample", top_p=1.5), "top-p"),
    ("hello", DecodeSettings(sampling="sample", top_k=-1), "top-k"),
    ("hello", DecodeSettings(cache="paged"), "cache"),
])
def test_bad_inputs_raise_clear_errors(model, tokenizer, prompt, settings, match):
    with pytest.raises(DecodeError, match=match):
        run(model, tokenizer, prompt, settings)


def test_memory_budget_states_the_limit(model, tokenizer):
    with pytest.raises(DecodeError, match="budget"):
        run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=60), limits=Limits(memory_budget=200_000))
    ok = run(model, tokenizer, PROMPT, DecodeSettings(max_new_tokens=60, record_attention=False),
             limits=Limits(memory_budget=200_000))
    assert ok.cached.attention is None


def test_sampler_uses_transformers_processors():
    """top-k 2 and top-p: only the kept tokens are ever drawn, and each of them is (a real draw, not argmax)."""
    logits = torch.tensor([0.0, 5.0, 1.0, 4.5])
    top2 = Sampler(DecodeSettings(sampling="sample", top_k=2, seed=0))
    assert {int(top2(torch.tensor([0]), logits)) for _ in range(200)} == {1, 3}
    everything = Sampler(DecodeSettings(sampling="sample", seed=0))
    assert {int(everything(torch.tensor([0]), logits)) for _ in range(400)} == {0, 1, 2, 3}
    nucleus = Sampler(DecodeSettings(sampling="sample", top_p=0.5, seed=0))  # token 1 alone holds > 0.5
    assert {int(nucleus(torch.tensor([0]), logits)) for _ in range(100)} == {1}
    hot = Sampler(DecodeSettings(sampling="sample", temperature=0.05, seed=0))  # sharp: 5.0 beats 4.5 almost always
    assert sum(int(hot(torch.tensor([0]), logits)) == 1 for _ in range(100)) >= 99


def test_decoders_run_standalone(model, tokenizer):
    ids = torch.tensor(tokenizer(PROMPT)["input_ids"])
    tape = alone(decode_cached(model, ids, Sampler(DecodeSettings()), 4))
    assert [s.input_len for s in tape.steps] == [len(ids), 1, 1, 1] and len(tape.sequence) == len(ids) + 4


@pytest.mark.parametrize("modes", [MODES, (Mode.CACHED, Mode.RECOMPUTE_LAST), (Mode.CACHED,)])
def test_each_pass_reports_the_steps_its_settings_count(model, tokenizer, modes):
    """A progress bar's total (DecodeSettings.steps) is what the first pass and a timing pass report."""
    settings = DecodeSettings(max_new_tokens=4, modes=modes, timed_passes=2)
    calls = []
    first = decoding.start(model, tokenizer, PROMPT, settings, on_step=lambda *step: calls.append(step))
    assert len(calls) == settings.steps(first_pass=True) == 4 * min(len(modes), 2)
    calls.clear()
    decoding.refine(model, tokenizer, first, on_step=lambda *step: calls.append(step))
    assert len(calls) == settings.steps(first_pass=False) == 4 * len(modes)
    assert {mode for mode, _, _ in calls} == set(modes)
