"""What the app's sidebar chooses, as plain data: presets, settings, run keys, tables for display.

Streamlit-free so it can be tested directly; the app turns widget values into an
``AppSettings``, and everything the pages show is derived from the ``Run`` it produced.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import pandas as pd

from gptviz import models
from gptviz.decoding import DecodeSettings
from gptviz.hosting import Policy

PRESETS = {
    "Romeo at the window": "ROMEO.\nBut soft, what light through yonder window breaks?",
    "Hamlet's question": "HAMLET.\nTo be, or not to be, that is the question:",
    "A king's speech": "KING HENRY.\nOnce more unto the breach, dear friends, once more;",
    "Counting": "One, two, three, four, five,",
}
HUB_CHOICES = ("gpt2", "distilgpt2", "gpt2-medium")
LOCAL_CHOICE = "local directory…"
TEST_MODEL = "random-tiny"  # a tiny random GPT-2 with a character tokenizer, for fast app tests
TEST_MODELS_ENV = "GPTVIZ_ALLOW_TEST_MODELS"  # set to 1 to offer TEST_MODEL (never in the normal UI)


def test_models_allowed() -> bool:
    return os.environ.get(TEST_MODELS_ENV, "") == "1"


def model_choices(policy: Policy) -> list[str]:
    """The sidebar's model options: what this server's policy lets it load."""
    choices = []
    for source in (models.BUNDLED, *HUB_CHOICES):
        try:
            policy.check_source(source)
            choices.append(source)
        except models.ModelLoadError:
            pass  # hosted server that does not offer it
    if policy.allow_local:
        choices.append(LOCAL_CHOICE)
    if test_models_allowed():
        choices.append(TEST_MODEL)
    return choices


@dataclass(frozen=True)
class AppSettings:
    """Everything that determines a run; equal settings give the same run (up to timings)."""

    source: str = models.BUNDLED  # 'bundled', a Hub id, a directory, or TEST_MODEL
    prompt: str = PRESETS["Romeo at the window"]
    max_new_tokens: int = 24
    sampling: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    cache: str = "dynamic"

    def decode_settings(self) -> DecodeSettings:
        return DecodeSettings(max_new_tokens=self.max_new_tokens, sampling=self.sampling,
                              temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, seed=self.seed,
                              cache=self.cache)

    @property
    def key(self) -> tuple:
        """Hashable identity of the run: the cache key for results kept per input."""
        values = asdict(self)
        if self.sampling == "greedy":  # sampling knobs cannot change a greedy run
            values.update(temperature=1.0, top_k=0, top_p=1.0, seed=0)
        return tuple(sorted(values.items()))


class CharTokenizer:
    """One token per byte of text, shown as printable characters: enough to drive a random model."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __call__(self, text: str) -> dict:
        return {"input_ids": [b % self.vocab for b in text.encode()]}

    def decode(self, ids) -> str:
        return "".join(chr(33 + int(i) % 94) for i in ids)


def load_test_model(source: str, dtype: str) -> models.LoadedModel:
    """The TEST_MODEL, only where TEST_MODELS_ENV allows it (so the public UI never offers it)."""
    if source != TEST_MODEL or not test_models_allowed():
        raise models.ModelLoadError(f"'{source}' is a test model; set {TEST_MODELS_ENV}=1 to use it.")
    model = models.random_model(layers=2, heads=2, d_model=32, vocab=256, context=256, seed=0, dtype=dtype)
    loaded = models._loaded(model, CharTokenizer(256), source, "tiny random GPT-2 (test)", dtype)
    return loaded


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
