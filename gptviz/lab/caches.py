"""The cache variants as real transformers cache objects, and their bytes measured and by formula.

Every variant is a ``transformers.Cache`` whose layers are transformers' own (``DynamicLayer``,
``DynamicSlidingWindowLayer``, ``QuantizedCache``'s fp8/quanto layers) or a small subclass of
``DynamicLayer`` where transformers has none (attention sinks, grouped K/V heads).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, QuantizedCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer


class SinkWindowLayer(DynamicLayer):
    """StreamingLLM: keep the first ``sinks`` tokens and the newest ``window - 1`` (the new token makes ``window``).

    GPT-2 adds learned absolute positions to the input, so a kept key carries its original position and
    needs no re-rotation; a rotary model (Llama) would have to re-rotate the keys it keeps.
    """

    is_sliding = True

    def __init__(self, sinks: int, window: int):
        super().__init__()
        self.sinks, self.window, self.cumulative_length = sinks, window, 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        keys = torch.cat([self.keys, key_states], dim=-2)  # (batch, heads, kept + new, head_dim)
        values = torch.cat([self.values, value_states], dim=-2)
        self.keys, self.values = _evict(keys, self.sinks, self.window), _evict(values, self.sinks, self.window)
        return keys, values  # this step still sees everything kept so far plus itself

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        kept = self.keys.shape[-2] if self.is_initialized else 0
        return kept + query_length, self.cumulative_length - kept  # all kept keys lie in the past

    def get_seq_length(self) -> int:
        return self.cumulative_length


def _evict(states: torch.Tensor, sinks: int, window: int) -> torch.Tensor:
    """Keep the first ``sinks`` and the last ``window - 1`` positions of ``states`` (batch, heads, t, head_dim)."""
    if states.shape[-2] <= sinks + window - 1:
        return states
    return torch.cat([states[..., :sinks, :], states[..., states.shape[-2] - (window - 1):, :]], dim=-2)


class GroupedKVLayer(DynamicLayer):
    """GQA what-if: store K/V mean-pooled over ``groups`` groups of heads, expand them back for attention.

    Pooling the projected keys equals pooling the key projection's weights (it is linear), which is the
    uptraining-free conversion of Ainslie et al. (2023); the cache holds ``groups`` heads instead of all.
    """

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        heads = key_states.shape[1]
        keys, values = super().update(_pool(key_states, self.groups), _pool(value_states, self.groups))
        return _expand(keys, heads), _expand(values, heads)  # (batch, heads, t, head_dim)


def _pool(states: torch.Tensor, groups: int) -> torch.Tensor:
    b, h, t, d = states.shape
    return states.view(b, groups, h // groups, t, d).mean(dim=2)  # (batch, groups, t, head_dim)


def _expand(states: torch.Tensor, heads: int) -> torch.Tensor:
    return states.repeat_interleave(heads // states.shape[1], dim=1)  # (batch, heads, t, head_dim)


def build(variant, config) -> DynamicCache | QuantizedCache:
    """A fresh cache for ``variant`` (a lab.Variant) on a model with ``config``."""
    layers = config.n_layer
    if variant.kind == "exact":
        return DynamicCache(config=config)
    if variant.kind == "fp8":
        return QuantizedCache(backend="fp8", config=config)
    if variant.kind == "quanto":
        return QuantizedCache(backend="quanto", config=config, nbits=variant.nbits,
                              residual_length=variant.residual_length, q_group_size=variant.q_group_size)
    cache = DynamicCache()
    if variant.kind == "window":
        cache.layers = [DynamicSlidingWindowLayer(sliding_window=variant.window) for _ in range(layers)]
    elif variant.kind == "sinks":
        cache.layers = [SinkWindowLayer(variant.sinks, variant.window) for _ in range(layers)]
    elif variant.kind == "gqa":
        cache.layers = [GroupedKVLayer(variant.groups) for _ in range(layers)]
    else:
        raise ValueError(f"unknown cache variant {variant.kind!r}")
    return cache


def _tensor_bytes(obj) -> int:
    """Bytes of every plain tensor inside ``obj``: tensors, tuples (fp8: data + scale), quanto tensors."""
    if obj is None:
        return 0
    if isinstance(obj, (tuple, list)):
        return sum(_tensor_bytes(o) for o in obj)
    if type(obj) is torch.Tensor:
        return obj.numel() * obj.element_size()
    names, _ = obj.__tensor_flatten__()  # a tensor subclass (quanto): sum its inner tensors
    return sum(_tensor_bytes(getattr(obj, n)) for n in names)


def measured_bytes(cache) -> int:
    """What the cache object holds now: full-precision states, quantized states with their scales."""
    return sum(_tensor_bytes(getattr(layer, name, None)) for layer in cache.layers
               for name in ("keys", "values", "_quantized_keys", "_quantized_values"))
