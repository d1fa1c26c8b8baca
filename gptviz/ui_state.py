"""What the app's sidebar chooses, as plain data: presets, settings, run keys, tables for display.

Streamlit-free so it can be tested directly; the app turns widget values into an
``AppSettings``, and everything the pages show is derived from the ``Run`` it produced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import pandas as pd

from gptviz import anatomy, cost, display, models, registry
from gptviz.hosting import Policy
from gptviz.modes import Mode
from gptviz.settings import DTYPE, DecodeSettings

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
    dtype: str = DTYPE  # the compute dtype the model is loaded in
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


def step_table(run) -> pd.DataFrame:
    """Per step: the chosen token, |Δlogit| and KL (the key columns first, for narrow screens), each mode's
    top-5 next tokens and step times."""
    def top5(trace, i: int) -> str:
        return " · ".join(display.token(t) for t in trace.steps[i].top_texts[:5])

    c = run.comparison
    agreement = c.agreement.get(Mode.RECOMPUTE)
    rows = []
    for i, step in enumerate(run.cached.steps):
        row = {"step": step.index, "token": display.token(step.token_text)}
        if agreement is not None:
            row["max |Δlogit|"] = agreement.max_abs_dlogit[i]
            row["KL"] = agreement.kl[i]
        row["cached top-5"] = top5(run.cached, i)
        if agreement is not None:
            row["recompute top-5"] = top5(run.recompute, i)
        for mode, seconds in c.seconds.items():
            row[f"{mode} ms"] = 1000 * seconds[i]
        rows.append(row)
    return pd.DataFrame(rows)


def token_steps(run) -> pd.DataFrame:
    """The generated text token by token: step, id, text, and tokens in context when it was chosen."""
    return pd.DataFrame([{"step": s.index, "token_id": s.token_id, "token": display.token(s.token_text),
                          "context": s.context_len} for s in run.cached.steps])


def what_if_table(shapes: dict[str, cost.Shape], tokens: int, dtype: str) -> pd.DataFrame:
    """KV-cache size of each GPT-2 size at ``tokens`` tokens in ``dtype`` (cost.kv_bytes), and whether it fits."""
    return pd.DataFrame([{  # the key column right after the name: a phone shows it without scrolling
        "model": name, f"KV cache for {tokens:,} tokens ({display.WHAT_IF_UNIT[0]})":
            cost.kv_bytes(s.layers, s.heads, s.head_dim, tokens, cost.DTYPE_BYTES[dtype]) / display.WHAT_IF_UNIT[1],
        "beyond its context?": tokens > s.context,
        "layers": s.layers, "heads": s.heads, "head_dim": s.head_dim} for name, s in shapes.items()])


def growth_table(fits: list[anatomy.Growth]) -> pd.DataFrame:
    """The Timing page's table of anatomy.growth_fit, one row per mode."""
    return pd.DataFrame([{
        "mode": f.mode.label, "ms per extra token (slope)": f.seconds_per_extra_token * 1e3,
        "last ÷ first steps": f.per_step_growth, "total: s per n²": f.quadratic, "total: s per n": f.linear}
        for f in fits])
