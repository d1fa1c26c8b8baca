"""How a prompt reaches the model: alone, in a padded batch, or in chunks; then one decode loop for all of them.

A ``Feed`` says what goes in (ids, attention mask, position ids, chunk boundaries) and where its logits are read;
``follow`` decodes it fed the reference's tokens (teacher forcing: every step compares like for like) and,
from the first step where its own choice differs, lets a copy continue on its own choices (the free run).
Until that step the free run would make exactly the calls the forced run made, with the same inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import DynamicCache, GPT2LMHeadModel


@dataclass(frozen=True)
class Feed:
    ids: torch.Tensor  # (batch, n) token ids, pads included
    mask: torch.Tensor | None  # (batch, n) 1 = real token, 0 = pad; None: no mask passed (one unpadded prompt)
    positions: torch.Tensor | None  # (batch, n) position ids; None: transformers' default, column index + cache length
    row: int = 0  # the batch row holding the reference prompt
    read: int = -1  # the column whose logits predict the first new token
    splits: tuple[int, ...] = ()  # columns where the prompt is cut into chunks, each one forward call

    def chunks(self) -> list[tuple[int, int]]:
        bounds = [0, *self.splits, self.ids.shape[1]]
        return list(zip(bounds, bounds[1:], strict=False))


def alone(prompt_ids: list[int], splits: tuple[int, ...] = ()) -> Feed:
    """One prompt, no mask, no position ids: the single-sequence reference (and, with ``splits``, chunked)."""
    return Feed(torch.tensor([prompt_ids]), None, None, splits=splits)


def padded(prompts: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths as one (batch, longest) tensor, pads on ``side``, and its attention mask."""
    longest = max(map(len, prompts))
    ids = torch.full((len(prompts), longest), pad_id)  # (batch, longest)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)  # (batch, longest)
    for i, p in enumerate(prompts):
        cols = slice(longest - len(p), longest) if side == "left" else slice(0, len(p))
        ids[i, cols], mask[i, cols] = torch.tensor(p), 1
    return ids, mask


def positions_from_mask(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What ``generate`` passes: each real token's index among the real tokens of its row (pads get 0)."""
    return model._prepare_position_ids_for_generation(ids, {"attention_mask": mask})  # (batch, n)


def batch(model, prompt_ids: list[int], other_ids: list[int], pad_id: int, side: str, positions: bool) -> Feed:
    """The prompt and the other prompt as one batch (the prompt, the shorter, is padded); logits read at the
    prompt's last real token. ``positions=False`` is a loop that forgets position ids."""
    ids, mask = padded([prompt_ids, other_ids], pad_id, side)
    pos = positions_from_mask(model, ids, mask) if positions else None
    read = -1 if side == "left" else len(prompt_ids) - 1
    return Feed(ids, mask, pos, row=0, read=read)


class Stream:
    """One decode in progress: its cache, mask and the next position of every row."""

    def __init__(self, model, feed: Feed):
        self.model, self.feed, self.cache = model, feed, DynamicCache(config=model.config)
        self.mask = feed.mask  # (batch, tokens so far) or None

    @torch.no_grad()
    def prefill(self) -> torch.Tensor:
        f = self.feed
        for a, b in f.chunks():
            out = self.model(f.ids[:, a:b], attention_mask=None if f.mask is None else f.mask[:, :b],
                             position_ids=None if f.positions is None else f.positions[:, a:b],
                             past_key_values=self.cache, use_cache=True)
        read = f.read if f.read < 0 else f.read - f.chunks()[-1][0]  # a column of the last chunk
        return out.logits[f.row, read]  # (vocab,)

    @torch.no_grad()
    def step(self, token: int) -> torch.Tensor:
        """Feed ``token`` to every row (the other rows' continuations do not matter); the reference row's logits."""
        rows = self.feed.ids.shape[0]
        ids = torch.full((rows, 1), token)  # (batch, 1)
        positions = None
        if self.mask is not None:
            self.mask = torch.cat([self.mask, torch.ones((rows, 1), dtype=self.mask.dtype)], dim=1)
            if self.feed.positions is not None:  # as generate: the new token's index among the row's real tokens
                positions = (self.mask.cumsum(-1) - 1)[:, -1:]  # (batch, 1)
        out = self.model(ids, attention_mask=self.mask, position_ids=positions, past_key_values=self.cache,
                         use_cache=True)
        return out.logits[self.feed.row, -1]  # (vocab,)

    def fork(self) -> Stream:
        twin = copy.copy(self)
        twin.cache = copy.deepcopy(self.cache)
        return twin


@dataclass
class Followed:
    logits: torch.Tensor  # (steps, vocab): fed the reference's tokens
    free_tokens: list[int]  # its own greedy choices (the reference's until the first step where they differ)


def follow(model, feed: Feed, tokens: list[int]) -> Followed:
    """Teacher-forced on ``tokens``; the free run forks off at the first step whose argmax is another token."""
    stream = Stream(model, feed)
    rows, free = [stream.prefill()], None
    for i, token in enumerate(tokens):
        own = int(rows[-1].argmax())
        if free is None and own != token:
            free = tokens[:i] + _free_run(stream.fork(), own, len(tokens) - i)
        if i + 1 < len(tokens):
            rows.append(stream.step(token))
    return Followed(torch.stack(rows), tokens if free is None else free)


def _free_run(stream: Stream, first: int, steps: int) -> list[int]:
    out = [first]
    while len(out) < steps:
        out.append(int(stream.step(out[-1]).argmax()))
    return out


def twin(model, attn_implementation: str) -> GPT2LMHeadModel:
    """The same weights (shared, not copied) under another attention implementation: the shared model's own
    setting stays as it is for every other session."""
    config = copy.deepcopy(model.config)
    with torch.device("meta"):
        other = GPT2LMHeadModel(config)
    other.load_state_dict(model.state_dict(), assign=True)  # the model's own tensors
    other.tie_weights()
    other.set_attn_implementation(attn_implementation)
    return other.eval()
