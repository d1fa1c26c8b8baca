"""Benchmark: does instrumentation distort the timings it reports? ``python scripts/bench.py``.

At GPT-2-small shape with random weights (time depends only on shape), each instrumented
decoder is timed against plain ``model.generate`` on the *same* model object, in the same
run, interleaved (plain/instrumented, then instrumented/plain, ...) and reported as the
minimum over repeats, which is the least noise-sensitive estimate on a shared machine.
With no recorder active our "gptviz" attention implementation runs SDPA, so plain
``generate`` gets the fast path it would get on a stock model.

Like for like: ``generate`` projects only the last position onto the vocabulary
(it passes ``logits_to_keep=1`` itself), so it is the baseline of the ``recompute_last``
mode; the ``recompute`` mode (logits for every position, as a naive loop computes them)
is compared with ``generate(use_cache=False, logits_to_keep=0)``, which does the same work.

Also reported: stored trace bytes, peak RSS, the cached step against its memory-bandwidth
floor (every weight is read once per token), and throughput of N concurrent decodes on one
shared model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import StoppingCriteriaList

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the library is the checkout's gptviz/
    sys.path.insert(0, str(ROOT))

from gptviz import cost  # noqa: E402
from gptviz.decoding import Tape, decode_cached, decode_recompute, warm_up  # noqa: E402
from gptviz.lockstep import alone  # noqa: E402
from gptviz.models import random_model  # noqa: E402
from gptviz.modes import MODES, Mode, parse_modes  # noqa: E402
from gptviz.registry import GPT2_SMALL  # noqa: E402
from gptviz.sampling import Replay, Sampler  # noqa: E402
from gptviz.settings import DecodeSettings  # noqa: E402

RATIO_TARGET = 1.10  # instrumented ÷ plain
TRACE_TARGET = 32 * 10**6  # bytes of both stored traces at 256 new tokens
TRACE_TARGET_TOKENS = 256
RSS_TARGET = 1.5 * 10**9  # bytes of peak resident memory
FLOOR_TARGET = 2.0  # cached step ÷ memory-bandwidth floor
# The plain baseline of each mode: generate() keyword arguments.
PLAIN = {Mode.CACHED: {"use_cache": True}, Mode.RECOMPUTE: {"use_cache": False, "logits_to_keep": 0},
         Mode.RECOMPUTE_LAST: {"use_cache": False}}


@dataclass
class Timed:
    seconds: list[float]  # total wall time, one per repeat, in run order
    step_seconds: list[list[float]]  # per repeat: wall time of each step (they sum to the total)
    tokens: list[int]  # generated tokens of the last repeat
    tape: Tape | None = None  # instrumented only: the last repeat's recording

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def step_floor(self) -> float:
        """Sum over steps of each step's fastest repeat: drops contention bursts that hit single steps."""
        return sum(min(times) for times in zip(*self.step_seconds, strict=True))


class _Stamps:
    """Wall-clock stamps after every step: generate's stopping criterion or the decoders' on_step."""

    def __init__(self) -> None:
        self.times = [time.perf_counter()]

    def __call__(self, input_ids, scores=None, **kwargs):  # StoppingCriteria signature; on_step ignores it
        self.times.append(time.perf_counter())
        if isinstance(input_ids, torch.Tensor):  # as a stopping criterion: never stop early
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)
        return None

    def steps(self) -> list[float]:
        """Per-step seconds; anything after the last step (generate's return, compaction) joins the last."""
        self.times[-1] = time.perf_counter()
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def plain_generate(model, prompt: torch.Tensor, n: int, mode: str, stamps: _Stamps | None = None) -> list[int]:
    out = model.generate(prompt[None], attention_mask=torch.ones_like(prompt)[None], do_sample=False,
                         max_new_tokens=n, min_new_tokens=n, pad_token_id=model.config.eos_token_id,
                         stopping_criteria=StoppingCriteriaList([stamps] if stamps else []), **PLAIN[mode])
    return out[0, len(prompt):].tolist()


def instrumented(model, prompt: torch.Tensor, n: int, mode: str, tokens: list[int] | None,
                 stamps: _Stamps | None = None) -> Tape:
    """What a session pays for one mode: decode with recording, then compact the attention to fp16."""
    on_step = None if stamps is None else (lambda mode, step, token: stamps(step))
    if mode == Mode.CACHED:
        tape = alone(decode_cached(model, prompt, Sampler(DecodeSettings()), n, on_step=on_step))
    else:  # replays the cached mode's tokens, as gptviz.run does
        tape = alone(decode_recompute(model, prompt, Replay(tokens, len(prompt)), n, Mode(mode).logits_to_keep,
                                      on_step=on_step))
    tape.compact(keep_attention=mode != Mode.RECOMPUTE_LAST)
    return tape


def _clock(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def time_mode(model, prompt: torch.Tensor, n: int, mode: str, repeats: int,
              tokens: list[int] | None) -> tuple[Timed, Timed]:
    """Plain and instrumented runs of one mode, interleaved ABBA so slow drift hits both alike."""
    plain, inst = Timed([], [], []), Timed([], [], [])
    for r in range(repeats):
        order = ("plain", "inst") if r % 2 == 0 else ("inst", "plain")
        for which in order:
            stamps = _Stamps()
            if which == "plain":
                plain.tokens = plain_generate(model, prompt, n, mode, stamps)
                timed = plain
            else:
                inst.tape = None  # free the previous recording before making the next one
                inst.tape = instrumented(model, prompt, n, mode, tokens, stamps)
                inst.tokens = inst.tape.sequence[len(prompt):].tolist()
                timed = inst
            steps = stamps.steps()
            if len(steps) != n:
                raise RuntimeError(f"{which} {mode}: {len(steps)} step stamps for {n} tokens")
            timed.step_seconds.append(steps)
            timed.seconds.append(sum(steps))
    return plain, inst


def _decode_worker(model, prompt: torch.Tensor, n: int, barrier: threading.Barrier, seconds: list[float],
                   errors: list[BaseException], i: int) -> None:
    try:
        barrier.wait()
        seconds[i], _ = _clock(lambda: instrumented(model, prompt, n, Mode.CACHED, None))
    except BaseException as exc:  # re-raised by the caller, never lost in a thread
        errors.append(exc)


def concurrency(model, prompts: list[torch.Tensor], n: int, counts: Sequence[int]) -> list[dict]:
    """Tokens per second of N simultaneous instrumented cached decodes (threads) on one shared model."""
    rows = []
    for count in counts:
        barrier = threading.Barrier(count + 1)
        seconds = [0.0] * count
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_decode_worker,
                                    args=(model, prompts[i % len(prompts)], n, barrier, seconds, errors, i))
                   for i in range(count)]
        for t in threads:
            t.start()
        start = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        if errors:
            raise errors[0]
        rows.append({"decodes": count, "tokens_each": n, "wall_seconds": wall,
                     "tokens_per_second": count * n / wall, "mean_decode_seconds": statistics.mean(seconds)})
    return rows


def lab_overhead(model, prompt: torch.Tensor, n: int, repeats: int) -> dict:
    """Each Cache-lab variant's greedy decode against the exact DynamicCache decode: same model, same prompt,
    interleaved (forward, then backward order), best of ``repeats``; plus the bytes each cache holds at the end."""
    from gptviz import lab
    from gptviz.lab.settings import variants as lab_variants
    from gptviz.lab.variants import greedy

    config, ids = model.config, prompt.tolist()
    settings = lab.LabSettings(groups=lab.suggested_groups(config.n_head))
    todo, missing = lab_variants(settings, config.n_embd // config.n_head)
    variants = [lab.Variant("exact", "exact"), *todo]
    for v in variants:  # warm-up: first-use costs (the quanto import) stay out of the timings
        greedy(model, ids, 2, lab.build(v, config))
    best: dict[str, float] = {v.name: float("inf") for v in variants}
    held: dict[str, int] = {}
    for r in range(repeats):
        for v in variants if r % 2 == 0 else variants[::-1]:
            seconds, (_, _, sizes) = _clock(lambda v=v: greedy(model, ids, n, lab.build(v, config)))
            best[v.name], held[v.name] = min(best[v.name], seconds), sizes[-1]
    exact = best["exact"]
    return {"new_tokens": n, "repeats": repeats, "missing": missing,
            "variants": [{"variant": v.name, "seconds": best[v.name], "seconds_per_token": best[v.name] / n,
                          "overhead_vs_exact": best[v.name] / exact, "kv_bytes": held[v.name],
                          "kv_bytes_vs_exact": held[v.name] / held["exact"]} for v in variants]}


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def id_tokenizer(vocab: int):
    """Random weights have no vocabulary: a token's text is its id, and a prompt is ids separated by spaces.

    A real tokenizer (tokenizers WordLevel), so the session child can save and load it like any other."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({str(i): i for i in range(vocab)}, unk_token="0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def session_rss(args: argparse.Namespace, n: int, model) -> dict:
    """Peak RSS of a fresh process that does what one app session does: load the model from safetensors
    through ``gptviz.load`` (as the app gets it), warm it up (as the app does), then ``gptviz.run`` all
    three modes with attention kept. The model is saved to a temporary directory by this process and
    loaded by a child, so nothing else the benchmark did (building the model, plain generate, repeats)
    counts towards the child's high-water mark."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # the report is the only output
    with tempfile.TemporaryDirectory(prefix="gptviz-bench-") as where:
        model.save_pretrained(where)
        id_tokenizer(args.vocab).save_pretrained(where)
        command = [sys.executable, str(Path(__file__).resolve()), "--session-only", str(n), "--session-dir", where,
                   "--vocab", str(args.vocab), "--prompt-tokens", str(args.prompt_tokens), "--seed", str(args.seed),
                   "--threads", str(torch.get_num_threads())]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _session_only(args: argparse.Namespace) -> dict:
    import transformers

    from gptviz.decoding import run
    from gptviz.models import load

    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lm = load(args.session_dir)
    after_load, load_seconds = _peak_rss(), time.perf_counter() - started
    ids = torch.randint(0, args.vocab, (args.prompt_tokens,), generator=torch.Generator().manual_seed(args.seed))
    prompt = " ".join(map(str, ids.tolist()))
    warm_up(lm.model, lm.tokenizer, prompt)
    after_warm_up = _peak_rss()
    started = time.perf_counter()
    result = run(lm.model, lm.tokenizer, prompt, DecodeSettings(max_new_tokens=args.session_only))
    seconds = time.perf_counter() - started
    if result.cached.prompt_ids != ids.tolist():
        raise RuntimeError("the saved id tokenizer did not encode the prompt to its ids")
    return {"new_tokens": args.session_only, "peak_rss_bytes": _peak_rss(), "peak_rss_after_load_bytes": after_load,
            "peak_rss_after_warm_up_bytes": after_warm_up, "load_seconds": load_seconds, "seconds": seconds,
            "trace_bytes": sum(t.nbytes() for t in result.traces.values())}


def _peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM of /proc/self/status on Linux.

    Not ``getrusage().ru_maxrss``: Linux carries the parent's high-water mark across fork and exec, so a
    child started from a big process would report at least the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def bench(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = {"layers": args.layers, "heads": args.heads, "d_model": args.d_model, "vocab": args.vocab,
             "context": args.context}
    model = random_model(**shape, seed=args.seed)
    tokenizer = id_tokenizer(args.vocab)
    # No end-of-text token: generate must run exactly N steps and pick the same argmax as our sampler
    # (with one, min_new_tokens masks it out, and a small random vocabulary does pick it).
    model.generation_config.eos_token_id = None
    generator = torch.Generator().manual_seed(args.seed)
    prompts = [torch.randint(0, args.vocab, (args.prompt_tokens,), generator=generator) for _ in range(4)]
    prompt = prompts[0]
    results: dict = {
        "shape": shape, "dtype": "float32", "prompt_tokens": args.prompt_tokens, "repeats": args.repeats,
        "cached_repeats": args.cached_repeats,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "weight_bytes": cost.weight_bytes(model), "runs": [],
    }
    if not args.json:  # early, so a long run shows what it is measuring
        print_header(results)
    with torch.no_grad():
        # The app's warm-up of a freshly loaded model (gptviz.run, both caches), then every timed path once.
        warm_up(model, tokenizer, " ".join(map(str, prompt.tolist())))
        for mode in args.modes:  # warm up every path once (allocator, kernel selection)
            instrumented(model, prompt, 2, mode, plain_generate(model, prompt, 2, Mode.CACHED))
            plain_generate(model, prompt, 2, mode)
        for n in args.tokens:
            entry: dict = {"new_tokens": n, "modes": {}}
            tokens = None
            for mode in args.modes:
                repeats = args.cached_repeats if mode == Mode.CACHED else args.repeats
                plain, inst = time_mode(model, prompt, n, mode, repeats, tokens)
                if mode == Mode.CACHED:
                    tokens = inst.tokens
                    decode_steps = [s.seconds for s in inst.tape.steps[1:]] or [inst.tape.steps[0].seconds]
                    entry["cached_step_seconds"] = statistics.median(decode_steps)
                    entry["plain_cached_seconds_per_token"] = plain.best / n
                trace = inst.tape.to_trace("random", tokenizer, "dynamic" if mode == Mode.CACHED else None)
                entry["modes"][mode] = {
                    "plain_seconds": plain.seconds, "instrumented_seconds": inst.seconds,
                    "plain_step_floor": plain.step_floor, "instrumented_step_floor": inst.step_floor,
                    "ratio": inst.step_floor / plain.step_floor,
                    "plain_best": plain.best, "instrumented_best": inst.best, "ratio_best": inst.best / plain.best,
                    "ratio_median": statistics.median(inst.seconds) / statistics.median(plain.seconds),
                    "same_tokens_as_generate": plain.tokens == inst.tokens, "trace_bytes": trace.nbytes(),
                }
                del inst, trace
            entry["trace_bytes"] = sum(entry["modes"][m]["trace_bytes"] for m in (Mode.CACHED, Mode.RECOMPUTE)
                                       if m in entry["modes"])
            entry["peak_rss_bytes"] = _peak_rss()  # so far: the process after this many tokens
            results["runs"].append(entry)
            if not args.json:
                print_run(entry)
        results["peak_rss_bytes"] = _peak_rss()  # this process: before the concurrent decodes and the copy
        if args.lab_tokens:
            results["lab"] = lab_overhead(model, prompt, args.lab_tokens, args.repeats)
            if not args.json:
                print_lab(results["lab"])
        if args.concurrency:
            results["concurrency"] = concurrency(model, prompts, args.concurrency_tokens, args.concurrency)
    if args.session_rss:
        results["session"] = session_rss(args, max(args.tokens), model)
    # Last, because its buffers would otherwise set the peak RSS.
    bandwidth = cost.measure_bandwidth(args.bandwidth_mib * 2**20, repeats=5)
    floor = cost.step_floor_seconds(results["weight_bytes"], bandwidth)
    results.update({"memory_bandwidth_bytes_per_s": {"read": bandwidth.read, "copy": bandwidth.copy},
                    "cached_step_floor_seconds": floor})
    for entry in results["runs"]:
        if "cached_step_seconds" in entry:
            entry["cached_step_vs_floor"] = entry["cached_step_seconds"] / floor
    return results


def print_header(r: dict) -> None:
    s = r["shape"]
    print(f"gptviz bench: {s['layers']} layers, {s['heads']} heads, d_model {s['d_model']}, vocab {s['vocab']}, "
          f"ctx {s['context']}, random weights, {r['dtype']}, prompt {r['prompt_tokens']} tokens")
    print(f"torch {r['torch']}, {r['threads']} thread(s), {r['machine']}; {r['cached_repeats']} (cached) or "
          f"{r['repeats']} (recompute) interleaved runs per side")
    print("time = sum over steps of each step's fastest run; ratio = instrumented ÷ plain of that (in brackets: "
          "ratio of the best totals, of the median totals)")
    sys.stdout.flush()


def print_run(entry: dict) -> None:
    n = entry["new_tokens"]
    print(f"\n{n} new tokens")
    print(f"  {'mode':<15} {'plain s':>9} {'instr. s':>9} {'ratio':>6} {'(best, median)':>15}  target  result  "
          "same tokens as generate")
    for mode, m in entry["modes"].items():
        others = f"({m['ratio_best']:.3f}, {m['ratio_median']:.3f})"
        print(f"  {mode:<15} {m['plain_step_floor']:>9.3f} {m['instrumented_step_floor']:>9.3f} {m['ratio']:>6.3f} "
              f"{others:>15}  ≤ {RATIO_TARGET:.2f}  {_verdict(m['ratio'] <= RATIO_TARGET)}    "
              f"{m['same_tokens_as_generate']}")
    traces = ", ".join(f"{mode} {_mb(m['trace_bytes'])}" for mode, m in entry["modes"].items())
    line = f"  stored traces: {traces}; cached + recompute {_mb(entry['trace_bytes'])}"
    if n >= TRACE_TARGET_TOKENS:
        line += (f"  target ≤ {_mb(TRACE_TARGET)} at {TRACE_TARGET_TOKENS}  "
                 f"{_verdict(entry['trace_bytes'] <= TRACE_TARGET)}")
    print(line)
    sys.stdout.flush()


def print_lab(lab: dict) -> None:
    print(f"\nCache lab variants: greedy decode of {lab['new_tokens']} tokens, best of {lab['repeats']} interleaved "
          "runs, against the exact DynamicCache decode")
    print(f"  {'variant':<22} {'s/token':>9} {'÷ exact':>8} {'KV bytes':>12} {'÷ exact':>8}")
    for v in lab["variants"]:
        print(f"  {v['variant']:<22} {v['seconds_per_token'] * 1e3:>7.1f}ms {v['overhead_vs_exact']:>8.2f} "
              f"{v['kv_bytes']:>12,} {v['kv_bytes_vs_exact']:>8.2f}")
    for backend, reason in lab["missing"].items():
        print(f"  {backend}: not run ({reason})")
    sys.stdout.flush()


def print_footer(r: dict) -> None:
    bw = r["memory_bandwidth_bytes_per_s"]
    print(f"\nmemory bandwidth: read {bw['read'] / 1e9:.1f} GB/s (copy {bw['copy'] / 1e9:.1f} GB/s); weights "
          f"{_mb(r['weight_bytes'])} -> cached-step floor {r['cached_step_floor_seconds'] * 1e3:.1f} ms")
    for entry in r["runs"]:
        if "cached_step_vs_floor" in entry:
            ratio = entry["cached_step_vs_floor"]
            print(f"  {entry['new_tokens']} tokens: cached step (median, instrumented) "
                  f"{entry['cached_step_seconds'] * 1e3:.1f} ms = {ratio:.2f} × floor  target ≤ {FLOOR_TARGET:.1f}  "
                  f"{_verdict(ratio <= FLOOR_TARGET)}")
    if "concurrency" in r:
        print("\nconcurrency: N simultaneous instrumented cached decodes (threads), one shared model")
        for c in r["concurrency"]:
            print(f"  N={c['decodes']}: {c['tokens_per_second']:6.1f} tokens/s total, {c['tokens_each']} tokens each, "
                  f"wall {c['wall_seconds']:.2f} s, mean decode {c['mean_decode_seconds']:.2f} s")
    print()
    if "session" in r:
        ses = r["session"]
        rss = ses["peak_rss_bytes"]
        print(f"peak RSS of one session (fresh process: gptviz.load from safetensors, warm-up, then gptviz.run of "
              f"all 3 modes, {ses['new_tokens']} tokens) {rss / 1e9:.2f} GB (after loading: "
              f"{ses['peak_rss_after_load_bytes'] / 1e9:.2f} GB, after warm-up: "
              f"{ses['peak_rss_after_warm_up_bytes'] / 1e9:.2f} GB)  target ≤ {RSS_TARGET / 1e9:.1f} GB  "
              f"{_verdict(rss <= RSS_TARGET)}")
    print(f"peak RSS of this benchmark process (plain + instrumented, all repeats, before concurrency) "
          f"{r['peak_rss_bytes'] / 1e9:.2f} GB")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be ≥ 1, got {text!r}")
    return values


def _mode_list(text: str) -> list[str]:
    try:  # in MODES order: recompute modes replay the cached mode's tokens, so it runs first when asked for
        return list(parse_modes(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/bench.py", description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=_int_list, default=[128, 256], help="new tokens, comma-separated (128,256)")
    p.add_argument("--layers", type=int, default=GPT2_SMALL.layers)
    p.add_argument("--heads", type=int, default=GPT2_SMALL.heads)
    p.add_argument("--d-model", type=int, default=GPT2_SMALL.d_model)
    p.add_argument("--vocab", type=int, default=GPT2_SMALL.vocab)
    p.add_argument("--context", type=int, default=GPT2_SMALL.context)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--modes", type=_mode_list, default=list(MODES), help="comma-separated subset of " + ",".join(MODES))
    p.add_argument("--repeats", type=int, default=2, help="interleaved runs per side, recompute modes (2)")
    p.add_argument("--cached-repeats", type=int, default=5, help="interleaved runs per side, cached mode (5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--concurrency", type=lambda t: _int_list(t) if t else [], default=[1, 2, 4],
                   help="simultaneous decodes to measure, comma-separated (1,2,4); empty to skip")
    p.add_argument("--concurrency-tokens", type=int, default=32, help="new tokens per concurrent decode (32)")
    p.add_argument("--bandwidth-mib", type=int, default=256,
                   help="MiB streamed to measure memory bandwidth (256)")
    p.add_argument("--lab-tokens", type=int, default=64,
                   help="new tokens per Cache-lab variant decode (64); 0 to skip the lab variants")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-session-rss", dest="session_rss", action="store_false",
                   help="skip the fresh-process session run that measures peak RSS")
    p.add_argument("--session-only", type=int, default=0, help=argparse.SUPPRESS)  # the child of session_rss
    p.add_argument("--session-dir", default=None, help=argparse.SUPPRESS)  # where session_rss saved the model
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--json-out", default=None, help="also write the JSON document to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.session_only:
        print(json.dumps(_session_only(args)))
        return 0
    if min(args.prompt_tokens, args.repeats, args.cached_repeats, args.concurrency_tokens) < 1:
        build_parser().error("--prompt-tokens, --repeats, --cached-repeats and --concurrency-tokens must be ≥ 1")
    if args.prompt_tokens + max(args.tokens + [args.concurrency_tokens]) > args.context:
        build_parser().error("prompt + new tokens exceed --context")
    results = bench(args)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    if args.json:
        print(json.dumps(results))
    else:
        print_footer(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
