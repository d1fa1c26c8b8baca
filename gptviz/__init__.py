"""gptviz: run GPT-2 with a KV cache and by naive re-evaluation, record everything, compare.

Notebook use::

    import gptviz
    lm = gptviz.load("bundled")                     # or "gpt2", or a local directory
    run = gptviz.run(lm.model, lm.tokenizer, "ROMEO.\\n", gptviz.DecodeSettings(max_new_tokens=32))
    run.summary()                                   # headline numbers (typed: Summary)
    run.comparison.to_frame()                       # pandas: per-step Δlogit, KL, timings, KV bytes
    run.cached.to_frame()                           # pandas: one trace, one row per step
    from gptviz import plots
    plots.logit_delta(run)                          # plotly figures, whenever you like
"""

from gptviz import compare, cost
from gptviz.decoding import Run, decode_cached, decode_recompute, refine, run, start
from gptviz.models import LoadedModel, ModelLoadError, load, random_model
from gptviz.modes import MODE_LABELS, MODES, Mode
from gptviz.registry import BUNDLED, HUB_MODELS
from gptviz.settings import DecodeError, DecodeSettings, Limits
from gptviz.trace import Step, Trace

__all__ = [
    "BUNDLED", "HUB_MODELS", "MODES", "MODE_LABELS", "DecodeError", "DecodeSettings", "Limits", "LoadedModel",
    "Mode", "ModelLoadError", "Run", "Step", "Trace", "compare", "cost", "decode_cached", "decode_recompute", "load",
    "random_model", "refine", "run", "start",
]
