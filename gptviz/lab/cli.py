"""``python -m gptviz lab --prompt TEXT [--json]``: the Cache lab's figures on the command line.

Validated by ``gptviz.lab.check`` (the page's messages); a bad setting prints one line and exits 2,
like every gptviz command (gptviz/cli.py dispatches and prints the error; gptviz/arguments.py holds
what both parsers share).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from gptviz import lab
from gptviz.arguments import UsageError, load_model, model_json, plain, positive_int, threads
from gptviz.lab import BACKENDS, LabSettings
from gptviz.registry import BUNDLED
from gptviz.settings import DTYPE, DTYPES


def _backend_list(text: str) -> tuple[str, ...]:
    """Comma-separated backends; an empty list is refused (it would silently run no quantized cache)."""
    backends = tuple(b.strip() for b in text.split(",") if b.strip())
    if not backends:
        raise argparse.ArgumentTypeError(f"name at least one of {', '.join(BACKENDS)}")
    return backends


def add_parser(commands) -> None:
    """``python -m gptviz lab``: the Cache lab's figures (validated by gptviz.lab.check, messages as on the page).
    Cache settings parse as plain ints: their bounds live in lab.check only (argparse's ≥ 0 for the window, which
    needs ≥ 2, was a second bound for one input)."""
    p = commands.add_parser("lab", help="what quantized, windowed, sink, shared-prefix, paged and GQA caches cost")
    p.add_argument("--model", default=BUNDLED, help="'bundled' (offline), a Hub id, or a local directory")
    p.add_argument("--prompt", required=True, help="the text every cache variant continues")
    p.add_argument("--max-new-tokens", type=positive_int, default=LabSettings.max_new_tokens,
                   help=f"tokens the exact cache chooses, every variant is fed (default {LabSettings.max_new_tokens})")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=DTYPE, help=f"compute dtype (default {DTYPE})")
    p.add_argument("--window", type=int, default=LabSettings.window,
                   help=f"sliding window in tokens (default {LabSettings.window})")
    p.add_argument("--sinks", type=int, default=LabSettings.sinks,
                   help=f"attention sinks kept beside the window (default {LabSettings.sinks})")
    p.add_argument("--groups", type=int, default=None,
                   help="GQA what-if: K/V head groups, dividing the head count (default: half the heads)")
    p.add_argument("--backends", type=_backend_list,
                   default=BACKENDS, help=f"comma-separated quantized caches (default {','.join(BACKENDS)})")
    p.add_argument("--residual-length", type=int, default=LabSettings.residual_length,
                   help=f"quanto: newest tokens kept unquantized (default {LabSettings.residual_length})")
    p.add_argument("--block-size", type=int, default=LabSettings.block_size,
                   help=f"paged KV: tokens per block (default {LabSettings.block_size})")
    p.add_argument("--prefix-prompts", nargs=2, default=LabSettings.prefix_prompts, metavar=("A", "B"),
                   help="two prompts with a common beginning, for the shared-prefix demo")
    p.add_argument("--threads", type=threads, default=None, help="torch CPU threads, at most the cores "
                   "(default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON report instead of a table")


def command(args: argparse.Namespace) -> int:
    settings = lab.LabSettings(
        prompt=args.prompt, max_new_tokens=args.max_new_tokens, window=args.window, sinks=args.sinks,
        groups=args.groups, backends=args.backends, residual_length=args.residual_length,
        block_size=args.block_size, prefix_prompts=tuple(args.prefix_prompts))
    lm = load_model(args)
    try:
        report = lab.run(lm.model, lm.tokenizer, settings)
    except lab.LabError as exc:
        raise UsageError(str(exc)) from exc
    data = plain({"model": model_json(lm),
                   "settings": dataclasses.asdict(report.settings), **report.to_json(),
                   "steps": report.steps().to_dict(orient="records"),
                   "precision_steps": report.precision.to_frame().to_dict(orient="records")})
    if args.json:
        print(json.dumps(data, ensure_ascii=False, allow_nan=False))
    else:
        print(f"{lm.name}: {args.prompt!r} + {len(report.exact_tokens)} tokens; {report.seconds:.1f} s\n"
              f"{report.summary().to_string(index=False)}\n\n{report.precision.summary().to_string(index=False)}")
    return 0
