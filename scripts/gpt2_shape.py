"""Write a local model directory that costs exactly what real GPT-2 (124M) costs: random weights of
the GPT-2-small shape (12 layers, 12 heads, d_model 768, vocabulary 50,257, context 1,024) and a
GPT-2-style tokenizer (byte-level BPE, 50,257 entries, trained on the bundled model's corpus).

Timing depends only on shape, and this machine cannot reach the Hugging Face Hub, so every GPT-2
figure in the README is measured on this directory. The tokenizer is not GPT-2's own vocabulary:
a prompt tokenizes to a similar count (English text, the same algorithm), not to the same ids.

    python scripts/gpt2_shape.py /tmp/gpt2-shape        (~1 min: pip download, BPE training, save)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from train_bundled import fetch_sdist, read_plays, train_tokenizer  # noqa: E402

from gptviz.registry import GPT2_SMALL  # noqa: E402


def build(where: Path, seed: int = 0) -> Path:
    """Save random GPT-2-small weights (safetensors) and a 50,257-entry byte-level BPE tokenizer in ``where``."""
    with tempfile.TemporaryDirectory() as tmp:
        train, _ = read_plays(fetch_sdist(Path(tmp)))
    tokenizer = train_tokenizer(list(train.values()), GPT2_SMALL.vocab)
    short = GPT2_SMALL.vocab - len(tokenizer)  # a corpus this size may run out of merges before 50,257
    if short > 0:
        tokenizer.add_tokens([f"<|unused{i}|>" for i in range(short)])
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=GPT2_SMALL.layers, n_head=GPT2_SMALL.heads, n_embd=GPT2_SMALL.d_model,
                        vocab_size=GPT2_SMALL.vocab, n_positions=GPT2_SMALL.context,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config)
    where.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(where)
    tokenizer.save_pretrained(where)
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("where", type=Path, help="directory to write (created)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build(args.where, args.seed))


if __name__ == "__main__":
    main()
