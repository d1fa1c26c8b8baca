"""Choosing the next token so that every mode follows the same sequence.

The cached decoder chooses with a ``Sampler`` (argmax, or one seeded draw after
transformers' own logits processors); the recompute decoders get a ``Replay`` of its choices.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from gptviz.settings import DecodeSettings


class Sampler:
    """Chooses the next token: argmax, or a seeded draw after transformers' logits processors."""

    def __init__(self, settings: DecodeSettings):
        self.greedy = settings.sampling == "greedy"
        self.processors = LogitsProcessorList()
        if not self.greedy:  # same order as model.generate: temperature, top-k, top-p
            if settings.temperature != 1.0:
                self.processors.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_k:
                self.processors.append(TopKLogitsWarper(settings.top_k))
            if settings.top_p < 1.0:
                self.processors.append(TopPLogitsWarper(settings.top_p))
        self.generator = None if self.greedy else torch.Generator().manual_seed(settings.seed)  # greedy: no seed

    def __call__(self, sequence: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.greedy:
            return logits.argmax()
        scores = self.processors(sequence[None], logits[None].float())  # (1, vocab)
        return torch.multinomial(scores.softmax(-1), 1, generator=self.generator)[0, 0]


class Replay:
    """Feeds back a fixed token sequence, so a second mode follows the first one's choices.

    With a ``judge`` (a fresh Sampler with the cached mode's settings: its seeded state at step s
    is the cached sampler's at step s) it also records in ``own`` what this mode's *own* logits
    would have chosen, so "same tokens both ways?" is a check that can fail, not a replay.
    """

    def __init__(self, tokens: list[int], prompt_len: int, judge: Sampler | None = None):
        self.tokens, self.prompt_len, self.judge = tokens, prompt_len, judge
        self.own: list[int] = []  # per step: the judge's choice from this mode's logits

    def __call__(self, sequence: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.judge is not None:
            self.own.append(int(self.judge(sequence, logits)))
        return torch.tensor(self.tokens[len(sequence) - self.prompt_len])
