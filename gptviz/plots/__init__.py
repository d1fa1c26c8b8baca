"""Pure plotting functions: a Run, Trace or DataFrame in, a plotly Figure out.

No model is touched here and nothing is drawn until a caller shows the figure, so the
same functions serve the app, notebooks and tests. Colours are fixed mid-tones that
read on light and dark backgrounds; inputs that cannot be drawn fail at once with a
message that says what to pass instead.

One module per page: equivalence, attention, memory (KV cache), timing; _base holds what they share.
"""

from gptviz.plots._base import (
    ALLOCATED_COLOR,
    ATTENTION_SCALE,
    CAUSAL_COLOR,
    COVER_COLOR,
    GREY,
    GREY_TEXT,
    HELD_COLOR,
    LABELLED_SCALE,
    MAX_ANIMATION_FRAMES,
    NEW_ROW_COLOR,
    NO_MASK_COLOR,
    SERIES_COLORS,
    machine_epsilon,
    styled,
    token_labels,
)
from gptviz.plots.attention import attention_growth, attention_heads, attention_panes
from gptviz.plots.equivalence import hidden_drift, lens_top_tokens, logit_delta, logit_delta_look_for
from gptviz.plots.memory import kv_allocation, kv_per_layer, kv_what_if
from gptviz.plots.timing import cumulative_times, layer_times, prefill_decode, step_flops, step_times

__all__ = [
    "ALLOCATED_COLOR",
    "ATTENTION_SCALE",
    "CAUSAL_COLOR",
    "COVER_COLOR",
    "GREY",
    "GREY_TEXT",
    "HELD_COLOR",
    "LABELLED_SCALE",
    "MAX_ANIMATION_FRAMES",
    "NEW_ROW_COLOR",
    "NO_MASK_COLOR",
    "SERIES_COLORS",
    "attention_growth",
    "attention_heads",
    "attention_panes",
    "cumulative_times",
    "hidden_drift",
    "kv_allocation",
    "kv_per_layer",
    "kv_what_if",
    "layer_times",
    "lens_top_tokens",
    "logit_delta",
    "logit_delta_look_for",
    "machine_epsilon",
    "prefill_decode",
    "step_flops",
    "step_times",
    "styled",
    "token_labels",
]
