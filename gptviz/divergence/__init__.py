"""Divergence lab: where "the same logits" stops being true, and why.

The prompt is decoded alone, greedily (the reference). Each case then computes the same continuation another
way on the loaded model — in a padded batch, with or without position ids, read at another column, prefilled in
chunks, under another attention kernel, in another number format, through ``generate`` — fed the reference's
tokens so every step compares like for like, and also on its own choices, to find where its text parts. A case
within ``settings.tolerance`` of its reference is the same computation rounded differently; beyond it, a
different computation.

    from gptviz import divergence
    report = divergence.run(lm.model, lm.tokenizer, divergence.DivergenceSettings(prompt="ROMEO.\\n"))
    report.to_frame()     # one row per case;  report.steps(): per step;  report.to_json(): for tools
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass

import pandas as pd
import torch

from gptviz.divergence import cases, feeds
from gptviz.divergence.cases import DIFFERENT, SAME, Case, Reference
from gptviz.divergence.settings import (
    ROUNDING_ULPS,
    DivergenceError,
    DivergenceSettings,
    check,
    check_lengths,
    tolerance,
)
from gptviz.lab.precision import TORCH_DTYPES, precision_study
from gptviz.lab.settings import PRECISIONS

__all__ = ["DIFFERENT", "ROUNDING_ULPS", "SAME", "Case", "DivergenceError", "DivergenceReport", "DivergenceSettings",
           "check", "run", "tolerance", "validate"]

JSON_KEYS = ("name", "max_abs_dlogit", "kl", "first_flip", "first_text_divergence", "exact_up_to_rounding", "why")


@dataclass
class DivergenceReport:
    settings: DivergenceSettings
    prompt_ids: list[int]
    other_ids: list[int]
    reference_tokens: list[int]  # the prompt alone, greedy: what every case is fed
    reference_text: str
    attn_implementation: str  # the reference's attention (the loaded model's)
    cases: list[Case]
    free_texts: dict[str, str]  # case name -> its own greedy continuation, decoded
    precision_skipped: str | None  # why the precision study did not run, if it did not
    seconds: float  # wall time of the whole lab

    def nbytes(self) -> int:
        """Bytes it holds (a server keeps finished results up to a byte budget): its pickled size."""
        return len(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    def to_frame(self) -> pd.DataFrame:
        """One row per case (JSON_KEYS, plus what the page shows beside them)."""
        return pd.DataFrame([{"case": c.title, **{k: getattr(c, k) for k in JSON_KEYS}, "verdict": c.verdict,
                              "tolerance": c.tolerance, "dtype": c.dtype, "seconds": c.seconds} for c in self.cases])

    def steps(self) -> pd.DataFrame:
        """Long format: one row per (case, step)."""
        return pd.concat([pd.DataFrame({"case": c.title, "name": c.name, "step": range(len(c.deltas.max_abs)),
                                        "max_abs_dlogit": c.deltas.max_abs, "kl": c.deltas.kl,
                                        "same_argmax": c.deltas.agrees}) for c in self.cases], ignore_index=True)

    def to_json(self) -> dict:
        return {"cases": [{k: getattr(c, k) for k in JSON_KEYS} for c in self.cases], "seconds": self.seconds}


def run(model, tokenizer, settings: DivergenceSettings = DivergenceSettings()) -> DivergenceReport:
    """Every case on ``settings.prompt``; raises DivergenceError with the fix for settings that cannot run."""
    started = time.perf_counter()
    prompt_ids, other_ids = validate(settings, tokenizer, model.config)
    ref = reference(model, prompt_ids, other_ids, settings.max_new_tokens)
    pad_id = model.config.eos_token_id  # GPT-2 has no pad token; generate pads with eos too
    found = [*cases.padding(model, ref, pad_id), cases.chunked(model, ref, settings.chunks),
             *cases.attention(model, ref)]
    study_started = time.perf_counter()
    study = precision_study(model, prompt_ids, ref.tokens, PRECISIONS, recompute=False, free=True)
    found += cases.precision(study, lambda name: tolerance(TORCH_DTYPES[name], ref.largest_logit),
                             time.perf_counter() - study_started)
    found.append(cases.generate(model, ref, pad_id))
    texts = {c.name: tokenizer.decode(c.free_tokens) for c in found}
    return DivergenceReport(settings, prompt_ids, other_ids, ref.tokens, tokenizer.decode(ref.tokens),
                            model.config._attn_implementation, found, texts, study.skipped,
                            time.perf_counter() - started)


def validate(settings: DivergenceSettings, tokenizer, config) -> tuple[list[int], list[int]]:
    """The one validation (a page calls it before queueing): the prompts' token ids, or DivergenceError."""
    settings = check(settings)
    prompt_ids, other_ids = (tokenizer(p)["input_ids"] for p in (settings.prompt, settings.other_prompt))
    check_lengths(settings, len(prompt_ids), len(other_ids), config.n_positions)
    return prompt_ids, other_ids


def reference(model, prompt_ids: list[int], other_ids: list[int], steps: int) -> Reference:
    """The prompt alone, greedy: its free run is its own forced run (it follows its own argmax)."""
    feed = feeds.alone(prompt_ids)
    stream, rows, tokens = feeds.Stream(model, feed), [], []
    rows.append(stream.prefill())
    while len(tokens) < steps:
        tokens.append(int(rows[-1].argmax()))
        if len(tokens) < steps:
            rows.append(stream.step(tokens[-1]))
    logits = torch.stack(rows)  # (steps, vocab)
    dtype, largest = next(model.parameters()).dtype, float(logits.abs().max())
    return Reference(prompt_ids, other_ids, tokens, logits, str(dtype).removeprefix("torch."), largest,
                     tolerance(dtype, largest))
