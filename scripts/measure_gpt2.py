"""Real GPT-2 at interactive speed: what a student waits for, against what plain transformers costs.

GPT-2-small shape (a local directory with random weights and a GPT-2-style tokenizer, scripts/gpt2_shape.py):
timing depends only on shape, so this is real GPT-2's cost. B = plain ``model.generate(use_cache=True)`` +
``model.generate(use_cache=False)`` on the same model, prompt and number of tokens, timed in this run. Prints,
for each length: B, the library's first result (``gptviz.start``) and whole run (``gptviz.run``, refined timing
included) as ratios of B; a real ``streamlit run app.py`` (not hosted: it loads the local directory) with one
websocket student: time to the first result on screen ÷ B, the server's own decode line, the timing passes it
took, the Timing page's recompute growth (per-step time, last quarter ÷ first quarter) and the server's peak RSS.

    HF_HUB_OFFLINE=1 python scripts/measure_gpt2.py                      # 24 and 128 new tokens (~6 min)
    HF_HUB_OFFLINE=1 python scripts/measure_gpt2.py --tokens 24 --json-out gpt2.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import load_test  # noqa: E402
from gpt2_shape import build  # noqa: E402

import gptviz  # noqa: E402
from gptviz import anatomy  # noqa: E402
from gptviz.decoding import warm_up  # noqa: E402
from gptviz.modes import Mode  # noqa: E402
from gptviz.ui_state import LOCAL_CHOICE, AppSettings  # noqa: E402

TARGET_FIRST = 1.5  # first result on screen ÷ B
TARGET_WHOLE = 4.0  # a whole default run, refined timing included, ÷ B
TARGET_GROWTH = 1.5  # recompute per-step time, last quarter ÷ first quarter


def plain(lm, prompt: str, n: int) -> dict:
    """What a user would write instead: generate with and without the cache, greedy, exactly n new tokens."""
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = {}
    for use_cache in (True, False):
        started = time.perf_counter()
        lm.model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=use_cache,
                          pad_token_id=lm.tokenizer.eos_token_id)
        out["cached" if use_cache else "uncached"] = time.perf_counter() - started
    out["B"] = out["cached"] + out["uncached"]
    return out


def library(lm, prompt: str, n: int) -> dict:
    settings = AppSettings(max_new_tokens=n).decode_settings()
    started = time.perf_counter()
    first = gptviz.start(lm.model, lm.tokenizer, prompt, settings, model_name=lm.name)
    first_seconds = time.perf_counter() - started
    whole = first
    while not whole.timing.complete:
        whole = gptviz.refine(lm.model, lm.tokenizer, whole)
    growth = {f.mode: f.per_step_growth for f in anatomy.growth_fit(whole.comparison)}
    return {"first": first_seconds, "whole": time.perf_counter() - started, "passes": whole.timing.passes,
            "agreed": whole.timing.agreed, "recompute_growth": growth[Mode.RECOMPUTE],
            "speedup": whole.summary().recompute.speedup}


def app(where: Path, prompt: str, n: int) -> dict:
    """One websocket student on a fresh, warmed server (the model loaded; the class's link opened cold)."""
    server = load_test.Server(timeout=120, hosted=False)
    try:
        link = urllib.parse.urlencode({"model": LOCAL_CHOICE, "dir": str(where), "prompt": prompt, "new": n})
        warm = load_test.run_ws(server, [load_test.Seen("warm-up", urllib.parse.urlencode(
            {"model": LOCAL_CHOICE, "dir": str(where), "prompt": "Warm up.", "new": 1}))], "overview")[0]
        if warm.errors:
            raise RuntimeError(f"warm-up failed: {warm.errors}")
        server.decodes_before = server.decodes() or 0
        student = load_test.run_ws(server, [load_test.Seen("student", link)], "overview",
                                   refined=True)[0]  # stays until refined: the server refines for open pages only
        decode = server.decode_seconds()
        refines = [float(m.group(1)) for line in server.lines
                   if (m := re.search(r"refine finished in ([\d.]+)s ok", line))]
        return {"first_result": student.first_result, "errors": student.errors, "decode_seconds": decode[-1:],
                "refine_seconds": refines[-1:], "peak_rss": server.peak_rss()}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="24,128", help="comma-separated new-token counts")
    parser.add_argument("--model-dir", type=Path, help="a GPT-2-small-shape directory (default: built in a temp dir)")
    parser.add_argument("--no-app", action="store_true", help="library figures only (no Streamlit server)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    tmp = None
    if args.model_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gptviz-gpt2-")
        args.model_dir = build(Path(tmp.name))
    lm = gptviz.load(str(args.model_dir))
    warm_up(lm.model, lm.tokenizer)
    prompt, rows = AppSettings.prompt, []
    print(f"model: {args.model_dir} ({lm.info['parameters']:,} parameters); prompt "
          f"{len(lm.tokenizer(prompt)['input_ids'])} tokens", flush=True)
    for n in (int(t) for t in args.tokens.split(",")):
        before = plain(lm, prompt, n)
        row = {"new_tokens": n, "library": library(lm, prompt, n)}
        after = plain(lm, prompt, n)  # B before and after, averaged: this machine's speed drifts over minutes
        row["plain"] = {k: (before[k] + after[k]) / 2 for k in before}
        row["plain"].update(B_before=before["B"], B_after=after["B"])
        if not args.no_app:
            row["app"] = app(args.model_dir, prompt, n)
        rows.append(row)
        b, lib = row["plain"]["B"], row["library"]
        print(f"\n{n} new tokens: B = {b:.2f} s (generate cached {row['plain']['cached']:.2f} s + uncached "
              f"{row['plain']['uncached']:.2f} s; B before {before['B']:.2f} s, after {after['B']:.2f} s)")
        print(f"  library first result {lib['first']:.2f} s = {lib['first'] / b:.2f}×B; whole run {lib['whole']:.2f} s "
              f"= {lib['whole'] / b:.2f}×B (target ≤ {TARGET_WHOLE}); {lib['passes']} timed passes"
              f"{' (they agreed)' if lib['agreed'] else ''}; speed-up {lib['speedup']:.2f}×")
        print(f"  recompute per-step growth, last ÷ first quarter: {lib['recompute_growth']:.2f}× "
              f"(target > {TARGET_GROWTH})")
        if "app" in row:
            a = row["app"]
            first = a["first_result"]
            print(f"  app, one websocket student: first result on screen {first:.2f} s = {first / b:.2f}×B "
                  f"(target ≤ {TARGET_FIRST}); server decode {a['decode_seconds']} s, refinement "
                  f"{a['refine_seconds']} s; peak RSS {a['peak_rss'] / 1e9:.2f} GB; errors {a['errors'] or 'none'}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
