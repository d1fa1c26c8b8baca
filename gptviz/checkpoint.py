"""A GPT-2 checkpoint's files, checked before and after transformers loads them.

Everything that would load as a silently random or broken model is refused here with a message that
names the problem and the fix: missing or unexpected weights, unreadable safetensors headers, a
config.json that disagrees with the weights or that no GPT-2 can run, a tokenizer that encodes nothing.
Nothing is unpickled: only safetensors headers are read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors import SafetensorError, safe_open

from gptviz.registry import BUNDLED, HUB_MODELS

WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
SUPPORTED = (f"'{BUNDLED}', a Hub id ({', '.join(HUB_MODELS)}), or a local directory holding a "
             "GPT-2-family checkpoint in Hugging Face format (config.json + model.safetensors)")


class ModelLoadError(ValueError):
    """A model source that cannot be loaded; the message says what is supported."""


def check_local_dir(path: Path) -> None:
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


def resolve(source: str) -> Path:
    """The real directory behind ``source``; a symlink loop is a clear error, not a RuntimeError."""
    try:
        return Path(source).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError("Symlink loop from ...")
        raise ModelLoadError(f"{source} is a symbolic link loop (it leads back to itself), not a model "
                             f"directory: point it at a real directory. Use {SUPPORTED}.") from exc


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
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


def check_config_type(path: Path) -> None:
    """A local config.json must be a JSON object for model_type 'gpt2' (checked before transformers reads it)."""
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path / 'config.json'} is not valid JSON ({exc}): re-save it with "
                             "config.save_pretrained(...).") from exc
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type != "gpt2":
        raise ModelLoadError(_not_gpt2(model_type))


def check_config(config, where, shapes: dict[str, tuple[int, ...]]) -> None:
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


def check_weights(info: dict, model, where) -> None:
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


def check_tokenizer(tokenizer, config, where) -> None:
    """A tokenizer that encodes nothing, or ids past the embedding table, is refused."""
    if len(tokenizer) < 2 or not tokenizer("a")["input_ids"]:  # transformers' silent empty tokenizer
        raise ModelLoadError(f"{where} has no usable tokenizer (it encodes nothing): save one beside the weights "
                             "with tokenizer.save_pretrained(...) (tokenizer.json, or vocab.json + merges.txt).")
    if len(tokenizer) > config.vocab_size:
        raise ModelLoadError(f"the tokenizer in {where} has {len(tokenizer)} tokens but the model's vocabulary "
                             f"holds {config.vocab_size}: its ids would fall off the embedding table. Use the "
                             "tokenizer the model was trained with.")
