"""``python -m gptviz divergence --prompt TEXT [--other-prompt TEXT] [--json]``: the Divergence lab's table.

What needs no model (prompts, counts) is refused before one loads; a bad setting prints one line and exits 2,
like every gptviz command (gptviz/cli.py dispatches and prints the error; gptviz/arguments.py holds
what the parsers share).
"""

from __future__ import annotations

import argparse
import json

from gptviz import divergence
from gptviz.arguments import UsageError, plain, positive_int, quiet_torch
from gptviz.divergence import DivergenceSettings
from gptviz.models import load
from gptviz.registry import BUNDLED
from gptviz.settings import DTYPE, DTYPES


def add_parser(commands) -> None:
    p = commands.add_parser("divergence", help="where batched, padded, chunked, other-kernel, other-precision and "
                                               "generate() logits stop matching the prompt alone, and why")
    p.add_argument("--model", default=BUNDLED, help="'bundled' (offline), a Hub id, or a local directory")
    p.add_argument("--prompt", required=True, help="the reference: decoded alone, greedily")
    p.add_argument("--other-prompt", default=DivergenceSettings.other_prompt,
                   help="its partner in a batch; must have more tokens than the prompt (default: a line of Henry V)")
    p.add_argument("--max-new-tokens", type=positive_int, default=DivergenceSettings.max_new_tokens,
                   help=f"tokens the reference chooses (default {DivergenceSettings.max_new_tokens})")
    p.add_argument("--chunks", type=int, default=DivergenceSettings.chunks,
                   help=f"chunked prefill: forward calls the prompt is cut into (default {DivergenceSettings.chunks})")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=DTYPE, help=f"compute dtype (default {DTYPE})")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help='print {"cases": [...], "seconds": ...} instead of a table')


def command(args: argparse.Namespace) -> int:
    settings = DivergenceSettings(prompt=args.prompt, other_prompt=args.other_prompt,
                                  max_new_tokens=args.max_new_tokens, chunks=args.chunks)
    try:
        divergence.check(settings)  # before a model loads
        quiet_torch(args.threads)
        lm = load(args.model, args.dtype)
        report = divergence.run(lm.model, lm.tokenizer, settings)
    except divergence.DivergenceError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print(json.dumps(plain(report.to_json()), ensure_ascii=False, allow_nan=False))
    else:
        table = report.to_frame()[["name", "max_abs_dlogit", "kl", "first_flip", "first_text_divergence",
                                   "exact_up_to_rounding", "why"]]
        print(f"{lm.name}: {args.prompt!r} + {len(report.reference_tokens)} tokens; {report.seconds:.1f} s\n"
              f"{table.to_string(index=False, max_colwidth=70)}")
    return 0
