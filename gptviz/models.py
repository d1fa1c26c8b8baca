"""Load a GPT-2-family causal LM + tokenizer: a Hub id, a local directory, or the bundled model.

safetensors only, never remote code. A Hub id that cannot be reached fails within a few
seconds (not after the Hub client's retries) with a reason the app can show, and
``load(..., fallback_to_bundled=True)`` then returns the bundled model with that reason.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerBase

from gptviz.instrument import ATTN_IMPLEMENTATION

BUNDLED = "bundled"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "bundled-gpt2"
HUB_MODELS = ("gpt2", "distilgpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
HUB_HOST = "huggingface.co"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SUPPORTED = (f"'{BUNDLED}', a Hub id ({', '.join(HUB_MODELS)}), or a local directory holding a "
             "GPT-2-family checkpoint in Hugging Face format (config.json + model.safetensors)")


class ModelLoadError(ValueError):
    """A model source that cannot be loaded; the message says what is supported."""


@dataclass
class LoadedModel:
    model: GPT2LMHeadModel  # eval mode, attn_implementation="gptviz"; shared, never mutated per call
    tokenizer: PreTrainedTokenizerBase
    source: str  # what was asked for: "bundled", a Hub id, or a directory
    name: str  # what was actually loaded (differs from source after a fallback)
    dtype: str  # "float32" | "float64"
    notice: str | None = None  # why a fallback happened, for the UI to show
    info: dict = field(default_factory=dict)


def canonical_hub_id(source: str) -> str | None:
    """'gpt2' or 'openai-community/gpt2' -> the Hub repo id; None if not a known GPT-2 id."""
    short = source.removeprefix("openai-community/").removeprefix("distilbert/")
    if short not in HUB_MODELS:
        return None
    return f"distilbert/{short}" if short == "distilgpt2" else f"openai-community/{short}"


def hub_reachable(timeout: float = 3.0) -> str | None:
    """None if the Hub answers a TCP connect within ``timeout`` s, else the reason why not."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return None
    except OSError as exc:  # DNS failure, refused, or timed out
        return f"cannot reach {HUB_HOST} ({exc.__class__.__name__}: {exc})"


def _in_local_hub_cache(repo_id: str) -> bool:
    try:
        AutoConfig.from_pretrained(repo_id, local_files_only=True)
        return True
    except OSError:
        return False


def _check_local_dir(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"no such directory: {path} (and not a known GPT-2 Hub id). Use {SUPPORTED}.")
    if not path.is_dir():
        raise ModelLoadError(f"{path} is a file, not a model directory. Use {SUPPORTED}.")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json, so it is not a Hugging Face model directory. "
                             f"Use {SUPPORTED}.")
    if not any(path.glob("*.safetensors")):
        raise ModelLoadError(f"{path} has no *.safetensors weights (pickled .bin weights are refused "
                             "for safety). Convert them with save_pretrained(..., safe_serialization=True).")


def _load(where: str | Path, dtype: str, local_only: bool) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerBase]:
    config = AutoConfig.from_pretrained(where, local_files_only=local_only, trust_remote_code=False)
    if config.model_type != "gpt2":
        raise ModelLoadError(f"'{config.model_type}' models are not supported: gptviz instruments the "
                             f"GPT-2 architecture only (model_type 'gpt2'). Use {SUPPORTED}.")
    model = GPT2LMHeadModel.from_pretrained(
        where, dtype=DTYPES[dtype], use_safetensors=True, trust_remote_code=False,
        local_files_only=local_only, attn_implementation=ATTN_IMPLEMENTATION,
    )
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only, trust_remote_code=False)
    return model.eval(), tokenizer


def load(source: str = BUNDLED, dtype: str = "float32", *, fallback_to_bundled: bool = False,
         hub_timeout: float = 3.0, allow_local: bool = True) -> LoadedModel:
    """Load ``source`` ('bundled', a Hub id, or a local directory) in ``dtype``.

    Raises ModelLoadError with a message that says the fix. With ``fallback_to_bundled``,
    a Hub model that cannot be fetched returns the bundled model and a ``notice`` instead.
    """
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    source = (source or "").strip()
    if not source:
        raise ModelLoadError(f"no model given. Use {SUPPORTED}.")
    try:
        if source == BUNDLED:
            if not (BUNDLED_DIR / "config.json").is_file():
                raise ModelLoadError(f"the bundled model is missing from {BUNDLED_DIR}; "
                                     "run `python scripts/train_bundled.py` to create it.")
            model, tokenizer = _load(BUNDLED_DIR, dtype, local_only=True)
            return _loaded(model, tokenizer, source, "bundled Shakespeare GPT-2", dtype)
        repo_id = canonical_hub_id(source)
        if repo_id is not None:
            if _in_local_hub_cache(repo_id):
                model, tokenizer = _load(repo_id, dtype, local_only=True)
                return _loaded(model, tokenizer, source, repo_id, dtype)
            reason = hub_reachable(hub_timeout)
            if reason is None:
                try:
                    model, tokenizer = _load(repo_id, dtype, local_only=False)
                    return _loaded(model, tokenizer, source, repo_id, dtype)
                except OSError as exc:
                    reason = f"download failed ({exc.__class__.__name__})"
            message = f"could not load '{source}' from the Hugging Face Hub: {reason}."
            if fallback_to_bundled:
                fallback = load(BUNDLED, dtype)
                fallback.source, fallback.notice = source, message + " Showing the bundled offline model instead."
                return fallback
            raise ModelLoadError(message + f" Use '{BUNDLED}' offline.")
        looks_like_path = os.sep in source or source.startswith((".", "~")) or Path(source).exists()
        if not looks_like_path:
            raise ModelLoadError(f"unknown model '{source}'. Use {SUPPORTED}.")
        if not allow_local:
            raise ModelLoadError("local model directories are disabled on this server; "
                                 f"choose '{BUNDLED}' or one of {', '.join(HUB_MODELS)}.")
        path = Path(source).expanduser().resolve()
        _check_local_dir(path)
        model, tokenizer = _load(path, dtype, local_only=True)
        return _loaded(model, tokenizer, source, str(path), dtype)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError) as exc:  # corrupt or unreadable checkpoint files
        raise ModelLoadError(f"could not load '{source}': {exc.__class__.__name__}: {exc}".split("\n")[0]) from exc


def _loaded(model, tokenizer, source: str, name: str, dtype: str) -> LoadedModel:
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
