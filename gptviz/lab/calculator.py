"""KV-cache size of any Hugging Face ``config.json``: grouped-query heads, head_dim, sliding layers.

Per token, each full-attention layer stores keys and values for ``num_key_value_heads`` heads:
2 · layers · kv_heads · head_dim · bytes. Counting query heads instead overstates a GQA model's cache
by heads / kv_heads (4× for Llama-3-8B, 7× for Qwen2.5-7B). A sliding-window layer stops at its window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
from huggingface_hub.errors import StrictDataclassError
from transformers import CONFIG_MAPPING, AutoConfig

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


MAX_CONFIG_CHARS = 1_000_000  # a real config.json is a few KB; a pasted file larger than this is not one
MAX_DIMENSION = 2**20  # layers, heads, widths: no real model comes near; beyond it a typo, not a model
SHAPE = ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim",
         "sliding_window")  # the fields the size is computed from (config classes' canonical names)
OPTIONAL = ("num_key_value_heads", "head_dim", "sliding_window")  # may be absent or null
LAYER_TYPES = ("full_attention", "sliding_attention")


def parse_config(text: str) -> dict:
    """A pasted config.json's text as a dict; LabError with the fix for anything else."""
    if not isinstance(text, str) or not text.strip():
        raise LabError("the pasted config.json is empty: paste the whole file's text ({...}).")
    if len(text) > MAX_CONFIG_CHARS:
        raise LabError(f"the pasted text is {len(text):,} characters; a config.json is a few thousand: paste only "
                       "that file.")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabError(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): paste the whole "
                       "config.json as it is.") from None
    except ValueError:  # Python refuses to read a whole number of more than 4,300 digits
        raise LabError("not a config.json: it holds a number thousands of digits long. Paste the model's "
                       "config.json.") from None
    except RecursionError:
        raise LabError("not a config.json: its brackets nest thousands deep. Paste the model's config.json.") from None
    if not isinstance(config, dict):
        raise LabError(f"a config.json holds one JSON object ({{...}}), got {type(config).__name__}.")
    return config


def _config_class(config: dict):
    model_type = config.get("model_type")
    if model_type is None:
        raise LabError('the config has no "model_type" (e.g. "llama", "mistral", "gpt2"): add it as the model\'s '
                       "config.json has it.")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise LabError(f"unknown model_type {model_type!r}: use the one transformers knows for that model (e.g. "
                       "llama, mistral, qwen2, gpt2).")
    return CONFIG_MAPPING[model_type]


def _given(config: dict, cls) -> dict:
    """The shape fields the file gives, by canonical name; each a whole number in range (or null where allowed)."""
    given = {}
    for name in SHAPE:
        raw = next((n for n in (name, cls.attribute_map.get(name)) if n in config), None)
        if raw is None:
            continue
        value = config[raw]
        if value is None and name in OPTIONAL:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
            raise LabError(f"{raw} must be a whole number from 1 to {MAX_DIMENSION:,}, got {value!r}: fix it in "
                           "the config.")
        given[name] = value
    for name in ("num_hidden_layers", "num_attention_heads", "hidden_size"):
        if name not in given and not (name == "hidden_size" and "head_dim" in given):
            names = " / ".join(sorted({name, cls.attribute_map.get(name, name)}))  # GPT-2 says n_layer, n_head, n_embd
            raise LabError(f"the config has no {names}: the KV size needs it.")
    return given


def _check_shape(given: dict, config: dict, kv_heads: int) -> None:
    heads = given["num_attention_heads"]
    if kv_heads > heads or heads % kv_heads:
        raise LabError(f"num_key_value_heads ({kv_heads}) must divide num_attention_heads ({heads}): each K/V head "
                       "serves a whole group of query heads. Fix one of the two.")
    if "head_dim" not in given and given["hidden_size"] % heads:
        raise LabError(f"hidden_size ({given['hidden_size']}) is not a multiple of the {heads} attention heads: "
                       "fix one of them, or give head_dim.")
    types = config.get("layer_types")
    if types is None:
        return
    if not isinstance(types, list) or len(types) != given["num_hidden_layers"] or set(types) - set(LAYER_TYPES):
        raise LabError(f"layer_types must list one of {', '.join(LAYER_TYPES)} for each of the "
                       f"{given['num_hidden_layers']} layers: fix it, or leave it out.")
    if "sliding_attention" in types and "sliding_window" not in given:
        raise LabError("layer_types has sliding_attention layers but the config gives no sliding_window: add it.")


def _parsed(config: dict):
    """transformers' own config class (its defaults and aliases), after the file's shape passed the checks."""
    fields = dict(config)
    try:
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    except (ValueError, TypeError, KeyError, AttributeError, StrictDataclassError) as exc:
        reason = [line.strip() for line in str(exc).splitlines() if line.strip()][-1:] or [type(exc).__name__]
        raise LabError(f"not a usable config.json: {reason[0][:200]}") from exc


def kv_size(config: dict, tokens: int, dtype: str | None = None) -> KVSize:
    """The KV cache of a model described by ``config`` (a parsed config.json) holding ``tokens`` tokens."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise LabError(f"tokens must be a whole number ≥ 1, got {tokens!r}.")
    if not isinstance(config, dict):
        raise LabError("a config.json holds one JSON object ({...}), got " + type(config).__name__ + ".")
    given = _given(config, _config_class(config))
    dtype = dtype or str(config.get("torch_dtype") or config.get("dtype") or "float32")
    if dtype not in cost.DTYPE_BYTES:
        raise LabError(f"unknown number format {dtype!r}: choose from {', '.join(cost.DTYPE_BYTES)}.")
    heads = given["num_attention_heads"]
    _check_shape(given, config, given.get("num_key_value_heads", heads))
    parsed = _parsed(config)
    kv_heads = given.get("num_key_value_heads") or getattr(parsed, "num_key_value_heads", None) or heads
    _check_shape(given, config, kv_heads)  # again with a config class's default K/V heads (Mistral: 8)
    layers = given["num_hidden_layers"]
    head_dim = given.get("head_dim") or given["hidden_size"] // heads
    types = config.get("layer_types")
    window = given.get("sliding_window")
    if types is not None:
        full = sum(t == "full_attention" for t in types)
    else:  # no per-layer types: a set window applies to every layer (Mistral-7B-v0.1)
        full = layers if window is None or config.get("use_sliding_window", True) is False else 0
    return KVSize(layers, full, window if full < layers else None, heads, kv_heads, head_dim,
                  cost.DTYPE_BYTES[dtype], tokens)
