"""What a decode costs with each torch thread count, alone and beside a busy Python thread in the same process.

``python scripts/measure_threads.py [--source bundled] [--tokens 24]`` — the README's "Threads per decode" table.
A first pass (``gptviz.start``: cached + recompute, attention recorded), best of ``--reps``:

* alone, with each thread count from the machine's share (``serve.set_torch_threads``) down to 1: what
  ``serve.fastest_threads`` chooses from;
* with the machine's share while a second, idle thread holds a torch OpenMP pool of its own ("a second thread's
  pool": why decoders run in their caller's thread, gptviz/lockstep.py);
* beside one Python thread that never sleeps (a page being drawn, in the Streamlit process), at CPython's default
  switch interval and at ``serve.GIL_SWITCH_SECONDS`` (``serve.share_the_gil_often``).

Prints seconds and ratios; judges nothing. At the default interval a pass can take minutes: ``--tokens`` bounds it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gptviz  # noqa: E402
from gptviz import serve  # noqa: E402
from gptviz.decoding import DecodeSettings, warm_up  # noqa: E402

PROMPT = "ROMEO.\nBut soft, what light through yonder window breaks?"  # the app's first preset


def first_pass_seconds(lm, settings: DecodeSettings, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        gptviz.start(lm.model, lm.tokenizer, PROMPT, settings)
        best = min(best, time.perf_counter() - started)
    return best


def beside_a_busy_thread(lm, settings: DecodeSettings, reps: int, interval: float) -> float:
    stop = threading.Event()

    def busy() -> None:  # pure Python, never sleeping: it holds the GIL whenever the decode lets go of it
        while not stop.is_set():
            sum(i * i for i in range(1000))

    default = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        return first_pass_seconds(lm, settings, reps)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(default)


def beside_a_second_pool(lm, settings: DecodeSettings, reps: int, threads: int) -> float:
    """A first pass while another live thread holds a torch OpenMP pool of its own, idle (as a decoder thread per
    mode did, and a decode queue's second worker per slot: gptviz/lockstep.py, gptviz/serve/memory.py)."""
    made, stop = threading.Event(), threading.Event()

    def other() -> None:
        serve.use_threads(threads)
        torch.ones(1 << 22).sum()  # a parallel op: this thread's pool exists from now until the thread ends
        made.set()
        stop.wait()

    thread = threading.Thread(target=other, daemon=True)
    thread.start()
    if not made.wait(60):
        raise RuntimeError("the second thread did not make its pool")
    try:
        return first_pass_seconds(lm, settings, reps)
    finally:
        stop.set()
        thread.join()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="bundled", help="bundled, a Hub id or a local directory")
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-gil", dest="gil", action="store_false",
                   help="skip the busy-thread part (at the default switch interval it takes minutes)")
    args = p.parse_args(argv)
    most = serve.set_torch_threads(serve.default_slots())
    lm = gptviz.load(args.source)
    warm_up(lm.model, lm.tokenizer)
    settings = DecodeSettings(max_new_tokens=args.tokens, timed_passes=1)
    counts = serve.thread_counts(most)
    print(f"{lm.name}, {args.tokens} new tokens, first pass, best of {args.reps}; {serve.cores()} cores")
    alone = {}
    for n in counts:
        serve.use_threads(n)
        alone[n] = first_pass_seconds(lm, settings, args.reps)
        print(f"  {n} torch thread(s), alone: {alone[n]:.3f} s ({alone[n] / alone[most]:.2f}× {most} threads)")
    if most > 1:
        serve.use_threads(most)  # the loop above left this thread at 1
        second = beside_a_second_pool(lm, settings, args.reps, most)
        print(f"  {most} torch threads beside a second thread's pool (idle): {second:.3f} s "
              f"({second / alone[most]:.2f}× alone)")
    chosen = serve.fastest_threads(lm.model, lm.tokenizer, most)
    print(f"  serve.fastest_threads chooses {chosen}")
    serve.use_threads(chosen)
    for interval in (sys.getswitchinterval(), serve.GIL_SWITCH_SECONDS) if args.gil else ():
        busy = beside_a_busy_thread(lm, settings, 1 if interval > 1e-3 else args.reps, interval)
        print(f"  {chosen} thread(s) beside a busy Python thread, switch interval {interval * 1e3:g} ms: "
              f"{busy:.3f} s ({busy / alone[chosen]:.1f}× alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
