"""Command line: ``python -m gptviz compare --model SRC --prompt TEXT --max-new-tokens N [--json]``.

Runs every decoding mode on one prompt and prints one report: a JSON document with
``--json``, else a short table. Any bad input (arguments, model source, prompt that does
not fit) prints exactly one line on stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict

from gptviz import display
from gptviz.arguments import (
    EXIT_USAGE,
    Parser,
    UsageError,
    finite_float,
    load_model,
    model_json,
    non_negative_int,
    plain,
    positive_int,
    threads,
)
from gptviz.divergence import cli as divergence_cli
from gptviz.lab import cli as lab_cli
from gptviz.modes import MODES, Mode, parse_modes
from gptviz.registry import BUNDLED
from gptviz.serve import cli as worker_cli
from gptviz.settings import CACHES, DTYPE, DTYPES, NEW_TOKENS, SAMPLINGS, DecodeSettings


def _modes(text: str) -> tuple[Mode, ...]:
    try:
        modes = parse_modes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    # The cached mode chooses the tokens the others replay, so it always runs first.
    return (Mode.CACHED, *[m for m in modes if m != Mode.CACHED])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m gptviz", description="Decode one prompt with a KV cache and by "
                     "recomputing the whole sequence, and compare the two.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = commands.add_parser("compare", help="run every decoding mode on one prompt and report the comparison")
    p.add_argument("--model", default=BUNDLED,
                   help="'bundled' (offline), a Hub id (gpt2, distilgpt2, gpt2-medium, ...), or a local directory")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=positive_int, default=NEW_TOKENS,
                   help=f"tokens to generate (default {NEW_TOKENS})")
    p.add_argument("--sampling", choices=SAMPLINGS, default=DecodeSettings.sampling,
                   help=f"argmax, or a seeded draw after temperature/top-k/top-p (default {DecodeSettings.sampling})")
    p.add_argument("--temperature", type=finite_float, default=None, help="sampling only: > 0 (default 1)")
    p.add_argument("--top-k", type=non_negative_int, default=None, help="sampling only: 0 turns it off (default)")
    p.add_argument("--top-p", type=finite_float, default=None, help="sampling only: in (0, 1], 1 is off (default)")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="sampling only: seed of the sampler, 0 to 2**64 - 1 (default 0)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=DTYPE,
                   help=f"compute dtype; float64 shrinks the cached/recompute gap to ~1e-13 (default {DTYPE})")
    p.add_argument("--cache", choices=CACHES, default=DecodeSettings.cache,
                   help=f"growing DynamicCache or preallocated StaticCache (default {DecodeSettings.cache})")
    p.add_argument("--modes", type=_modes, default=MODES,
                   help=f"comma-separated decoders to run (default {','.join(MODES)}); cached always runs")
    p.add_argument("--no-attention", action="store_true",
                   help="do not keep attention maps (faster, less memory; no slice proof in the report)")
    p.add_argument("--threads", type=threads, default=None,
                   help="torch CPU threads (default: torch's choice); 1 is steadier on a busy machine")
    p.add_argument("--json", action="store_true", help="print one JSON report instead of a table")
    lab_cli.add_parser(commands)
    divergence_cli.add_parser(commands)
    worker_cli.add_parser(commands)
    return parser


def settings_from(args: argparse.Namespace):
    """DecodeSettings from parsed arguments, validated (what needs no model) before loading one."""
    from gptviz.settings import DecodeSettings, check_prompt

    check_prompt(args.prompt)  # empty, or bytes that are not UTF-8 (they arrive as lone surrogates)
    given = {name: getattr(args, name) for name in ("temperature", "top_k", "top_p", "seed")}
    if args.sampling == "greedy":
        extra = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
        if extra:  # silently ignoring them would report a run the user did not ask for
            raise UsageError(f"{', '.join(extra)} {'applies' if len(extra) == 1 else 'apply'} only with "
                             "--sampling sample")
    return DecodeSettings(
        max_new_tokens=args.max_new_tokens, sampling=args.sampling,
        temperature=1.0 if args.temperature is None else args.temperature,
        top_k=args.top_k or 0, top_p=1.0 if args.top_p is None else args.top_p, seed=args.seed or 0,
        cache=args.cache, modes=args.modes, record_attention=not args.no_attention,
    ).validate()


def report(lm, prompt: str, result) -> dict:
    """The JSON report of one run: model, tokens of each mode, per-step agreement, timings, KV bytes."""
    cached = result.cached
    table = result.comparison.to_frame()
    modes = {}
    for mode, trace in result.traces.items():
        seconds = [s.seconds for s in trace.steps]
        modes[mode] = {
            "token_ids": trace.token_ids,
            "tokens": [s.token_text for s in trace.steps],
            "step_seconds": seconds,
            "total_seconds": sum(seconds),
            "stored_bytes": trace.nbytes(),
        }
    keep = [c for c in table.columns if c != "token_id"]
    steps = []
    for row, step in zip(table[keep].to_dict(orient="records"), cached.steps, strict=True):
        steps.append({"step": row.pop("step"), "token_id": step.token_id, "token": step.token_text, **row})
    return plain({
        "model": model_json(lm),
        "settings": asdict(result.settings),
        "prompt": {"text": prompt, "token_ids": cached.prompt_ids, "tokens": cached.prompt_tokens},
        "text": result.text,
        "modes": modes,
        "steps": steps,
        "summary": result.summary().to_dict(),
    })


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None or seconds != seconds else f"{seconds * 1e3:8.1f}"


def table_text(data: dict) -> str:
    """A short human-readable version of the report."""
    m, s = data["model"], data["summary"]
    lines = [f"model   {m['name']}  ({m['layers']} layers, {m['heads']} heads, d_model {m['d_model']}, {m['dtype']})",
             f"prompt  {data['prompt']['text']!r}  ({len(data['prompt']['token_ids'])} tokens)",
             f"output  {data['text']!r}", ""]
    has_recompute = Mode.RECOMPUTE in data["modes"]
    head = f"{'step':>4}  {'token':<14} {'ctx':>4}  {'cached ms':>9}"
    if has_recompute:
        head += f"  {'recomp ms':>9}  {'max|Δlogit|':>11}  {'argmax=':>7}"
    kv_name, kv_size = display.byte_unit(s["kv_cache_allocated"])  # the largest KV figure of the run
    head += f"  {'KV ' + kv_name:>8}"
    lines += [head, "-" * len(head)]
    for row in data["steps"]:
        token = display.token(row["token"], 14)  # whitespace made visible: each step stays on one line
        line = f"{row['step']:>4}  {token:<14} {row['context_len']:>4}  {_ms(row['cached_seconds']):>9}"
        if has_recompute:
            line += (f"  {_ms(row['recompute_seconds']):>9}  {row['max_abs_dlogit']:>11.2e}"
                     f"  {'yes' if row['argmax_equal'] else 'NO':>7}")
        line += f"  {row['kv_bytes'] / kv_size:>8.1f}"
        lines.append(line)
    lines.append("")
    lines.append(f"cached total {s['cached_seconds']:.3f} s; KV cache {display.size(s['kv_cache_bytes'])} "
                 f"(allocated {display.size(s['kv_cache_allocated'])})")
    if has_recompute:
        lines.append(f"recompute total {s['recompute_seconds']:.3f} s ({s['speedup']:.1f}× the cached time); "
                     f"same tokens: {s['same_tokens']}; max |Δlogit| {s['max_abs_dlogit']:.2e}; "
                     f"argmax agreement {s['argmax_agreement']:.0%}")
        if "max_slice_delta" in s:
            lines.append(f"slice proof: recomputed past attention rows differ from stored ones by at most "
                         f"{s['max_slice_delta']:.2e}")
    return "\n".join(lines)


def compare_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from gptviz.decoding import run, warm_up

    lm = load_model(args)
    warm_up(lm.model, lm.tokenizer)  # as the app does: the reported timings pay no first-run costs
    result = run(lm.model, lm.tokenizer, args.prompt, settings, model_name=lm.name)
    data = report(lm, args.prompt, result)
    print(json.dumps(data, ensure_ascii=False, allow_nan=False) if args.json else table_text(data))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = build_parser().parse_args(argv)
        from gptviz.models import ModelLoadError
        from gptviz.settings import DecodeError

        try:
            if args.command == "lab":
                return lab_cli.command(args)
            if args.command == "divergence":
                return divergence_cli.command(args)
            if args.command == "worker":
                return worker_cli.command(args)
            return compare_command(args)
        except (DecodeError, ModelLoadError) as exc:
            raise UsageError(str(exc)) from exc
    except UsageError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"gptviz: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
