"""Limits for a shared, hosted deployment, read from the environment.

GPTVIZ_HOSTED=1 turns hosted mode on: only allow-listed models (GPTVIZ_ALLOWED_MODELS,
comma-separated, default registry.HOSTED_DEFAULT: ``bundled,gpt2,distilgpt2``), no local
paths, and tighter caps on new tokens and on the attention memory one run may hold (checked by
``DecodeSettings.validate(policy.limits)``). Remote code and pickled weights are refused
everywhere, hosted or not (see models.load).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass

from gptviz.models import ModelLoadError
from gptviz.registry import BUNDLED, HOSTED_DEFAULT, HUB_MODELS, canonical_hub_id
from gptviz.settings import APP_MAX_NEW_TOKENS, MEMORY_BUDGET, Limits

HOSTED_MAX_NEW_TOKENS = 128  # GPTVIZ_MAX_NEW_TOKENS default
HOSTED_MEMORY_BUDGET_MB = 128  # GPTVIZ_MEMORY_BUDGET_MB default
HOSTED, ALLOWED_MODELS = "GPTVIZ_HOSTED", "GPTVIZ_ALLOWED_MODELS"
MAX_NEW_TOKENS, MEMORY_BUDGET_MB = "GPTVIZ_MAX_NEW_TOKENS", "GPTVIZ_MEMORY_BUDGET_MB"
REDIS_URL = "GPTVIZ_REDIS_URL"  # redis://host:port/db: every replica shares one queue and store (gptviz/serve/redis.py)
FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False,
         "": False}


class HostingConfigError(ValueError):
    """A GPTVIZ_* environment variable the server cannot use; one line that names it and the fix."""


KNOWN = (HOSTED, ALLOWED_MODELS, MAX_NEW_TOKENS, MEMORY_BUDGET_MB, REDIS_URL)  # every GPTVIZ_* name the app reads
CAPS = (ALLOWED_MODELS, MAX_NEW_TOKENS, MEMORY_BUDGET_MB)  # apply in hosted mode only


def _check_names(env) -> None:
    """Any other GPTVIZ_* name is refused: a misspelt one (GPTVIZ_HOSTING=1) would run the server unhosted."""
    for name in sorted(env):
        if name.upper().startswith("GPTVIZ") and name not in KNOWN:
            close = difflib.get_close_matches(name.upper(), KNOWN, n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}? " if close else ""
            raise HostingConfigError(f"{name} is not a gptviz setting: {hint}the known ones are {', '.join(KNOWN)}. "
                                     "Rename or unset it in the server's environment.")


def _check_caps_need_hosting(env) -> None:
    """A cap set without hosted mode would be ignored without a word: say so."""
    caps = [name for name in CAPS if name in env]
    if caps:
        raise HostingConfigError(f"{', '.join(caps)} {'applies' if len(caps) == 1 else 'apply'} only in hosted "
                                 f"mode: set {HOSTED}=1 as well, or unset {'it' if len(caps) == 1 else 'them'}.")


def _flag(env, name: str) -> bool:
    text = env.get(name, "").strip().lower()
    if text not in FLAGS:
        raise HostingConfigError(f"{name}={env[name]!r} is neither on (1, true, yes) nor off (0, false, no): fix it "
                                 "in the server's environment.")
    return FLAGS[text]


def _number(env, name: str, kind: type, default: float) -> float:
    """A positive whole (``int``) or real (``float``) number from the environment, or ``default`` if unset."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < (1 if kind is int else 1e-9):
        what = "a whole number ≥ 1" if kind is int else "a number > 0"
        raise HostingConfigError(f"{name}={env[name]!r} is not {what}: fix it in the server's environment "
                                 f"(unset, it is {default}).")
    return value


def _allowed(env) -> tuple[str, ...]:
    text = env.get(ALLOWED_MODELS, ",".join(HOSTED_DEFAULT))
    allowed = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in allowed if s != BUNDLED and canonical_hub_id(s) is None]
    if unknown or not allowed:
        raise HostingConfigError(f"{ALLOWED_MODELS}={text!r} must list models from: {BUNDLED}, "
                                 f"{', '.join(HUB_MODELS)} (comma-separated); "
                                 f"{'unknown: ' + ', '.join(unknown) if unknown else 'it lists none'}.")
    return allowed


@dataclass(frozen=True)
class Policy:
    hosted: bool = False  # a server shared by many users
    allowed_models: tuple[str, ...] = ()  # hosted: the only sources accepted (empty = any)
    allow_local: bool = True  # local model directories
    max_new_tokens: int = APP_MAX_NEW_TOKENS  # hard cap per run, on top of the model's context
    memory_budget: int = MEMORY_BUDGET  # bytes of attention one run may hold (gptviz.cost.run_memory_bytes)

    @classmethod
    def from_env(cls, env: dict | None = None) -> Policy:
        """The policy the environment asks for; an operator's typo raises HostingConfigError naming the variable."""
        env = os.environ if env is None else env
        _check_names(env)
        if not _flag(env, HOSTED):
            _check_caps_need_hosting(env)
            return cls()
        return cls(hosted=True, allowed_models=_allowed(env), allow_local=False,
                   max_new_tokens=_number(env, MAX_NEW_TOKENS, int, HOSTED_MAX_NEW_TOKENS),
                   memory_budget=int(_number(env, MEMORY_BUDGET_MB, float, HOSTED_MEMORY_BUDGET_MB) * 2**20))

    @property
    def limits(self) -> Limits:
        """What one run may use here: pass to DecodeSettings.validate and decoding.run."""
        return Limits(max_new_tokens=self.max_new_tokens, memory_budget=self.memory_budget)

    def check_source(self, source: str) -> None:
        """Raise ModelLoadError unless this server may load ``source``."""
        if not self.allowed_models:
            return
        normalized = source.strip()
        hub = canonical_hub_id(normalized)
        allowed_hub = {canonical_hub_id(a) for a in self.allowed_models} - {None}
        if normalized == BUNDLED and BUNDLED in self.allowed_models:
            return
        if hub is not None and hub in allowed_hub:
            return
        raise ModelLoadError(f"this shared server only offers: {', '.join(self.allowed_models)}. "
                             f"'{source}' is not on its list.")
