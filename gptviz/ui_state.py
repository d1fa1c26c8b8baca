"""What the app's sidebar chooses, as plain data: presets, settings, run keys, tables for display.

Streamlit-free so it can be tested directly; the app turns widget values into an
``AppSettings``, and everything the pages show is derived from the ``Run`` it produced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import pandas as pd

from gptviz import models, registry
from gptviz.hosting import Policy
from gptviz.settings import DecodeSettings

PRESETS = {
    "Romeo at the window": "ROMEO.\nBut soft, what light through yonder window breaks?",
    "Hamlet's question": "HAMLET.\nTo be, or not to be, that is the question:",
    "A king's speech": "KING HENRY.\nOnce more unto the breach, dear friends, once more;",
    "Counting": "One, two, three, four, five,",
}
LOCAL_CHOICE = "local directory…"


def model_choices(policy: Policy) -> list[str]:
    """The sidebar's model options: what this server's policy lets it load."""
    choices = []
    for source in registry.MENU:
        try:
            policy.check_source(source)
            choices.append(source)
        except models.ModelLoadError:
            pass  # hosted server that does not offer it
    if policy.allow_local:
        choices.append(LOCAL_CHOICE)
    return choices


_DECODE = DecodeSettings()  # the defaults of every decoding knob live there


@dataclass(frozen=True)
class AppSettings:
    """Everything that determines a run; equal settings give the same run (up to timings)."""

    source: str = registry.BUNDLED  # 'bundled', a Hub id, or a directory
    prompt: str = PRESETS["Romeo at the window"]
    dtype: str = "float32"  # the compute dtype the model is loaded in
    max_new_tokens: int = _DECODE.max_new_tokens  # the sidebar's decoding knobs, as DecodeSettings names them
    sampling: str = _DECODE.sampling
    temperature: float = _DECODE.temperature
    top_k: int = _DECODE.top_k
    top_p: float = _DECODE.top_p
    seed: int = _DECODE.seed
    cache: str = _DECODE.cache

    def decode_settings(self) -> DecodeSettings:
        knobs = [f.name for f in fields(DecodeSettings) if hasattr(self, f.name)]
        return DecodeSettings(**{name: getattr(self, name) for name in knobs})

    @property
    def key(self) -> tuple:
        """Hashable identity of the run: the cache key for results kept per input."""
        values = asdict(self)
        decode = asdict(self.decode_settings().normalized())  # sampling knobs cannot change a greedy run
        values.update({k: v for k, v in decode.items() if k in values})
        return tuple(sorted(values.items()))


def step_table(run, decode) -> pd.DataFrame:
    """Per step: the chosen token, each mode's top-5 next tokens, |Δlogit|, KL and step times.

    ``decode`` maps a token id to its text (the tokenizer's decode of one id).
    """
    def top5(trace, i: int) -> str:
        return " · ".join(repr(decode(t))[1:-1] for t in trace.steps[i].top_ids[:5])

    table = run.comparison
    rows = []
    for i, step in enumerate(run.cached.steps):
        row = {"step": step.index, "token": repr(step.token_text)[1:-1], "cached top-5": top5(run.cached, i)}
        if run.recompute is not None:
            row["recompute top-5"] = top5(run.recompute, i)
            row["max |Δlogit|"] = table["max_abs_dlogit"].iloc[i]
            row["KL"] = table["kl"].iloc[i]
        for mode in run.traces:
            row[f"{mode} ms"] = 1000 * table[f"{mode}_seconds"].iloc[i]
        rows.append(row)
    return pd.DataFrame(rows)


def token_steps(run) -> pd.DataFrame:
    """The generated text token by token: step, id, text, and tokens in context when it was chosen."""
    return pd.DataFrame([{"step": s.index, "token_id": s.token_id, "token": repr(s.token_text)[1:-1],
                          "context": s.context_len} for s in run.cached.steps])
