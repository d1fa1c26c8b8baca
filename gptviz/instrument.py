"""Per-call recording inside a shared model: attention weights and per-layer wall time.

The model is loaded once with ``attn_implementation="gptviz"``, an attention function
registered with transformers' ``AttentionInterface``. When no recorder is active in the
calling context it runs plain SDPA (full speed, nothing kept); inside ``recording(...)``
it computes eager attention and hands the weights to *that call's* recorder. The
recorder lives in a ``ContextVar``, so threads (Streamlit sessions) never see each
other's recordings, and nothing is ever stored on the shared model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTN_IMPLEMENTATION = "gptviz"


class Recorder:
    """What one forward pass produced: attention weights and wall time, per layer."""

    def __init__(self, n_layers: int, keep_attention: bool = True, sync_cuda: bool = False):
        self.keep_attention = keep_attention  # False: time layers only, attention via SDPA
        self.sync_cuda = sync_cuda  # wait for the GPU before reading the clock
        self.attention: list[torch.Tensor | None] = [None] * n_layers  # each (batch, heads, q, k)
        self.layer_seconds = [0.0] * n_layers
        self.seconds = 0.0  # wall time of the whole forward pass
        self._layer_started = [0.0] * n_layers

    def clock(self) -> float:
        if self.sync_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


_ACTIVE: ContextVar[Recorder | None] = ContextVar("gptviz_recorder", default=None)


def gptviz_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """GPT-2's eager attention, plus handing the weights to the active recorder."""
    recorder = _ACTIVE.get()
    if recorder is None or not recorder.keep_attention:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (batch, heads, q, k)
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    weights = torch.softmax(scores, dim=-1)  # (batch, heads, q, k)
    recorder.attention[module.layer_idx] = weights
    output = torch.matmul(weights, value).transpose(1, 2)  # (batch, q, heads, head_dim)
    return output, weights


# The mask function must be registered under the same name, or GPT-2 would build no causal
# mask at all for this implementation and silently attend to the future.
AttentionInterface.register(ATTN_IMPLEMENTATION, gptviz_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


def _layer_start(recorder: Recorder, layer: int, *_):
    if _ACTIVE.get() is recorder:  # another session's forward passes through these hooks too
        recorder._layer_started[layer] = recorder.clock()


def _layer_end(recorder: Recorder, layer: int, *_):
    if _ACTIVE.get() is recorder:
        recorder.layer_seconds[layer] = recorder.clock() - recorder._layer_started[layer]


@contextmanager
def recording(model, keep_attention: bool = True) -> Iterator[Recorder]:
    """Record one forward pass of ``model`` in this context; hooks are always removed."""
    blocks = model.transformer.h
    recorder = Recorder(len(blocks), keep_attention, sync_cuda=model.device.type == "cuda")
    token = _ACTIVE.set(recorder)
    handles = []
    try:
        for i, block in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(partial(_layer_start, recorder, i)))
            handles.append(block.register_forward_hook(partial(_layer_end, recorder, i)))
        start = recorder.clock()
        yield recorder
        recorder.seconds = recorder.clock() - start
    finally:
        for handle in handles:
            handle.remove()
        _ACTIVE.reset(token)
