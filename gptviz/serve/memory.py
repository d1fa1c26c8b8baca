"""The in-process decode queue and result store: one per Streamlit server (see gptviz/serve/__init__.py)."""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

from gptviz.serve import DEFAULT_MAX_BYTES, FIRST, RATE_MEMORY, Dropped, Place, default_slots

log = logging.getLogger("gptviz.serve")


def _always_alive() -> bool:
    return True


class Job:
    """One decode, shared by every session that asked for its key; ``future`` holds its result."""

    def __init__(self, server: Server, key: Hashable, compute: Callable[[Job], Any], size: float, size_kind: Hashable,
                 priority: int):
        self.key = key
        self.compute = compute  # compute(job) -> result; may call job.report(progress) and job.checkpoint()
        self.size, self.size_kind = size, size_kind  # for the estimate: seconds ≈ size × learned rate
        self.priority = priority  # FIRST or REFINE: lower runs first
        self.future: Future = Future()
        self.progress: Any = None  # the latest report(): whatever the compute function describes itself with
        self.queued_at = time.monotonic()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.paused_seconds = 0.0  # time spent stepped aside for first results (not part of its own cost)
        self.paused = False
        self.waiters: dict[Hashable, Callable[[], bool]] = {}  # waiter id -> is it still there?
        self._server = server

    def report(self, progress: Any) -> None:
        """Called by the compute function (on the job's thread): what waiters see as progress."""
        self.progress = progress

    def checkpoint(self) -> None:
        """Called by the compute function between steps: a refinement steps aside here while a first result
        waits, and stops (raising Dropped) when nobody waits for it any more. A first result never pauses."""
        self._server._checkpoint(self)

    @property
    def state(self) -> str:
        if self.future.cancelled():
            return "skipped"
        if self.future.done():
            return "done"
        if self.started_at is None:
            return "queued"
        return "paused" if self.paused else "running"

    def waiting(self) -> int:
        """Sessions waiting for it (a closed tab still counts until the queue next looks)."""
        return len(self.waiters)

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


class Server:
    """The decode queue and the shared results of one process (one per Streamlit server)."""

    def __init__(self, slots: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 nbytes: Callable[[Any], int] = lambda result: 0):
        self.slots = default_slots() if slots is None else slots
        self.max_bytes = max_bytes
        self.nbytes = nbytes  # size of a finished result, for eviction
        self.decodes = 0  # first-result jobs executed (started), since the server began
        self.refines = 0  # refinement jobs executed (started)
        self.skipped = 0  # jobs skipped or dropped because every waiter had gone
        self._lock = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._paused: list[Job] = []  # refinements stepped aside for first results, in the order they paused
        self._in_flight: dict[Hashable, Job] = {}  # queued, running or paused, by key
        self._done: collections.OrderedDict[Hashable, tuple[Job, int]] = collections.OrderedDict()
        self._rates: dict[Hashable, float] = {}  # seconds per unit of size, by kind
        self._workers: list[threading.Thread] = []
        self._closing = False
        atexit.register(self.close)  # a decode left running in a daemon thread at exit aborts the process (torch)

    def close(self, timeout: float = 30.0) -> None:
        """Stop: queued jobs are cancelled, running ones stop at their next checkpoint; wait for them (bounded)."""
        with self._lock:
            self._closing = True
            for job in self._queue:
                job.future.cancel()
            self._queue.clear()
            self._lock.notify_all()
            self._lock.wait_for(lambda: not self._running and not self._paused, timeout)

    # ---- what sessions call ------------------------------------------------------------------
    def request(self, key: Hashable, compute: Callable[[Job], Any], *, fresh: bool = False,
                waiter: Hashable | None = None, alive: Callable[[], bool] = _always_alive, size: float = 1.0,
                size_kind: Hashable = None, priority: int = FIRST) -> Job:
        """The job for ``key``: a finished one (unless ``fresh``), the one in flight, or a new one queued.

        ``waiter`` (e.g. a session id) waits for one job at a time: asking for another key leaves every other
        job it waited for (a queued one is then skipped, a refinement dropped, if nobody else waits).
        ``alive()`` says whether the waiter is still there.
        """
        with self._lock:
            if waiter is not None:
                for job in self._in_flight.values():
                    if job.key != key:
                        job.waiters.pop(waiter, None)
            job = self._in_flight.get(key)
            if job is None and not fresh and key in self._done:
                self._done.move_to_end(key)  # recently used: evicted last
                return self._done[key][0]
            if job is None:
                job = Job(self, key, compute, size, size_kind, priority)
                self._in_flight[key] = job
                self._queue.append(job)
                self._start_workers()
                self._lock.notify_all()
            job.waiters[object() if waiter is None else waiter] = alive
            return job

    def finished(self, key: Hashable) -> Job | None:
        """The stored job of ``key`` if one finished (and was kept), else None; queues nothing."""
        with self._lock:
            entry = self._done.get(key)
            return None if entry is None else entry[0]

    def leave(self, job: Job, waiter: Hashable) -> None:
        """``waiter`` no longer wants ``job``: a queued job nobody wants is skipped when its turn comes."""
        with self._lock:
            job.waiters.pop(waiter, None)

    def place(self, job: Job) -> Place:
        """How many runs are ahead of a queued ``job`` and the estimated wait until it starts.

        A running refinement does not count before a first result: it steps aside at its next step."""
        with self._lock:
            if job.state != "queued":
                return Place(0, 0.0)
            now = time.monotonic()
            queue = list(self._queue)
            mine = queue.index(job)
            before = [(other, now - other.started_at - other.paused_seconds)  # (job, seconds it has run)
                      for other in self._running + self._paused if other.priority <= job.priority]
            before += [(other, 0.0) for i, other in enumerate(queue) if not other.abandoned() and (
                other.priority < job.priority or (other.priority == job.priority and i < mine))]
            estimates = [(self._estimate(other), ran) for other, ran in before]
            known = all(estimate is not None for estimate, _ in estimates)
            seconds = sum(max(0.0, (estimate or 0.0) - ran) for estimate, ran in estimates)
            return Place(len(before), seconds / self.slots if known else None)

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
        # Two threads a slot: a refinement that stepped aside keeps its thread while a first result takes the slot.
        while len(self._workers) < 2 * self.slots:
            worker = threading.Thread(target=self._work, name=f"gptviz-decode-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _startable(self) -> Job | None:
        """The next job to start (under the lock): the first queued job of the most urgent priority, if a slot
        is free; a refinement only while no paused refinement waits to resume (that one goes first)."""
        if len(self._running) >= self.slots or not self._queue:
            return None
        job = min(self._queue, key=lambda j: j.priority)  # min keeps the first of equals: FIFO within a priority
        if job.priority > FIRST and self._paused:
            return None
        return job

    def _next(self) -> Job:
        """Block until a job may start; skip the abandoned ones (their futures are cancelled)."""
        with self._lock:
            while True:
                job = None if self._closing else self._startable()
                if job is None:
                    self._lock.wait()
                    continue
                self._queue.remove(job)
                if job.abandoned():
                    self._in_flight.pop(job.key, None)
                    job.future.cancel()
                    self.skipped += 1
                    log.info("gptviz.serve skipped key=%s (nobody waiting) skipped=%d", job.key, self.skipped)
                    continue
                job.started_at = time.monotonic()
                job.future.set_running_or_notify_cancel()
                self._running.append(job)
                if job.priority == FIRST:
                    self.decodes += 1
                    log.info("gptviz.serve decode started decodes_executed=%d waiters=%d queued=%d waited=%.2fs "
                             "key=%s", self.decodes, len(job.waiters), len(self._queue), job.queue_seconds, job.key)
                else:
                    self.refines += 1
                    log.info("gptviz.serve refine started refines_executed=%d waiters=%d queued=%d waited=%.2fs "
                             "key=%s", self.refines, len(job.waiters), len(self._queue), job.queue_seconds, job.key)
                return job

    def _work(self) -> None:
        # A job computes in a thread of its own that ends with it. torch's OpenMP pool belongs to the thread that
        # runs an op and lives as long as that thread; while two pools live (this slot's two workers) on a machine
        # with no core to spare, GNU OpenMP stops spinning between ops and every forward pass is slower (figures:
        # gptviz/lockstep.py). So a pool lives only while its job does: two at once only while a paused
        # refinement waits for a first result.
        while True:
            job = self._next()
            compute = threading.Thread(target=self._compute, args=(job,), daemon=True,
                                       name=f"{threading.current_thread().name}-job")
            compute.start()
            compute.join()

    def _compute(self, job: Job) -> None:
        try:
            result, error = job.compute(job), None
        except BaseException as exc:  # the waiters re-raise it; the worker goes on
            result, error = None, exc
        self._finish(job, result, error)

    def _first_waiting(self, job: Job) -> bool:
        return any(o.priority < job.priority and not o.abandoned() for o in self._queue)

    def _checkpoint(self, job: Job) -> None:
        with self._lock:
            if self._closing:
                raise Dropped("the server is stopping")
            if job.priority == FIRST:
                return
            if job.abandoned():
                raise Dropped(f"nobody waits for {job.key!r} any more")
            if not self._first_waiting(job):
                return
            paused_at = time.monotonic()
            self._running.remove(job)
            self._paused.append(job)
            job.paused = True
            self._lock.notify_all()  # a worker may start the first result now
            log.info("gptviz.serve refine paused for a first result key=%s", job.key)
            self._lock.wait_for(lambda: (not self._first_waiting(job) and len(self._running) < self.slots
                                         and self._paused[0] is job) or job.abandoned() or self._closing)
            self._paused.remove(job)
            self._running.append(job)
            job.paused = False
            job.paused_seconds += time.monotonic() - paused_at
            self._lock.notify_all()
            if job.abandoned() or self._closing:
                raise Dropped(f"nobody waits for {job.key!r} any more")

    def _finish(self, job: Job, result: Any, error: BaseException | None) -> None:
        job.finished_at = time.monotonic()
        seconds = job.finished_at - job.started_at - job.paused_seconds
        word = "decode" if job.priority == FIRST else "refine"
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
            elif isinstance(error, Dropped):
                self.skipped += 1
            self._lock.notify_all()  # a slot is free
        outcome = "ok" if error is None else "dropped (nobody waiting)" if isinstance(error, Dropped) \
            else f"error={error.__class__.__name__}"
        log.info("gptviz.serve %s finished in %.2fs %s decodes_executed=%d", word, seconds, outcome, self.decodes)
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
