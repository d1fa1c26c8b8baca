"""Cache lab: what each real-world change to the KV cache costs in exactness and buys in bytes.

The exact run (a DynamicCache, greedy) chooses the tokens; every variant is then fed those same tokens
(teacher forcing) so each step compares like for like, and also runs on its own choices to show where
its text first parts from the exact one. Bytes are read off each real cache object's tensors.

    from gptviz import lab
    report = lab.run(lm.model, lm.tokenizer, lab.LabSettings(window=24))
    report.summary()                 # one row per variant: max |Δlogit|, KL, agreement, bytes, divergence
    report.variants[0].to_frame()    # per step
    report.precision.summary(); report.prefix.to_frame(); report.paged(block_size=16).summary()
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass

import pandas as pd
from transformers import DynamicCache

from gptviz import cost
from gptviz.lab import text
from gptviz.lab.caches import GroupedKVLayer, SinkWindowLayer, build, measured_bytes
from gptviz.lab.calculator import KNOWN_CONFIGS, KVSize, kv_size, parse_config
from gptviz.lab.paged import LAYOUT_LABELS, PAGED_LABELS, PagedResult, block_table
from gptviz.lab.precision import PRECISION_LABELS, PrecisionResult, precision_study
from gptviz.lab.prefix import PrefixResult, shared_prefix
from gptviz.lab.settings import (
    BACKENDS,
    PRECISIONS,
    LabError,
    LabSettings,
    Variant,
    check,
    labelled,
    quanto_missing,
    suggested_groups,
)
from gptviz.lab.settings import variants as plan
from gptviz.lab.variants import VariantResult, greedy, run_variant

__all__ = [
    "BACKENDS", "KNOWN_CONFIGS", "LAYOUT_LABELS", "PAGED_LABELS", "PRECISIONS", "PRECISION_LABELS", "VARIANT_LABELS",
    "GroupedKVLayer", "KVSize", "LabError", "LabReport", "LabSettings", "PagedResult", "PrecisionResult",
    "PrefixResult", "SinkWindowLayer", "Variant", "VariantResult", "build", "check", "kv_size", "labelled",
    "measured_bytes", "parse_config", "quanto_missing", "run", "suggested_groups", "text",
]


# The variants table's stable ids (JSON keys, ``python -m gptviz lab --json``) -> the page's column labels.
VARIANT_LABELS = {"variant": "variant", "max_abs_dlogit": "max |Δlogit|", "max_kl": "max KL",
                  "argmax_agreement_pct": "argmax agreement %", "first_divergence": "first divergence",
                  "bytes_measured": "bytes measured", "bytes_formula": "bytes formula",
                  "pct_of_exact_bytes": "% of exact bytes"}


@dataclass
class LabReport:
    settings: LabSettings
    prompt_ids: list[int]
    exact_tokens: list[int]  # chosen greedily with the exact DynamicCache; every variant is fed these
    exact_text: str
    exact_bytes: list[int]  # the exact cache's bytes after each step
    variants: list[VariantResult]
    missing: dict[str, str]  # backend -> why it was left out
    precision: PrecisionResult
    prefix: PrefixResult
    context: int  # the model's maximum positions
    bytes_per_token: int  # exact KV bytes of one token, all layers
    seconds: float  # wall time of the whole lab

    def nbytes(self) -> int:
        """Bytes it holds (a server keeps finished results up to a byte budget): its pickled size."""
        return len(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    def variant_rows(self) -> list[dict]:
        """One row per variant, keyed by stable ids (the JSON's keys): exactness lost, bytes bought."""
        exact = self.exact_bytes[-1]
        return [{"variant": v.variant.name, "max_abs_dlogit": max(v.deltas.max_abs), "max_kl": max(v.deltas.kl),
                 "argmax_agreement_pct": 100 * sum(v.deltas.agrees) / len(v.deltas.agrees),
                 "first_divergence": v.first_divergence, "bytes_measured": v.bytes_measured[-1],
                 "bytes_formula": v.bytes_formula[-1], "pct_of_exact_bytes": 100 * v.bytes_measured[-1] / exact}
                for v in self.variants]

    def summary(self) -> pd.DataFrame:
        """``variant_rows`` for display: one row per variant, columns labelled for a reader (VARIANT_LABELS)."""
        return labelled(self.variant_rows(), VARIANT_LABELS)

    def steps(self) -> pd.DataFrame:
        """Per step, every variant (long format), with the exact cache's bytes beside."""
        frame = pd.concat([v.to_frame() for v in self.variants], ignore_index=True)
        return frame.assign(exact_bytes=[self.exact_bytes[s] for s in frame["step"]])

    def sequences(self) -> dict[str, list[int]]:
        """Real token sequences for the paged table: the exact run, each variant's own run, the two prompts."""
        named = {"exact": self.prompt_ids + self.exact_tokens}
        named |= {v.variant.name: self.prompt_ids + v.free_tokens for v in self.variants}
        named |= {f"prefix prompt {i + 1}": s for i, s in enumerate(self.prefix.sequences)}
        return named

    def paged(self, block_size: int) -> PagedResult:
        return block_table(self.sequences(), block_size, self.context, self.bytes_per_token)

    def to_json(self) -> dict:
        return {"prompt_tokens": len(self.prompt_ids), "new_tokens": len(self.exact_tokens),
                "exact_text": self.exact_text, "seconds": self.seconds, "missing_backends": self.missing,
                "variants": self.variant_rows(), "precision": self.precision.summary_rows(),
                "precision_skipped": self.precision.skipped,
                "prefix": {"shared_tokens": self.prefix.shared_tokens, "max_abs_dlogit": list(self.prefix.max_abs),
                           "fresh_prefill_s": self.prefix.fresh_seconds,
                           "reused_prefill_s": self.prefix.reused_seconds, "prefix_bytes": self.prefix.prefix_bytes},
                "paged": self.paged(self.settings.block_size).summary_rows()}


def run(model, tokenizer, settings: LabSettings = LabSettings()) -> LabReport:
    """Every variant on ``settings.prompt``; raises LabError with the fix for settings that cannot run."""
    started = time.perf_counter()
    config = model.config
    settings = check(settings, config, tokenizer)
    prompt_ids = tokenizer(settings.prompt)["input_ids"]
    tokens, logits, sizes = greedy(model, prompt_ids, settings.max_new_tokens, DynamicCache(config=config))
    todo, missing = plan(settings, config.n_embd // config.n_head)
    results = [run_variant(model, tokenizer, v, prompt_ids, tokens, logits) for v in todo]
    precision = precision_study(model, prompt_ids, tokens, PRECISIONS)
    prefix = shared_prefix(model, tokenizer, settings.prefix_prompts, settings.prefix_new_tokens)
    per_token = cost.kv_bytes(config.n_layer, config.n_head, config.n_embd // config.n_head, 1,
                              next(model.parameters()).element_size())
    return LabReport(settings, prompt_ids, tokens, tokenizer.decode(tokens), sizes, results, missing, precision,
                     prefix, config.n_positions, per_token, time.perf_counter() - started)

