"""``python -m gptviz worker``: decode the jobs every replica of the app queues in Redis ($GPTVIZ_REDIS_URL).

Loads each model once (the first job that needs it), runs ``--slots`` jobs at a time (default: from its cores,
as the in-process server does), logs one ``gptviz.serve decode started`` / ``… finished in X s`` line per job,
and runs until stopped (Ctrl-C or SIGTERM: a job it was running stays pending and another worker takes it over).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from gptviz.arguments import UsageError, positive_int, threads


def add_parser(commands) -> None:
    p = commands.add_parser("worker", help="decode the jobs the app's replicas queue in Redis ($GPTVIZ_REDIS_URL)")
    p.add_argument("--redis", default=None, help="redis://host:port/db (default: $GPTVIZ_REDIS_URL)")
    p.add_argument("--slots", type=positive_int, default=None,
                   help="jobs run at once (default: one per 4 cores, as the app's own server)")
    p.add_argument("--threads", type=threads, default=None,
                   help="torch CPU threads in all (default: the cores, shared equally by the slots)")
    p.add_argument("--seconds", type=positive_int, default=None, help="stop after this long (default: run on)")


def command(args: argparse.Namespace) -> int:
    from gptviz import serve

    url = args.redis if args.redis is not None else os.environ.get(serve.REDIS_URL_ENV, "")
    if not url.strip():
        raise UsageError(f"no Redis to take jobs from: set {serve.REDIS_URL_ENV}=redis://host:port/db or pass --redis")
    from gptviz.serve import redis as shared

    log = logging.getLogger(serve.__name__)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        worker = shared.Worker(url.strip(), slots=args.slots)
    except serve.Unavailable as exc:
        raise UsageError(str(exc)) from None
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
        used = args.threads
    else:
        used = serve.set_torch_threads(worker.slots)
    log.info("gptviz.serve worker: %d slot(s), %d torch thread(s) in all", worker.slots, used)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from gptviz.lab import quanto

    quanto.warm_in_background()  # the Cache lab's int4/int2 kernel, built once here as the app does (app.py)
    worker.start()
    try:
        stop.wait(args.seconds)
    except KeyboardInterrupt:
        pass
    worker.stop()
    log.info("gptviz.serve worker %s stopped: %d decode(s), %d refinement(s) run here", worker.name,
             worker.decodes, worker.refines)
    return 0
