"""Limits for a shared, hosted deployment, read from the environment.

GPTVIZ_HOSTED=1 turns hosted mode on: only allow-listed models (GPTVIZ_ALLOWED_MODELS,
comma-separated, default ``bundled,gpt2,distilgpt2``), no local paths, and tighter caps on
new tokens and on the attention memory one run may hold. Remote code and pickled weights
are refused everywhere, hosted or not (see models.load).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gptviz.decoding import DecodeError
from gptviz.models import BUNDLED, ModelLoadError, canonical_hub_id

DEFAULT_ALLOWED = ("bundled", "gpt2", "distilgpt2")


@dataclass(frozen=True)
class Policy:
    hosted: bool = False  # a server shared by many users
    allowed_models: tuple[str, ...] = ()  # hosted: the only sources accepted (empty = any)
    allow_local: bool = True  # local model directories
    max_new_tokens: int = 512  # hard cap per run, on top of the model's context
    memory_budget: int = 512 * 2**20  # bytes of attention one run may hold (gptviz.cost.run_memory_bytes)

    @classmethod
    def from_env(cls, env: dict | None = None) -> Policy:
        env = os.environ if env is None else env
        if env.get("GPTVIZ_HOSTED", "").lower() not in ("1", "true", "yes"):
            return cls()
        allowed = tuple(s.strip() for s in env.get("GPTVIZ_ALLOWED_MODELS", ",".join(DEFAULT_ALLOWED)).split(",")
                        if s.strip())
        return cls(hosted=True, allowed_models=allowed, allow_local=False,
                   max_new_tokens=int(env.get("GPTVIZ_MAX_NEW_TOKENS", 128)),
                   memory_budget=int(float(env.get("GPTVIZ_MEMORY_BUDGET_MB", 128)) * 2**20))

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

    def check_tokens(self, max_new_tokens: int) -> None:
        if max_new_tokens > self.max_new_tokens:
            raise DecodeError(f"this server allows at most {self.max_new_tokens} new tokens per run "
                              f"(asked for {max_new_tokens}).")
