"""Paged KV blocks (vLLM's PagedAttention) accounted on real token sequences.

A contiguous cache reserves the model's whole context for every sequence; a paged cache hands out
fixed-size blocks as tokens arrive, and a full block whose tokens (and everything before them) match
another sequence's is stored once (prefix caching). Where two sequences share the start of a block
but then differ, that block was shared until the first write and then copied (copy-on-write).
This is bookkeeping over token ids, not a cache: transformers' paged allocator is internal to its
continuous-batching server.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from gptviz.lab.settings import LabError, labelled

# Stable ids (JSON keys and layout values, ``python -m gptviz lab --json``) -> the page's labels.
PAGED_LABELS = {"layout": "layout", "token_slots": "token slots", "kv_bytes": "KV bytes", "waste_pct": "waste %"}
LAYOUT_LABELS = {"contiguous": "contiguous, max length each", "paged": "paged",
                 "paged_shared_prefix": "paged + shared prefix blocks"}


@dataclass
class PagedResult:
    block_size: int  # tokens per block
    context: int  # a contiguous cache reserves this many tokens per sequence
    bytes_per_token: int  # KV bytes of one token, all layers
    blocks: list[dict]  # the block table: one row per (sequence, logical block)
    tokens: int  # tokens actually held, all sequences

    @property
    def logical_blocks(self) -> int:  # without sharing
        return len(self.blocks)

    @property
    def physical_blocks(self) -> int:  # with full blocks shared
        return len({b["physical"] for b in self.blocks})

    @property
    def physical_tokens(self) -> int:  # tokens stored, a shared block counted once
        return sum({b["physical"]: b["tokens"] for b in self.blocks}.values())

    @property
    def copied_on_write(self) -> int:
        return sum(b["copy_on_write"] for b in self.blocks)

    @property
    def waste_contiguous(self) -> float:
        sequences = len({b["sequence"] for b in self.blocks})
        return 1 - self.tokens / (sequences * self.context)

    @property
    def waste_paged(self) -> float:
        return 1 - self.tokens / (self.logical_blocks * self.block_size)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.blocks)

    def summary_rows(self) -> list[dict]:
        """One row per layout (contiguous, paged, paged sharing prefix blocks), keyed by stable ids (the JSON's)."""
        sequences = len({b["sequence"] for b in self.blocks})
        shared_slots = self.physical_blocks * self.block_size
        rows = [("contiguous", sequences * self.context, self.waste_contiguous),
                ("paged", self.logical_blocks * self.block_size, self.waste_paged),
                ("paged_shared_prefix", shared_slots, 1 - self.physical_tokens / shared_slots)]
        return [{"layout": layout, "token_slots": slots, "kv_bytes": slots * self.bytes_per_token,
                 "waste_pct": 100 * waste} for layout, slots, waste in rows]

    def summary(self) -> pd.DataFrame:
        """``summary_rows`` for display: layouts and columns labelled for a reader."""
        table = labelled(self.summary_rows(), PAGED_LABELS)
        return table.assign(layout=table["layout"].map(LAYOUT_LABELS))


def block_table(sequences: dict[str, list[int]], block_size: int, context: int, bytes_per_token: int) -> PagedResult:
    """Blocks for each named token sequence; physical ids shared where a full block's whole history matches."""
    if not isinstance(block_size, int) or block_size < 1:
        raise LabError(f"the block size must be a whole number ≥ 1, got {block_size!r}.")
    physical: dict[tuple, int] = {}
    rows = []
    for name, ids in sequences.items():
        for start in range(0, len(ids), block_size):
            block = ids[start:start + block_size]
            full = len(block) == block_size
            key = tuple(ids[:start + block_size]) if full else (name, start)  # a partial block is never shared
            pid = physical.setdefault(key, len(physical))
            rows.append({"sequence": name, "logical": start // block_size, "physical": pid, "tokens": len(block),
                         "shared": False, "copy_on_write": _copied(sequences, name, ids, start, block_size)})
    users: dict[int, int] = {}
    for row in rows:
        users[row["physical"]] = users.get(row["physical"], 0) + 1
    for row in rows:
        row["shared"] = users[row["physical"]] > 1
    return PagedResult(block_size, context, bytes_per_token, rows, sum(len(ids) for ids in sequences.values()))


def _copied(sequences: dict[str, list[int]], name: str, ids: list[int], start: int, block_size: int) -> bool:
    """True if an earlier sequence shares this block's history and first token but none holds the whole block:
    the block was shared when they forked and copied when this one wrote a different token."""
    earlier = []
    for other_name, other in sequences.items():
        if other_name == name:
            break
        if other[:start + 1] == ids[:start + 1]:
            earlier.append(other)
    block = ids[start:start + block_size]
    return bool(earlier) and all(other[start:start + block_size] != block for other in earlier)
