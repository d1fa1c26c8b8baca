"""The library's public entry points, called with what a notebook user would also try: clear ValueErrors."""

import numpy as np
import pytest

from gptviz import DecodeError, DecodeSettings, run
from gptviz.trace import TraceIndexError


@pytest.fixture(scope="module")
def trace(tiny_model, tokenizer):
    """A recompute trace of a 2-layer, 2-head model: 3 steps over a 5-token prompt."""
    return run(tiny_model, tokenizer, "hello", DecodeSettings(max_new_tokens=3)).recompute


@pytest.mark.parametrize("layer,head,step,message", [
    (-1, 0, None, r"layer must be a whole number from 0 to 1 \(this trace has 2 layers\), got -1"),
    (2, 0, None, r"layer must be a whole number from 0 to 1 .* got 2"),
    (0, -1, None, r"head must be a whole number from 0 to 1 \(this trace has 2 heads\), got -1"),
    (0, 2, None, r"head must be .* got 2"),
    (0, 0, -1, r"step must be a whole number from 0 to 2 \(this trace has 3 steps\), got -1"),
    (0, 0, 3, r"step must be .* got 3"),
    (0, 0, 500, r"step must be .* got 500"),
    (0.5, 0, None, r"layer must be a whole number .* got 0\.5"),
    ("0", 0, None, r"layer must be a whole number .* got '0'"),
    (True, 0, None, r"layer must be a whole number .* got True"),
], ids=["layer-negative", "layer-past-end", "head-negative", "head-past-end", "step-negative", "step-past-end",
        "step-500", "layer-fraction", "layer-string", "layer-bool"])
def test_attention_map_refuses_indices_it_does_not_have(trace, layer, head, step, message):
    with pytest.raises(TraceIndexError, match=message):
        trace.attention_map(layer, head, step)


def test_attention_map_index_errors_are_value_errors_too(trace):
    with pytest.raises(ValueError, match="layer"):
        trace.layer_attention(7)
    with pytest.raises(IndexError, match="step"):
        trace.layer_attention(0, step=9)


def test_attention_map_accepts_numpy_indices(trace):
    np.testing.assert_array_equal(trace.attention_map(np.int64(1), np.int32(1), np.int64(2)),
                                  trace.attention_map(1, 1, 2))


@pytest.mark.parametrize("prompt,message", [
    ("caf\udce9", r"the prompt holds the byte 0xE9, which is not UTF-8 \(at character 4\)"),
    ("\ud83d alone", r"a lone surrogate U\+D83D, which is not a character \(at character 1\)"),
    ("ok \udfff", r"lone surrogate U\+DFFF"),
    (b"bytes prompt", r"the prompt must be text \(str\), got bytes"),
    (None, r"the prompt must be text \(str\), got NoneType"),
    (42, r"the prompt must be text \(str\), got int"),
    (["a", "list"], r"got list"),
    ("\u3000\u2003\n", r"the prompt is empty"),  # ideographic and em spaces only
], ids=["not-utf8-byte", "lone-high-surrogate", "lone-low-surrogate", "bytes", "none", "int", "list", "unicode-spaces"])
def test_prompts_a_tokenizer_cannot_take(tiny_model, tokenizer, prompt, message):
    with pytest.raises(DecodeError, match=message):
        run(tiny_model, tokenizer, prompt, DecodeSettings(max_new_tokens=2))


SAMPLE = {"sampling": "sample"}


@pytest.mark.parametrize("knobs,message", [
    ({**SAMPLE, "temperature": float("inf")}, r"temperature must be > 0 and finite, got inf"),
    ({**SAMPLE, "temperature": float("-inf")}, r"temperature must be > 0 and finite, got -inf"),
    ({**SAMPLE, "temperature": float("nan")}, r"temperature must be > 0 and finite, got nan"),
    ({**SAMPLE, "temperature": "0.7"}, r"temperature must be > 0 and finite, got '0\.7'"),
    ({**SAMPLE, "temperature": True}, r"temperature must be > 0 and finite, got True"),
    ({**SAMPLE, "top_p": "0.5"}, r"top-p must be a number in \(0, 1\] \(1 turns it off\), got '0\.5'"),
    ({**SAMPLE, "top_p": float("nan")}, r"top-p must be a number in \(0, 1\].*got nan"),
    ({**SAMPLE, "top_k": 2.5}, r"top-k must be a whole number ≥ 0 \(0 turns it off\), got 2\.5"),
    ({**SAMPLE, "top_k": True}, r"top-k must be a whole number ≥ 0.*got True"),
    ({**SAMPLE, "top_k": np.int64(-1)}, r"top-k must be a whole number ≥ 0.*got np\.int64\(-1\)|got -1"),
    ({**SAMPLE, "seed": 2**64}, r"seed must be a whole number from 0 to 2\*\*64 - 1 = 18446744073709551615, "
                                r"got 18446744073709551616"),
    ({"seed": 2**70}, r"seed must be a whole number from 0 to 2\*\*64 - 1"),  # greedy: refused, never used
    ({**SAMPLE, "seed": 1.5}, r"seed must be a whole number .* got 1\.5"),
    ({**SAMPLE, "seed": "7"}, r"seed must be a whole number .* got '7'"),
    ({"max_new_tokens": True}, r"max new tokens must be a whole number ≥ 1, got True"),
    ({"max_new_tokens": 2.5}, r"max new tokens must be a whole number ≥ 1, got 2\.5"),
    ({"max_new_tokens": "3"}, r"max new tokens must be a whole number ≥ 1, got '3'"),
    ({"max_new_tokens": None}, r"max new tokens must be a whole number ≥ 1, got None"),
    ({"sampling": "Greedy"}, r"sampling must be 'greedy' or 'sample', got 'Greedy'"),
    ({"cache": None}, r"cache must be 'dynamic' or 'static', got None"),
    ({"modes": "cached"}, r"modes must start with 'cached'"),
    ({"modes": ("cached", "cached")}, r"modes must start with 'cached'"),
    ({"record_attention": "no"}, r"record_attention must be True or False, got 'no'"),
], ids=["temp-inf", "temp-minus-inf", "temp-nan", "temp-string", "temp-bool", "top-p-string", "top-p-nan",
        "top-k-fraction", "top-k-bool", "top-k-numpy-negative", "seed-2**64", "seed-huge-greedy", "seed-fraction",
        "seed-string", "tokens-bool", "tokens-fraction", "tokens-string", "tokens-none", "sampling-case",
        "cache-none", "modes-string", "modes-twice", "record-attention-string"])
def test_settings_refused_with_the_fix(knobs, message):
    with pytest.raises(DecodeError, match=message):
        DecodeSettings(**knobs).validate()


@pytest.mark.parametrize("knobs", [
    {"max_new_tokens": np.int64(3)},
    {**SAMPLE, "seed": np.uint64(2**64 - 1), "top_k": np.int32(5)},
    {**SAMPLE, "temperature": 2, "top_p": np.float32(0.9)},  # an int temperature: transformers wants a float
    {"seed": 2**64 - 1},
], ids=["numpy-tokens", "numpy-seed-and-top-k", "int-temperature", "largest-seed-greedy"])
def test_numbers_users_write_are_accepted_as_plain_python(tiny_model, tokenizer, knobs):
    settings = DecodeSettings(**knobs).validate()
    assert all(type(getattr(settings, name)) is kind for name, kind in
               {"max_new_tokens": int, "temperature": float, "top_k": int, "top_p": float, "seed": int}.items())
    result = run(tiny_model, tokenizer, "hi", DecodeSettings(**knobs))
    assert len(result.cached.steps) == settings.max_new_tokens


def test_greedy_needs_no_seed(tiny_model, tokenizer):
    """Greedy builds no generator: any valid seed gives the same tokens."""
    runs = [run(tiny_model, tokenizer, "hi", DecodeSettings(max_new_tokens=4, seed=s)) for s in (0, 2**64 - 1)]
    assert runs[0].cached.token_ids == runs[1].cached.token_ids


def test_the_context_fits_exactly_what_a_run_feeds(tiny_model, tokenizer):
    """The last chosen token is never fed, so prompt p + n new tokens need p + n - 1 positions (not p + n)."""
    context = tiny_model.config.n_positions  # 64
    full = run(tiny_model, tokenizer, "x" * (context - 1), DecodeSettings(max_new_tokens=2, cache="static"))
    assert full.cached.steps[-1].context_len == context  # the last step attended over every position
    assert full.cached.steps[-1].kv_bytes == full.cached.steps[-1].kv_allocated  # no static slot left unwritten
    assert len(run(tiny_model, tokenizer, "x" * context, DecodeSettings(max_new_tokens=1)).cached.steps) == 1
    with pytest.raises(DecodeError, match=r"needs 65 positions .* at most 2 new tokens fit"):
        run(tiny_model, tokenizer, "x" * (context - 1), DecodeSettings(max_new_tokens=3))
    with pytest.raises(DecodeError, match=r"the prompt is 65 tokens but the model's context is 64: shorten it to "
                                          r"at most 64 tokens"):
        run(tiny_model, tokenizer, "x" * (context + 1), DecodeSettings(max_new_tokens=1))
