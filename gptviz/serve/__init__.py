"""One server, many students: a decode queue, single flight and shared results.

Streamlit runs every browser session as a thread of one process. Left alone, thirty students
opening a teacher's link start thirty identical decodes that share the CPU, all finish together,
and every timing they show is wrong. Here a decode is a *job* run by the server's own worker
threads, and sessions only wait for it:

* single flight: jobs are keyed by (model, precision, settings); asking for a key that is queued
  or running joins that job instead of starting another one;
* one queue: at most ``slots`` jobs run at once (from the core count: 1 on 2 cores); a waiter can
  see its place and an estimate of the wait. Two priorities: every ``FIRST`` job (a student's first
  result) runs before any ``REFINE`` job (timing passes that only refine a result already on screen),
  and a running refinement steps aside at its next step boundary (``Job.checkpoint``) while a first
  result waits, so a refinement never delays anyone's first result by more than one step;
* a job whose waiters have all gone (tabs closed, or they asked for something else) is skipped when
  its turn comes, and a refinement nobody waits for any more is dropped at its next checkpoint;
* finished results are kept for the next session that asks, oldest evicted first beyond a byte
  budget; ``fresh=True`` (the Run button: new timings) ignores a finished result but still joins
  a job in flight, which is a fresh run too.

Streamlit-free: the app passes the decode as a task (gptviz/serve/tasks.py), and for each waiting session
an id and a liveness check. Every job started, finished, skipped or dropped is logged on the ``gptviz.serve``
logger, one line each (``decode started`` / ``decode finished in X s`` for first results, ``refine
…`` for refinements), which is how the load test counts decodes.

Two implementations of one interface (``Backend`` below), run against one test suite (tests/test_serve.py):
gptviz/serve/memory.py, in this process (the default: nothing else to run), and gptviz/serve/redis.py, shared
by every replica of the app through Redis and decoded by worker processes (``python -m gptviz worker``),
chosen by ``GPTVIZ_REDIS_URL=redis://host:port/db`` (``connect``). What a job runs is a task
(gptviz/serve/tasks.py): callable here, or rebuilt by a worker from its kind and JSON arguments.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from gptviz.hosting import REDIS_URL as REDIS_URL_ENV  # the one home of every GPTVIZ_* name

DEFAULT_MAX_BYTES = 256 * 2**20  # finished results kept for other sessions, by their own size
CORES_PER_SLOT = 4  # one timed decode per 4 cores: 1 on a 2- or 4-core server, 4 on 16 cores
RATE_MEMORY = 0.5  # weight of the newest run in the seconds-per-size estimate (exponential average)
FIRST, REFINE = 0, 1  # job priorities: a student's first result, then timing refinements (lower runs first)


class Dropped(CancelledError):
    """A refinement stopped at a checkpoint because nobody waits for it any more."""


class Unavailable(RuntimeError):
    """The shared queue cannot be reached (Redis down or unreachable); the message says what to do."""


def key_id(key: Hashable) -> str:
    """A request key as a short stable string, the same in every process (keys are tuples of plain values and
    frozen dataclasses, whose repr is deterministic)."""
    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


def cores() -> int:
    """CPU cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_slots(n_cores: int | None = None) -> int:
    """Decodes timed at once: few enough that each has the cores its timings assume."""
    return max(1, (cores() if n_cores is None else n_cores) // CORES_PER_SLOT)


_threads_lock = threading.Lock()
_threads_set: int | None = None


def set_torch_threads(slots: int) -> int:
    """Give each of ``slots`` concurrent decodes an equal share of the cores, once per process.

    torch's thread count is process-wide: sessions setting it as they go would change each other's
    timings mid-run. OMP_NUM_THREADS, when the operator set it, wins. Returns the count in force.
    """
    global _threads_set
    with _threads_lock:
        if _threads_set is None:
            if not os.environ.get("OMP_NUM_THREADS"):
                torch.set_num_threads(max(1, cores() // slots))
            _threads_set = torch.get_num_threads()
        return _threads_set


def use_threads(count: int) -> None:
    """Give the calling thread ``count`` torch threads, for good. torch sets a thread's count from the process-wide
    value at the thread's first use (``get_num_threads`` included), which another job may have changed meanwhile;
    so that happens first, then the count. A job's decoders run in its thread (gptviz/lockstep.py)."""
    torch.get_num_threads()
    torch.set_num_threads(count)


GIL_SWITCH_SECONDS = 1e-4  # how long a thread may hold the GIL while another asks (CPython's default: 5e-3)


def share_the_gil_often() -> None:
    """Let a decode thread take the GIL back soon from sessions drawing pages in the same process.

    A decode gives up the GIL for every torch op (microseconds each) and must take it back from whichever thread
    holds it then; CPython lets that thread keep it for up to the switch interval. Beside one busy Python thread,
    a bundled first pass took over 200× as long at CPython's 5 ms (scripts/measure_threads.py); beside a class's page
    draws, it times every mode slower by about the same amount, which squeezes the speed-up a student sees.
    """
    sys.setswitchinterval(GIL_SWITCH_SECONDS)


FEWER_THREADS_GAIN = 0.9  # fewer threads are chosen only if they decode in at most this fraction of the time
THREAD_SECONDS, THREAD_ROUNDS = 0.5, 10  # fastest_threads times rounds of every count until either is spent


def thread_counts(most: int) -> list[int]:
    """The counts ``fastest_threads`` chooses from: ``most``, then its halvings down to 1 (``[4, 2, 1]``)."""
    counts = [most]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return counts


def fastest_threads(model, tokenizer, most: int | None = None) -> int:
    """The torch thread count, of ``most`` (the count in force) and its halvings down to 1, that decodes ``model``
    fastest on this machine: a short first pass timed with each in turn, the best of each count's rounds.

    Whether splitting a model's ops across cores pays depends on the model and the machine: measured here, not
    assumed (scripts/measure_threads.py). The fewer threads win only by a clear margin (``FEWER_THREADS_GAIN``), so
    noise keeps the count in force. OMP_NUM_THREADS, when the operator set it, wins. Leaves this thread at ``most``.
    """
    from gptviz.decoding import DecodeSettings, start  # gptviz.decoding does not import the server

    most = torch.get_num_threads() if most is None else most
    counts = thread_counts(most)
    if len(counts) == 1 or os.environ.get("OMP_NUM_THREADS"):
        return most
    settings = DecodeSettings(max_new_tokens=4, timed_passes=1)
    best = dict.fromkeys(counts, float("inf"))
    began, rounds = time.perf_counter(), 0
    try:  # two rounds at least; more, up to half a second in all, where a pass is short enough that noise would decide
        while rounds < 2 or (rounds < THREAD_ROUNDS and time.perf_counter() - began < THREAD_SECONDS):
            rounds += 1
            for n in counts:
                use_threads(n)  # this thread's count: the decode runs in it
                started = time.perf_counter()
                start(model, tokenizer, "Warm up.", settings)
                best[n] = min(best[n], time.perf_counter() - started)
    finally:
        use_threads(most)
    chosen = fewest_fast_threads(best)
    timed = ", ".join(f"{n}: {seconds:.3f} s" for n, seconds in best.items())
    logging.getLogger(__name__).info("gptviz.serve %s decodes with %d torch thread(s) (a short first pass took %s)",
                                     model.config.name_or_path or "the model", chosen, timed)
    return chosen


def fewest_fast_threads(seconds: dict[int, float]) -> int:
    """The choice of ``fastest_threads`` from a decode's best time with each count (the count in force first, then
    its halvings): going down, each halving must beat the count above it by the margin, or the descent stops."""
    counts = list(seconds)
    chosen = counts[0]
    for n in counts[1:]:
        if seconds[n] > FEWER_THREADS_GAIN * seconds[chosen]:
            break
        chosen = n
    return chosen


@dataclass(frozen=True)
class Place:
    """Where a queued job stands: runs that will finish or start before it, and about how long that takes."""

    ahead: int  # running jobs plus queued jobs in front of it
    seconds: float | None  # estimated wait until it starts; None until a run of its kind has been timed

    def describe(self) -> str:
        return self.runs() if self.seconds is None else f"{self.runs()}, about {max(1, round(self.seconds))} s"

    def runs(self) -> str:
        """"2 runs ahead of you"."""
        return f"{self.ahead} run{'s' if self.ahead != 1 else ''} ahead of you"


class Task(Protocol):
    """What a job runs: ``task(job)`` in a process that holds what it needs. ``kind`` names it for a worker
    process (gptviz/serve/tasks.py KINDS; None: it runs only where it was asked for), ``wire()`` gives the
    JSON-able arguments a worker rebuilds it from. A plain function is a task of no kind."""

    kind: str | None

    def __call__(self, job: JobHandle) -> Any: ...

    def wire(self) -> dict: ...


class JobHandle(Protocol):
    """One job as the sessions that wait for it, and the task that runs it, see it."""

    key: Hashable
    progress: Any  # the latest report() of its task, or None

    @property
    def state(self) -> str: ...  # "queued" | "running" | "paused" | "done" | "skipped"

    @property
    def queue_seconds(self) -> float: ...  # how long it waited for a slot (so far)

    def waiting(self) -> int: ...  # sessions waiting for it (every replica's)

    def result(self, timeout: float | None = None) -> Any: ...  # TimeoutError while queued or running

    def report(self, progress: Any) -> None: ...  # from the task: what waiters see as progress

    def checkpoint(self) -> None: ...  # from the task between steps: step aside, or raise Dropped


class Backend(Protocol):
    """The queue, single flight and the result store, as the app uses them (see the module's docstring)."""

    slots: int  # decodes timed at once (per worker process, for Redis)

    def request(self, key: Hashable, task: Task | Callable[[JobHandle], Any], *, fresh: bool = False,
                waiter: Hashable | None = None, alive: Callable[[], bool] = ..., size: float = 1.0,
                size_kind: Hashable = None, priority: int = FIRST) -> JobHandle: ...

    def finished(self, key: Hashable) -> JobHandle | None: ...

    def leave(self, job: JobHandle, waiter: Hashable) -> None: ...

    def place(self, job: JobHandle) -> Place: ...

    def close(self, timeout: float = 30.0) -> None: ...


from gptviz.serve.memory import Job, Server  # noqa: E402  (the in-process implementation, the default)


def connect(url: str | None = None, **kwargs) -> Backend:
    """The backend this process uses: Redis at ``url`` (default: $GPTVIZ_REDIS_URL), else in-process.

    An unreachable Redis raises Unavailable: falling back to this process alone would split a class across
    replicas, each decoding and timing on its own, which is what Redis is there to prevent."""
    url = os.environ.get(REDIS_URL_ENV, "") if url is None else url
    if not url.strip():
        return Server(**kwargs)
    from gptviz.serve import redis  # needs redis-py; only when asked for

    return redis.Server(url.strip(), **kwargs)


__all__ = ["DEFAULT_MAX_BYTES", "FIRST", "REDIS_URL_ENV", "REFINE", "Backend", "CancelledError", "Dropped", "Job",
           "JobHandle", "Place", "Server", "Task", "Unavailable", "connect", "cores", "default_slots", "key_id",
           "fastest_threads", "fewest_fast_threads", "set_torch_threads", "share_the_gil_often", "use_threads",
           "thread_counts"]
