"""Load a GPT-2-family causal LM + tokenizer: a Hub id, a local directory, or the bundled model.

safetensors only, never remote code. A Hub id is fetched by gptviz.hub (huggingface_hub's own
requests: HF_ENDPOINT, proxies and HF_HUB_OFFLINE apply); one that cannot be fetched fails within a
few seconds (not after the Hub client's retries) with a reason the app can show, and
``load(..., fallback_to_bundled=True)`` then returns the bundled model with that reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerBase

from gptviz import hub
from gptviz.checkpoint import (
    SUPPORTED,
    WEIGHTS,
    WEIGHTS_INDEX,
    ModelLoadError,
    check_config,
    check_config_type,
    check_local_dir,
    check_tokenizer,
    check_weights,
    resolve,
    weight_shapes,
)
from gptviz.instrument import ATTN_IMPLEMENTATION
from gptviz.registry import BUNDLED, BUNDLED_DIR, BUNDLED_NAME, HUB_MODELS, canonical_hub_id
from gptviz.settings import DTYPES

__all__ = ["BUNDLED", "BUNDLED_DIR", "HUB_MODELS", "WEIGHTS", "WEIGHTS_INDEX", "LoadedModel", "ModelLoadError",
           "canonical_hub_id", "load", "loaded_model", "random_model", "source_of"]


@dataclass
class LoadedModel:
    model: GPT2LMHeadModel  # eval mode, attn_implementation="gptviz"; shared, never mutated per call
    tokenizer: PreTrainedTokenizerBase
    source: str  # what was asked for: "bundled", a Hub id, or a directory
    name: str  # what was actually loaded (differs from source after a fallback)
    dtype: str  # "float32" | "float64"
    notice: str | None = None  # why a fallback happened, for the UI to show
    info: dict = field(default_factory=dict)
    threads: int | None = None  # torch threads its decodes use on this server (serve.fastest_threads); None: as set


def _load(where: Path, dtype: str) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerBase]:
    """A local directory (the bundled model, a Hub cache snapshot, a user's), checked before and after loading."""
    check_config_type(where)  # read what it holds before transformers does
    shapes = weight_shapes(where)
    config = AutoConfig.from_pretrained(where, local_files_only=True, trust_remote_code=False)
    check_config(config, where, shapes)
    model, info = GPT2LMHeadModel.from_pretrained(
        where, config=config, dtype=DTYPES[dtype], use_safetensors=True, trust_remote_code=False,
        local_files_only=True, attn_implementation=ATTN_IMPLEMENTATION,
        output_loading_info=True, ignore_mismatched_sizes=True,  # mismatches are refused below, with names
    )
    check_weights(info, model, where)
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, trust_remote_code=False)
    check_tokenizer(tokenizer, config, where)
    return model.eval(), tokenizer


def load(source: str = BUNDLED, dtype: str = "float32", *, fallback_to_bundled: bool = False,
         hub_timeout: float = 3.0, allow_local: bool = True, on_progress: hub.Progress | None = None) -> LoadedModel:
    """Load ``source`` ('bundled', a Hub id, or a local directory) in ``dtype``.

    Raises ModelLoadError with a message that says the fix. With ``fallback_to_bundled``,
    a Hub model that cannot be fetched returns the bundled model and a ``notice`` instead.
    A Hub download calls ``on_progress(done_bytes, total_bytes, filename)`` as bytes arrive
    (from the download's thread; total_bytes counts only what is being downloaded).
    """
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    source = (source or "").strip()
    if not source:
        raise ModelLoadError(f"no model given. Use {SUPPORTED}.")
    try:
        if source == BUNDLED:
            return _load_bundled(dtype)
        repo_id = canonical_hub_id(source)
        if repo_id is not None:
            return _load_hub(source, repo_id, dtype, fallback_to_bundled, hub_timeout, on_progress)
        return _load_local(source, dtype, allow_local)
    except ModelLoadError:
        raise
    except StrictDataclassError as exc:  # transformers' own config validation (e.g. a string where an int goes)
        raise ModelLoadError(f"config.json of '{source}' is invalid ({' '.join(str(exc).split())}): fix "
                             "config.json to match the weights.") from exc
    except (OSError, ValueError, KeyError, SafetensorError) as exc:  # corrupt or unreadable checkpoint files
        raise ModelLoadError(f"could not load '{source}': {exc.__class__.__name__}: {exc}".split("\n")[0]) from exc


def _load_bundled(dtype: str) -> LoadedModel:
    if not (BUNDLED_DIR / "config.json").is_file():
        raise ModelLoadError(f"the bundled model is missing from {BUNDLED_DIR}; "
                             "run `python scripts/train_bundled.py` to create it.")
    model, tokenizer = _load(BUNDLED_DIR, dtype)
    return loaded_model(model, tokenizer, BUNDLED, BUNDLED_NAME, dtype)


def _load_hub(source: str, repo_id: str, dtype: str, fallback_to_bundled: bool, hub_timeout: float,
              on_progress: hub.Progress | None) -> LoadedModel:
    """From the local Hub cache, else downloaded if the Hub answers within ``hub_timeout`` s, else the fallback."""
    folder = None
    try:
        folder = hub.fetch(repo_id, hub_timeout, on_progress)
        model, tokenizer = _load(folder, dtype)
    except hub.HubError as exc:
        reason = str(exc)
    except (ModelLoadError, OSError, ValueError, KeyError, SafetensorError) as exc:  # whole, but no usable GPT-2
        why = str(exc).split("\n")[0].rstrip(".").replace(f"{folder}/", "")  # the folder is named once, below
        reason = (f"the copy in the Hugging Face cache ({folder}) cannot be used: {why}. It came "
                  f"from {hub.endpoint()}: delete it (`hf cache rm model/{repo_id}`) and retry, or check that "
                  "mirror (HF_ENDPOINT)")
    else:
        return loaded_model(model, tokenizer, source, repo_id, dtype)
    message = f"could not load '{source}' from the Hugging Face Hub: {reason}."
    if not fallback_to_bundled:
        raise ModelLoadError(message + f" Use '{BUNDLED}' offline.")
    fallback = _load_bundled(dtype)
    fallback.source, fallback.notice = source, message + " Showing the bundled offline model instead."
    return fallback


def _load_local(source: str, dtype: str, allow_local: bool) -> LoadedModel:
    looks_like_path = os.sep in source or source.startswith((".", "~")) or Path(source).exists()
    if not looks_like_path:
        raise ModelLoadError(f"unknown model '{source}'. Use {SUPPORTED}.")
    if not allow_local:
        raise ModelLoadError("local model directories are disabled on this server; "
                             f"choose '{BUNDLED}' or one of {', '.join(HUB_MODELS)}.")
    path = resolve(source)
    check_local_dir(path)
    model, tokenizer = _load(path, dtype)
    return loaded_model(model, tokenizer, source, str(path), dtype)


def source_of(name: str) -> str:
    """The source that loads the model a ``LoadedModel.name`` names: the bundled model's name is 'bundled';
    a Hub id or a resolved directory is its own source. (A run keeps the name; this finds that model again.)"""
    return BUNDLED if name == BUNDLED_NAME else name


def loaded_model(model, tokenizer, source: str, name: str, dtype: str) -> LoadedModel:
    """Wrap a model and tokenizer with what the app shows about them (``info``)."""
    c = model.config
    info = {
        "layers": c.n_layer, "heads": c.n_head, "d_model": c.n_embd, "head_dim": c.n_embd // c.n_head,
        "vocab": c.vocab_size, "context": c.n_positions,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tied_embeddings": model.lm_head.weight is model.transformer.wte.weight,
    }
    return LoadedModel(model, tokenizer, source, name, dtype, info=info)


def random_model(layers: int = 2, heads: int = 2, d_model: int = 32, vocab: int = 64, context: int = 64,
                 seed: int = 0, dtype: str = "float32") -> GPT2LMHeadModel:
    """A tiny randomly initialised GPT-2 for tests and benchmarks (timing depends only on shape)."""
    from transformers import GPT2Config

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=layers, n_head=heads, n_embd=d_model, vocab_size=vocab, n_positions=context,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).to(DTYPES[dtype]).eval()
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model
