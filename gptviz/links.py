"""A share link's settings, checked once before the app's widgets read them.

The app's sidebar is bound to the address bar, so a link sets the model, the prompt and the
decoding knobs. Streamlit drops a value its widget cannot take without a word; ``check``
decides instead, with the same rules a run gets (``settings.DecodeSettings.validate``,
``hosting.Policy``), and says in one line what it refused or clamped, so a student whose
link shows something else learns why.

>>> from gptviz.hosting import Policy
>>> result = check({"new": "100000", "dtype": "float16"}, Policy(hosted=True, max_new_tokens=128), ["bundled"])
>>> result.params
{'new': '128'}
>>> print(*result.notes, sep="\\n")
Ignored dtype='float16' from the link: dtype must be one of float32, float64.
Clamped new=100000 from the link to 128: this server allows at most 128 new tokens per run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gptviz.hosting import Policy
from gptviz.models import ModelLoadError
from gptviz.settings import CACHES, DTYPES, SAMPLINGS, DecodeError, DecodeSettings, check_prompt

# URL key -> (DecodeSettings field, Python type) for the sidebar's number fields
NUMBERS = {"new": ("max_new_tokens", int), "temperature": ("temperature", float), "top_k": ("top_k", int),
           "top_p": ("top_p", float), "seed": ("seed", int)}
CHOICES = {"sampling": SAMPLINGS, "dtype": tuple(DTYPES), "cache": CACHES}  # URL key -> the values it may take


@dataclass(frozen=True)
class LinkCheck:
    params: dict[str, str]  # the link to use: refused values removed, clamped ones replaced, the rest as given
    notes: tuple[str, ...]  # one line per value refused or clamped, for the student


def check(params: Mapping[str, str], policy: Policy, models: Sequence[str], local_choice: str = "") -> LinkCheck:
    """Keep, clamp or refuse each sidebar value of ``params`` (a link's query); other keys pass unchanged.

    ``models`` are the sidebar's model choices on this server; ``local_choice`` is the one that
    opens a directory field (absent where the policy refuses local directories).
    """
    kept, notes = dict(params), []

    def refuse(key: str, reason: str) -> None:
        notes.append(f"Ignored {key}={params[key]!r} from the link: {reason}")
        kept.pop(key)

    if "model" in params and params["model"] not in models:
        refuse("model", _model_reason(params["model"], policy, models, local_choice))
    if "dir" in params and not policy.allow_local:
        refuse("dir", "local model directories are disabled on this server.")
    if "prompt" in params:
        try:
            check_prompt(params["prompt"])
        except DecodeError as exc:
            refuse("prompt", str(exc))
    for key, choices in CHOICES.items():
        if key in params and params[key] not in choices:
            refuse(key, f"{key} must be one of {', '.join(choices)}.")
    for key, (field, kind) in NUMBERS.items():
        if key not in params:
            continue
        value = _number(params[key], kind)
        if value is None:
            refuse(key, f"{params[key]!r} is not a {'whole ' if kind is int else ''}number.")
        elif key == "new" and value > policy.max_new_tokens:  # a stale link from a roomier server: its cap
            kept[key] = str(policy.max_new_tokens)
            notes.append(f"Clamped new={params[key]} from the link to {policy.max_new_tokens}: this server allows "
                         f"at most {policy.max_new_tokens} new tokens per run.")
        else:
            try:  # sampling="sample": every knob is checked, as it would be the moment sampling is chosen
                DecodeSettings(sampling="sample", **{field: value}).validate(policy.limits)
            except DecodeError as exc:
                refuse(key, str(exc))
    return LinkCheck(kept, tuple(notes))


def _number(text: str, kind: type) -> int | float | None:
    try:
        return kind(text.strip())
    except (ValueError, AttributeError):
        return None


def _model_reason(model: str, policy: Policy, models: Sequence[str], local_choice: str) -> str:
    looks_local = model == local_choice or "/" in model or model.startswith((".", "~"))
    if looks_local and not policy.allow_local:
        return f"local model directories are disabled on this server; it offers {', '.join(models)}."
    try:
        policy.check_source(model)
    except ModelLoadError as exc:
        return str(exc)
    return (f"it is not one of this app's models ({', '.join(models)}); to load a checkpoint from a directory, "
            "choose the local directory entry and give its path.")
