"""The library's public entry points, called with what a notebook user would also try: clear ValueErrors."""

import numpy as np
import pytest

from gptviz import DecodeSettings, run
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
