"""What one decoding run recorded: a Trace of Steps, to pandas and to/from JSON.

Attention is kept as one lower-triangular map per layer and head, packed row by row
(row r holds r+1 entries, so the map for the first t tokens is simply the first
t(t+1)/2 entries). For the recompute mode this is the final T x T map; its map at step
s is the top-left block. For the cached mode each step wrote exactly one new row.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from gptviz import packed
from gptviz.modes import Mode


class TraceIndexError(IndexError, ValueError):
    """A layer, head or step this trace does not have; the message gives the valid range."""


@dataclass
class Step:
    index: int  # 0 is the prefill pass over the prompt; step s produces generated token s
    token_id: int  # the token chosen at this step (same in every mode)
    token_text: str  # that token decoded on its own
    input_len: int  # tokens fed into the model this step (cached: prompt, then 1)
    context_len: int  # tokens attended over (prompt + tokens generated before this step)
    seconds: float  # wall time of the forward pass: the fastest of the timed passes
    layer_seconds: list[float]  # wall time inside each transformer block
    kv_bytes: list[int]  # per layer: bytes of keys+values holding real tokens after this step
    kv_allocated: list[int]  # per layer: bytes allocated for keys+values (static > used)
    top_ids: list[int]  # the k highest-scoring next tokens, best first
    top_logits: list[float]  # their logits
    slice_delta: float | None = None  # recompute: max |Δ| of re-computed past attention rows vs stored
    top_texts: list[str] = field(default_factory=list)  # top_ids decoded one by one (no model needed to show them)
    pass_seconds: list[float] = field(default_factory=list)  # wall time of this step in each timed pass, in order


@dataclass
class Trace:
    mode: Mode  # which decoder recorded it (a str enum: equal to "cached", "recompute", "recompute_last")
    model_name: str
    dtype: str  # "float32" | "float64"
    cache_kind: str | None  # "dynamic" | "static" for the cached mode, else None
    prompt_ids: list[int]
    prompt_tokens: list[str]
    layers: int
    heads: int
    head_dim: int
    steps: list[Step] = field(default_factory=list)
    attention: torch.Tensor | None = None  # (layers, heads, T*(T+1)/2) float16, packed lower triangle
    provisional_passes: int = 0  # leading entries of each step's pass_seconds timed beside fewer modes (the first
    # pass: cached and recompute only): shown until a pass of every mode lands, then left out of the times shown

    # ---- derived -------------------------------------------------------------------------
    @property
    def token_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def slots(self) -> int | None:
        """Keys each cached step's attention scores under a StaticCache: its preallocated length, the last
        step's context (every slot is scored, the unused ones masked). None for a growing cache or a recompute."""
        return self.steps[-1].context_len if self.cache_kind == "static" and self.steps else None

    @property
    def attention_len(self) -> int:
        """T, the number of rows in the stored attention map."""
        if self.attention is None:
            return 0
        return packed.rows(self.attention.shape[-1])

    def step_rows(self, step: int) -> range:
        """Rows of the attention map that this step computed *for the first time*."""
        if step == 0:
            return range(0, self.prompt_len)
        return range(self.prompt_len + step - 1, self.prompt_len + step)

    def attention_map(self, layer: int, head: int, step: int | None = None) -> np.ndarray:
        """(t, t) float32 lower-triangular map; for ``step``, the first context_len rows."""
        if self.attention is None:
            raise ValueError(f"the {self.mode} trace kept no attention; run with record_attention=True")
        for name, value, count in (("layer", layer, self.layers), ("head", head, self.heads),
                                   ("step", step, len(self.steps))):
            if name == "step" and value is None:
                continue
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < count:
                raise TraceIndexError(f"{name} must be a whole number from 0 to {count - 1} (this trace has {count} "
                                      f"{name}s), got {value!r}.")
        t = self.attention_len if step is None else self.steps[step].context_len
        return packed.unpack(self.attention[layer, head, : packed.size(t)].float().numpy(), t)

    def layer_attention(self, layer: int, step: int | None = None) -> np.ndarray:
        """(heads, t, t) maps of every head of one layer."""
        return np.stack([self.attention_map(layer, h, step) for h in range(self.heads)])

    def counted(self, step: Step) -> list[float]:
        """The passes whose times a step shows: every pass of every mode once one exists (like for like: each of
        them ran beside the same modes), the provisional first pass until then."""
        timed = step.pass_seconds or [step.seconds]
        return timed[self.provisional_passes:] or timed

    def with_timings(self, again: list[Step]) -> Trace:
        """A copy whose steps fold in another timed pass of the same decode: each step keeps every pass's time
        and shows its fastest counted pass. The attention map is shared, not copied; this trace is left as it was."""
        steps = []
        for step, other in zip(self.steps, again, strict=True):
            passes = [*step.pass_seconds, other.seconds]
            first_counted = len(step.pass_seconds) <= self.provisional_passes  # its times replace the provisional
            layers = other.layer_seconds if first_counted else [
                min(a, b) for a, b in zip(step.layer_seconds, other.layer_seconds, strict=True)]
            counted = passes[self.provisional_passes:]
            steps.append(replace(step, seconds=min(counted), pass_seconds=passes, layer_seconds=list(layers)))
        return replace(self, steps=steps)

    def nbytes(self) -> int:
        """Bytes this trace holds in memory (attention dominates)."""
        per_step = sum(8 * (len(s.layer_seconds) + len(s.kv_bytes) + len(s.kv_allocated)
                            + len(s.top_ids) + len(s.top_logits) + len(s.pass_seconds)) + 120 for s in self.steps)
        attention = 0 if self.attention is None else self.attention.numel() * self.attention.element_size()
        return attention + per_step

    # ---- tables ----------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per step, ready for st.dataframe or a notebook."""
        rows = []
        for s in self.steps:
            rows.append({
                "step": s.index, "token_id": s.token_id, "token": s.token_text, "input_len": s.input_len,
                "context_len": s.context_len, "seconds": s.seconds, "kv_bytes": sum(s.kv_bytes),
                "kv_allocated": sum(s.kv_allocated), "top_ids": s.top_ids, "top_logits": s.top_logits,
                "slice_delta": s.slice_delta,
                **{f"layer{i}_seconds": t for i, t in enumerate(s.layer_seconds)},
            })
        return pd.DataFrame(rows)

    def layer_frame(self) -> pd.DataFrame:
        """Long format: step, layer, seconds, kv_bytes."""
        return pd.DataFrame([
            {"step": s.index, "layer": i, "seconds": s.layer_seconds[i], "kv_bytes": s.kv_bytes[i],
             "kv_allocated": s.kv_allocated[i]}
            for s in self.steps for i in range(self.layers)
        ])

    # ---- JSON ------------------------------------------------------------------------------
    def to_json(self, include_attention: bool = True) -> str:
        data = {k: v for k, v in asdict(self).items() if k not in ("steps", "attention")}
        data["steps"] = [asdict(s) for s in self.steps]
        if include_attention and self.attention is not None:
            array = self.attention.numpy().astype("<f2")
            data["attention"] = {"shape": list(array.shape),
                                 "float16_base64": base64.b64encode(array.tobytes()).decode()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Trace:
        data = json.loads(text)
        steps = [Step(**s) for s in data.pop("steps")]
        attention = data.pop("attention", None)
        trace = cls(**{**data, "mode": Mode(data["mode"])}, steps=steps)  # JSON holds the plain name
        if attention is not None:
            raw = np.frombuffer(base64.b64decode(attention["float16_base64"]), dtype="<f2")
            trace.attention = torch.from_numpy(raw.reshape(attention["shape"]).copy())
        return trace
