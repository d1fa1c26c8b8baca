"""KV-cache size of any Hugging Face ``config.json``: grouped-query heads, head_dim, sliding layers.

Per token, each full-attention layer stores keys and values for ``num_key_value_heads`` heads:
2 · layers · kv_heads · head_dim · bytes. Counting query heads instead overstates a GQA model's cache
by heads / kv_heads (4× for Llama-3-8B, 7× for Qwen2.5-7B). A sliding-window layer stops at its window.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from transformers import AutoConfig

from gptviz import cost, registry
from gptviz.lab.settings import LabError

# A few well-known configs, as their config.json files publish them (attention fields only).
KNOWN_CONFIGS: dict[str, dict] = {
    **{m.repo_id: {"model_type": "gpt2", "n_layer": m.shape.layers, "n_head": m.shape.heads,
                   "n_embd": m.shape.d_model, "n_positions": m.shape.context, "torch_dtype": "float32"}
       for m in registry.HUB.values()},
    "meta-llama/Meta-Llama-3-8B": {"model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32,
                                   "num_key_value_heads": 8, "hidden_size": 4096, "max_position_embeddings": 8192,
                                   "torch_dtype": "bfloat16"},
    "mistralai/Mistral-7B-v0.1": {"model_type": "mistral", "num_hidden_layers": 32, "num_attention_heads": 32,
                                  "num_key_value_heads": 8, "hidden_size": 4096, "sliding_window": 4096,
                                  "max_position_embeddings": 32768, "torch_dtype": "bfloat16"},
    "Qwen/Qwen2.5-7B": {"model_type": "qwen2", "num_hidden_layers": 28, "num_attention_heads": 28,
                        "num_key_value_heads": 4, "hidden_size": 3584, "use_sliding_window": False,
                        "sliding_window": 131072, "max_window_layers": 28, "max_position_embeddings": 131072,
                        "torch_dtype": "bfloat16"},
}


@dataclass
class KVSize:
    layers: int
    full_layers: int  # layers attending to every past token
    window: int | None  # sliding layers' window (None if there are none)
    query_heads: int
    kv_heads: int
    head_dim: int
    bytes_per_value: int
    tokens: int

    @property
    def per_token_full(self) -> int:
        """Bytes one more token adds to the full-attention layers: 2 · layers · kv_heads · head_dim · bytes."""
        return cost.kv_bytes(self.full_layers, self.kv_heads, self.head_dim, 1, self.bytes_per_value)

    @property
    def total(self) -> int:
        sliding = self.layers - self.full_layers
        kept = min(self.tokens, self.window or 0)
        return (cost.kv_bytes(self.full_layers, self.kv_heads, self.head_dim, self.tokens, self.bytes_per_value)
                + cost.kv_bytes(sliding, self.kv_heads, self.head_dim, kept, self.bytes_per_value))

    @property
    def total_if_query_heads(self) -> int:
        """The common mistake: every layer full, query heads instead of KV heads."""
        return cost.kv_bytes(self.layers, self.query_heads, self.head_dim, self.tokens, self.bytes_per_value)

    @property
    def overstatement(self) -> float:
        """How many times too big the query-head count makes the cache."""
        return self.total_if_query_heads / self.total

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"layers": self.layers, "full-attention layers": self.full_layers,
                              "window": self.window, "query heads": self.query_heads, "KV heads": self.kv_heads,
                              "head_dim": self.head_dim, "bytes/value": self.bytes_per_value,
                              "bytes/token (full layers)": self.per_token_full,
                              f"KV at {self.tokens:,} tokens": self.total,
                              "if counted with query heads": self.total_if_query_heads}])


def _require(parsed, given: dict) -> None:
    """The shape must come from the file, never from a config class's defaults."""
    needed = ["num_hidden_layers", "num_attention_heads"]
    if not given.get("head_dim"):
        needed.append("hidden_size")
    for name in needed:
        aliases = {name, parsed.attribute_map.get(name, name)}  # GPT-2 says n_layer, n_head, n_embd
        if not aliases & set(given):
            raise LabError(f"the config has no {' / '.join(sorted(aliases))}: the KV size needs it.")


def kv_size(config: dict, tokens: int, dtype: str | None = None) -> KVSize:
    """The KV cache of a model described by ``config`` (a parsed config.json) holding ``tokens`` tokens."""
    if not isinstance(tokens, int) or tokens < 1:
        raise LabError(f"tokens must be a whole number ≥ 1, got {tokens!r}.")
    if not isinstance(config, dict):
        raise LabError("a config.json holds one JSON object ({...}), got " + type(config).__name__ + ".")
    fields = dict(config)
    try:
        parsed = AutoConfig.for_model(fields.pop("model_type", None), **fields)
    except (ValueError, TypeError, KeyError) as exc:
        raise LabError(f"not a usable config.json: {exc}".split("\n")[0]) from exc
    _require(parsed, config)
    dtype = dtype or str(fields.get("torch_dtype") or fields.get("dtype") or "float32")
    if dtype not in cost.DTYPE_BYTES:
        raise LabError(f"unknown number format {dtype!r}: choose from {', '.join(cost.DTYPE_BYTES)}.")
    layers, heads = parsed.num_hidden_layers, parsed.num_attention_heads
    kv_heads = getattr(parsed, "num_key_value_heads", None) or heads
    head_dim = getattr(parsed, "head_dim", None) or parsed.hidden_size // heads
    types = getattr(parsed, "layer_types", None)
    window = getattr(parsed, "sliding_window", None)
    if types is not None:
        full = sum(t == "full_attention" for t in types)
    else:  # no per-layer types: a set window applies to every layer (Mistral-7B-v0.1)
        full = layers if window is None or getattr(parsed, "use_sliding_window", True) is False else 0
    return KVSize(layers, full, window if full < layers else None, heads, kv_heads, head_dim,
                  cost.DTYPE_BYTES[dtype], tokens)
