"""gptviz: run GPT-2 with a KV cache and by naive re-evaluation, record everything, compare.

Notebook use::

    import gptviz
    lm = gptviz.load("bundled")                     # or "gpt2", or a local directory
    run = gptviz.run(lm.model, lm.tokenizer, "ROMEO.\\n", gptviz.DecodeSettings(max_new_tokens=32))
    run.summary()                                   # headline numbers
    run.comparison                                  # pandas: per-step Δlogit, KL, timings, KV bytes
    run.cached.to_frame()                           # pandas: one trace, one row per step
    gptviz.plots.logit_delta(run)                   # plotly figures, whenever you like
"""

from gptviz import compare, cost
from gptviz.decoding import DecodeError, DecodeSettings, Run, decode_cached, decode_recompute, run
from gptviz.models import BUNDLED, HUB_MODELS, LoadedModel, ModelLoadError, load, random_model
from gptviz.trace import MODE_LABELS, MODES, Step, Trace

__all__ = [
    "BUNDLED", "HUB_MODELS", "MODES", "MODE_LABELS", "DecodeError", "DecodeSettings", "LoadedModel",
    "ModelLoadError", "Run", "Step", "Trace", "compare", "cost", "decode_cached", "decode_recompute", "load",
    "random_model", "run",
]
