"""One server, many students: a FIFO decode queue and shared results.

Streamlit runs every browser session as a thread of one process. Left alone, thirty students
opening a teacher's link start thirty identical decodes that share the CPU, all finish together,
and every timing they show is wrong. Here a decode is a *job* run by the server's own worker
threads, and sessions only wait for it:

* single flight: jobs are keyed by (model, precision, settings); asking for a key that is queued
  or running joins that job instead of starting another one;
* one queue: at most ``slots`` jobs run at once (from the core count: 1 on 2 cores), the others
  wait in FIFO order, and a waiter can see its place and an estimate of the wait;
* a job whose waiters have all gone (tabs closed, or they asked for something else) is skipped
  when its turn comes, so nobody waits behind it;
* finished results are kept for the next session that asks, oldest evicted first beyond a byte
  budget; ``fresh=True`` (the Run button: new timings) ignores a finished result but still joins
  a job in flight, which is a fresh run too.

Streamlit-free: the app passes the decode as a function, and for each waiting session an id and a
liveness check. Every job started and skipped is logged on the ``gptviz.serve`` logger.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 2**20  # finished results kept for other sessions, by their own size
CORES_PER_SLOT = 4  # one timed decode per 4 cores: 1 on a 2- or 4-core server, 4 on 16 cores
RATE_MEMORY = 0.5  # weight of the newest run in the seconds-per-size estimate (exponential average)


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


def _always_alive() -> bool:
    return True


class Job:
    """One decode, shared by every session that asked for its key; ``future`` holds its result."""

    def __init__(self, key: Hashable, compute: Callable[[Job], Any], size: float, size_kind: Hashable):
        self.key = key
        self.compute = compute  # compute(job) -> result; may call job.report(progress) as it goes
        self.size, self.size_kind = size, size_kind  # for the estimate: seconds ≈ size × learned rate
        self.future: Future = Future()
        self.progress: Any = None  # the latest report(): whatever the compute function describes itself with
        self.queued_at = time.monotonic()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.waiters: dict[Hashable, Callable[[], bool]] = {}  # waiter id -> is it still there?

    def report(self, progress: Any) -> None:
        """Called by the compute function (on the worker thread): what waiters see as progress."""
        self.progress = progress

    @property
    def state(self) -> str:
        if self.future.cancelled():
            return "skipped"
        if self.future.done():
            return "done"
        return "queued" if self.started_at is None else "running"

    def abandoned(self) -> bool:
        """True when no waiter is left to see the result."""
        return not any(alive() for alive in list(self.waiters.values()))

    def result(self, timeout: float | None = None) -> Any:
        """The decode's result (re-raising its error); TimeoutError while still queued or running."""
        return self.future.result(timeout)

    @property
    def queue_seconds(self) -> float:
        """How long it waited for a slot (so far, if still waiting)."""
        return (time.monotonic() if self.started_at is None else self.started_at) - self.queued_at


@dataclass(frozen=True)
class Place:
    """Where a queued job stands: runs that will finish or start before it, and about how long that takes."""

    ahead: int  # running jobs plus queued jobs in front of it
    seconds: float | None  # estimated wait until it starts; None until a run of its kind has been timed

    def describe(self) -> str:
        runs = f"{self.ahead} run{'s' if self.ahead != 1 else ''} ahead of you"
        return runs if self.seconds is None else f"{runs}, about {max(1, round(self.seconds))} s"


class Server:
    """The decode queue and the shared results of one process (one per Streamlit server)."""

    def __init__(self, slots: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 nbytes: Callable[[Any], int] = lambda result: 0):
        self.slots = default_slots() if slots is None else slots
        self.max_bytes = max_bytes
        self.nbytes = nbytes  # size of a finished result, for eviction
        self.decodes = 0  # jobs executed (started), since the server began
        self.skipped = 0  # jobs skipped because every waiter had gone
        self._lock = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._in_flight: dict[Hashable, Job] = {}  # queued or running, by key
        self._done: collections.OrderedDict[Hashable, tuple[Job, int]] = collections.OrderedDict()
        self._rates: dict[Hashable, float] = {}  # seconds per unit of size, by kind
        self._workers: list[threading.Thread] = []

    # ---- what sessions call ------------------------------------------------------------------
    def request(self, key: Hashable, compute: Callable[[Job], Any], *, fresh: bool = False,
                waiter: Hashable | None = None, alive: Callable[[], bool] = _always_alive, size: float = 1.0,
                size_kind: Hashable = None) -> Job:
        """The job for ``key``: a finished one (unless ``fresh``), the one in flight, or a new one queued.

        ``waiter`` (e.g. a session id) waits for one job at a time: asking for another key leaves the
        queued job it waited for before. ``alive()`` says whether the waiter is still there.
        """
        with self._lock:
            if waiter is not None:
                for job in self._queue:
                    if job.key != key:
                        job.waiters.pop(waiter, None)
            job = self._in_flight.get(key)
            if job is None and not fresh and key in self._done:
                self._done.move_to_end(key)  # recently used: evicted last
                return self._done[key][0]
            if job is None:
                job = Job(key, compute, size, size_kind)
                self._in_flight[key] = job
                self._queue.append(job)
                self._start_workers()
                self._lock.notify_all()
            job.waiters[object() if waiter is None else waiter] = alive
            return job

    def leave(self, job: Job, waiter: Hashable) -> None:
        """``waiter`` no longer wants ``job``: a queued job nobody wants is skipped when its turn comes."""
        with self._lock:
            job.waiters.pop(waiter, None)

    def place(self, job: Job) -> Place:
        """How many runs are ahead of a queued ``job`` and the estimated wait until it starts."""
        with self._lock:
            if job.state != "queued":
                return Place(0, 0.0)
            now = time.monotonic()
            ahead, seconds, known = 0, 0.0, True
            for other in self._running:
                ahead += 1
                estimate = self._estimate(other)
                known = known and estimate is not None
                seconds += max(0.0, (estimate or 0.0) - (now - other.started_at))
            for other in self._queue:
                if other is job:
                    break
                if other.abandoned():
                    continue  # it will be skipped
                ahead += 1
                estimate = self._estimate(other)
                known = known and estimate is not None
                seconds += estimate or 0.0
            return Place(ahead, seconds / self.slots if known else None)

    def queued(self) -> int:
        """Jobs waiting for a slot (abandoned ones included until their turn skips them)."""
        with self._lock:
            return len(self._queue)

    def stored_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._done.values())

    def stored_keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._done)

    # ---- the workers ---------------------------------------------------------------------------
    def _start_workers(self) -> None:
        while len(self._workers) < self.slots:
            worker = threading.Thread(target=self._work, name=f"gptviz-decode-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _next(self) -> Job:
        """Block until a job may start; skip the abandoned ones (their futures are cancelled)."""
        with self._lock:
            while True:
                while not self._queue:
                    self._lock.wait()
                job = self._queue.popleft()
                if job.abandoned():
                    self._in_flight.pop(job.key, None)
                    job.future.cancel()
                    self.skipped += 1
                    log.info("gptviz.serve skipped key=%s (nobody waiting) skipped=%d", job.key, self.skipped)
                    continue
                job.started_at = time.monotonic()
                job.future.set_running_or_notify_cancel()
                self._running.append(job)
                self.decodes += 1
                log.info("gptviz.serve decode started decodes_executed=%d waiters=%d queued=%d waited=%.2fs key=%s",
                         self.decodes, len(job.waiters), len(self._queue), job.queue_seconds, job.key)
                return job

    def _work(self) -> None:
        while True:
            job = self._next()
            try:
                result, error = job.compute(job), None
            except BaseException as exc:  # the waiters re-raise it; the worker goes on
                result, error = None, exc
            self._finish(job, result, error)

    def _finish(self, job: Job, result: Any, error: BaseException | None) -> None:
        job.finished_at = time.monotonic()
        seconds = job.finished_at - job.started_at
        with self._lock:
            self._running.remove(job)
            if self._in_flight.get(job.key) is job:
                del self._in_flight[job.key]
            if error is None:
                self._learn(job, seconds)
                try:
                    self._store(job, result)
                except Exception:  # a result that cannot be sized is not kept; its waiters still get it
                    log.exception("gptviz.serve could not store the result of key=%s", job.key)
        log.info("gptviz.serve decode finished in %.2fs %s decodes_executed=%d", seconds,
                 "ok" if error is None else f"error={error.__class__.__name__}", self.decodes)
        # Set last: a waiter woken by the result finds the store and the queue already updated.
        if error is None:
            job.future.set_result(result)
        else:
            job.future.set_exception(error)

    # ---- estimates and the store (under the lock) -----------------------------------------------
    def _estimate(self, job: Job) -> float | None:
        rate = self._rates.get(job.size_kind)
        return None if rate is None else rate * job.size

    def _learn(self, job: Job, seconds: float) -> None:
        rate = seconds / max(job.size, 1e-9)
        old = self._rates.get(job.size_kind)
        self._rates[job.size_kind] = rate if old is None else RATE_MEMORY * rate + (1 - RATE_MEMORY) * old

    def _store(self, job: Job, result: Any) -> None:
        size = int(self.nbytes(result))
        self._done.pop(job.key, None)
        if size > self.max_bytes:
            return  # larger than the whole budget: its waiters get it, later sessions decode again
        self._done[job.key] = (job, size)
        total = sum(s for _, s in self._done.values())
        while total > self.max_bytes:
            _, (_, evicted) = self._done.popitem(last=False)  # least recently used first
            total -= evicted


__all__ = ["CancelledError", "Job", "Place", "Server", "cores", "default_slots", "set_torch_threads"]
