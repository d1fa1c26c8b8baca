"""Load a GPT-2-family causal LM + tokenizer: a Hub id, a local directory, or the bundled model.

safetensors only, never remote code. A Hub id that cannot be reached fails within a few
seconds (not after the Hub client's retries) with a reason the app can show, and
``load(..., fallback_to_bundled=True)`` then returns the bundled model with that reason.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerBase

from gptviz.instrument import ATTN_IMPLEMENTATION
from gptviz.registry import BUNDLED, BUNDLED_DIR, BUNDLED_NAME, HUB_MODELS, canonical_hub_id
from gptviz.settings import DTYPES

__all__ = ["BUNDLED", "BUNDLED_DIR", "HUB_MODELS", "LoadedModel", "ModelLoadError", "canonical_hub_id", "load",
           "loaded_model", "random_model"]

HUB_HOST = "huggingface.co"
WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
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
    if not (path / WEIGHTS).is_file() and not (path / WEIGHTS_INDEX).is_file():
        raise ModelLoadError(f"{path} has no {WEIGHTS} (nor a sharded {WEIGHTS_INDEX}): name the weights file "
                             f"{WEIGHTS}, as save_pretrained does.")


def _resolve(source: str) -> Path:
    """The real directory behind ``source``; a symlink loop is a clear error, not a RuntimeError."""
    try:
        return Path(source).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError("Symlink loop from ...")
        raise ModelLoadError(f"{source} is a symbolic link loop (it leads back to itself), not a model "
                             f"directory: point it at a real directory. Use {SUPPORTED}.") from exc


def _weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a local checkpoint, read from the safetensors headers only.

    Opening each file's header catches random bytes, truncation and absurd header lengths
    before transformers does (its SafetensorError names no file); nothing is unpickled.
    """
    files = [path / WEIGHTS]
    if not files[0].is_file():
        try:
            shards = json.loads((path / WEIGHTS_INDEX).read_text())["weight_map"].values()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"{path / WEIGHTS_INDEX} is not a valid safetensors index ({exc}): re-save the "
                                 "model with save_pretrained(..., safe_serialization=True).") from exc
        files = [path / name for name in sorted(set(shards))]
    shapes = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                shapes.update({key.removeprefix("transformer."): tuple(f.get_slice(key).get_shape())
                               for key in f.keys()})
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{file} cannot be read as safetensors ({exc}): it is missing, corrupt or truncated. "
                                 "Re-save the model with save_pretrained(..., safe_serialization=True).") from exc
    return shapes


# The config fields gptviz relies on and the least each may be.
CONFIG_MINIMUM = {"n_layer": 1, "n_head": 1, "n_embd": 1, "vocab_size": 1,
                  "n_positions": 1}  # one prompt token: the last chosen token is never fed


def _held(shapes: dict[str, tuple[int, ...]], name: str) -> tuple[int, str] | None:
    """What the weights say a config field is, and the evidence; None where they cannot tell."""
    dims = {"n_embd": ("wte.weight", 1), "vocab_size": ("wte.weight", 0), "n_positions": ("wpe.weight", 0)}
    if name == "n_layer":
        layers = {m[1] for key in shapes if (m := re.match(r"h\.(\d+)\.(ln_1|attn|ln_2|mlp)\.", key))}
        return (len(layers), f"blocks {', '.join(f'h.{i}' for i in sorted(layers, key=int))}") if layers else None
    if name in dims and len(shapes.get(dims[name][0], ())) > dims[name][1]:
        tensor, dim = dims[name]
        return shapes[tensor][dim], f"{tensor} is {list(shapes[tensor])}"
    return None


def _not_gpt2(model_type) -> str:
    if model_type is None:
        return ("config.json names no model_type (a GPT-2's says \"model_type\": \"gpt2\"), so it is not a "
                f"Hugging Face GPT-2 checkpoint. Use {SUPPORTED}.")
    return (f"{model_type!r} models are not supported: gptviz instruments the GPT-2 architecture only "
            f"(model_type 'gpt2'). Use {SUPPORTED}.")


def _config_type(path: Path) -> None:
    """A local config.json must be a JSON object for model_type 'gpt2' (checked before transformers reads it)."""
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path / 'config.json'} is not valid JSON ({exc}): re-save it with "
                             "config.save_pretrained(...).") from exc
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type != "gpt2":
        raise ModelLoadError(_not_gpt2(model_type))


def _check_config(config, where, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse configs no GPT-2 can run, saying what the weights hold where they tell."""
    if config.model_type != "gpt2":
        raise ModelLoadError(_not_gpt2(config.model_type))
    for name, least in CONFIG_MINIMUM.items():
        value, held = getattr(config, name, None), _held(shapes, name)
        if held is not None and held[0] != value:
            raise ModelLoadError(f"config.json in {where} does not match its weights: it says {name}={value!r} but "
                                 f"the weights hold {held[0]} ({held[1]}). Fix config.json to match the weights.")
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ModelLoadError(f"config.json in {where} says {name}={value!r}, but a GPT-2 needs a whole number "
                                 f"≥ {least} there: this checkpoint cannot run. Use a model with {name} ≥ {least}.")
    if config.n_embd % config.n_head:
        raise ModelLoadError(f"config.json in {where} says n_embd={config.n_embd} and n_head={config.n_head}, but "
                             "n_embd must be a multiple of n_head: fix config.json to match the weights.")


def _names(keys, limit: int = 4) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _check_weights(info: dict, model: GPT2LMHeadModel, where) -> None:
    """Refuse a load that would fill any weight with random values, or leave a tensor unused."""
    missing, unexpected, mismatched = info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]
    if mismatched:
        name, found, wanted = sorted(mismatched)[0]
        raise ModelLoadError(f"config.json in {where} does not match its weights: {name} is {list(found)} in the "
                             f"weights but the config asks for {list(wanted)} ({len(mismatched)} tensor(s) differ). "
                             "Fix config.json (n_positions, n_embd, vocab_size, ...) to match the weights.")
    needed = set(model.state_dict()) - {"lm_head.weight"}  # the output layer is tied to the embedding
    if missing and not needed - missing:
        found = f"only {len(unexpected)} unknown tensor(s): {_names(unexpected)}" if unexpected else "no tensors"
        raise ModelLoadError(f"{where} holds no GPT-2 weights (none of the {len(needed)} tensors GPT-2 needs; it "
                             f"holds {found}). Loading it would give a randomly initialised model: save a real "
                             "model there with save_pretrained(..., safe_serialization=True).")
    if missing:
        raise ModelLoadError(f"{where} is missing {len(missing)} of the model's weights ({_names(missing)}): they "
                             "would be random. Save the complete model, or fix config.json if it names more "
                             "layers than the weights hold.")
    if unexpected:
        raise ModelLoadError(f"{where} holds {len(unexpected)} tensor(s) this GPT-2 has no place for "
                             f"({_names(unexpected)}): config.json does not match the weights (fewer layers?). "
                             "Fix config.json to match them.")


def _load(where: str | Path, dtype: str, local_only: bool) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerBase]:
    shapes = {}
    if isinstance(where, Path):  # a local directory: read what it holds before transformers does
        _config_type(where)
        shapes = _weight_shapes(where)
    config = AutoConfig.from_pretrained(where, local_files_only=local_only, trust_remote_code=False)
    _check_config(config, where, shapes)
    model, info = GPT2LMHeadModel.from_pretrained(
        where, config=config, dtype=DTYPES[dtype], use_safetensors=True, trust_remote_code=False,
        local_files_only=local_only, attn_implementation=ATTN_IMPLEMENTATION,
        output_loading_info=True, ignore_mismatched_sizes=True,  # mismatches are refused below, with names
    )
    _check_weights(info, model, where)
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only, trust_remote_code=False)
    if len(tokenizer) < 2 or not tokenizer("a")["input_ids"]:  # transformers' silent empty tokenizer
        raise ModelLoadError(f"{where} has no usable tokenizer (it encodes nothing): save one beside the weights "
                             "with tokenizer.save_pretrained(...) (tokenizer.json, or vocab.json + merges.txt).")
    if len(tokenizer) > config.vocab_size:
        raise ModelLoadError(f"the tokenizer in {where} has {len(tokenizer)} tokens but the model's vocabulary "
                             f"holds {config.vocab_size}: its ids would fall off the embedding table. Use the "
                             "tokenizer the model was trained with.")
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
            return loaded_model(model, tokenizer, source, BUNDLED_NAME, dtype)
        repo_id = canonical_hub_id(source)
        if repo_id is not None:
            if _in_local_hub_cache(repo_id):
                model, tokenizer = _load(repo_id, dtype, local_only=True)
                return loaded_model(model, tokenizer, source, repo_id, dtype)
            reason = hub_reachable(hub_timeout)
            if reason is None:
                try:
                    model, tokenizer = _load(repo_id, dtype, local_only=False)
                    return loaded_model(model, tokenizer, source, repo_id, dtype)
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
        path = _resolve(source)
        _check_local_dir(path)
        model, tokenizer = _load(path, dtype, local_only=True)
        return loaded_model(model, tokenizer, source, str(path), dtype)
    except ModelLoadError:
        raise
    except StrictDataclassError as exc:  # transformers' own config validation (e.g. a string where an int goes)
        raise ModelLoadError(f"config.json of '{source}' is invalid ({' '.join(str(exc).split())}): fix "
                             "config.json to match the weights.") from exc
    except (OSError, ValueError, KeyError, SafetensorError) as exc:  # corrupt or unreadable checkpoint files
        raise ModelLoadError(f"could not load '{source}': {exc.__class__.__name__}: {exc}".split("\n")[0]) from exc


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
