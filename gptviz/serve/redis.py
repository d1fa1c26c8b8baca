"""The decode queue and result store shared through Redis: every replica of the app asks, worker processes decode.

The same interface as gptviz/serve/memory.py (``Backend``), for a course that outgrows one server. Chosen by
``GPTVIZ_REDIS_URL``; replicas only ask and wait, ``Worker`` processes (``python -m gptviz worker``) run the
jobs. Each fact has one home in Redis (keys under ``gptviz:``):

* ``job:<jid>`` (a hash): the job's key id, kind, JSON arguments, priority, size, state and times;
* ``inflight:<kid>`` → the job in flight for a request key: single flight, wherever the request comes from
  (created atomically with the job by one Lua script, so two replicas asking at once start one job);
* two Streams, ``stream:first`` and ``stream:refine``, read by the consumer group ``workers``: a job whose
  worker died stays pending and is claimed again (XAUTOCLAIM) once its worker's heartbeat stops; a job is
  finished by one Lua script that refuses a second finish, so it finishes exactly once;
* ``queued`` (a sorted set by priority, then arrival): places and estimates, for every replica alike;
* ``waiters:<jid>`` (a sorted set of heartbeats): each replica refreshes its live sessions every second; a job
  with no fresh heartbeat is abandoned (skipped when its turn comes; a refinement is dropped);
* ``out:<jid>`` the result bytes, ``stored:<kid>`` → the job whose result later requests get, with a TTL and
  a byte budget (least recently used evicted first).

Results and progress cross processes in the safe format of gptviz/serve/codec.py (JSON and arrays): a store
reachable over the network never unpickles anything. Tasks without a kind (a plain function, e.g. a lab) run
on this replica's own in-process queue (``local``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import redis

from gptviz.serve import (
    DEFAULT_MAX_BYTES,
    FIRST,
    RATE_MEMORY,
    REDIS_URL_ENV,
    REFINE,
    CancelledError,
    Dropped,
    Place,
    Unavailable,
    default_slots,
    key_id,
    memory,
)

log = logging.getLogger("gptviz.serve")

PREFIX = "gptviz:"
GROUP = "workers"  # the Streams consumer group every worker reads through
STREAMS = {FIRST: PREFIX + "stream:first", REFINE: PREFIX + "stream:refine"}  # first results are read first
RESULT_TTL = 3600  # seconds a stored result is kept for later sessions (besides the byte budget)
WAIT_TTL = 600  # seconds a result too large for the budget is kept for the sessions that waited for it
HEARTBEAT = 1.0  # seconds between a replica's refresh of its sessions' waits, and a worker's of its jobs
WAITER_TTL = 6.0  # a wait not refreshed for this long is gone (its replica died, or every tab closed)
CLAIM_IDLE = 10.0  # seconds without a worker's heartbeat before another worker takes its job over
POLL = 0.1  # seconds between a waiting session's looks at its job
MAX_DELIVERIES = 3  # a job that took this many workers down with it ends with an error instead
TERMINAL = ("done", "error", "skipped")
TIMEOUTS = dict(socket_connect_timeout=2.0, socket_timeout=5.0)  # a lost Redis is noticed within seconds
ERRORS = (redis.ConnectionError, redis.TimeoutError)

# Create-or-join, atomically: the job in flight for this key, or (unless fresh) the stored one, or a new one; the
# asking session is a waiter of it from the same moment (a worker never finds a new job with nobody waiting).
_REQUEST = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local state = redis.call('HGET', ARGV[5] .. 'job:' .. cur, 'state')
  if state == 'queued' or state == 'running' or state == 'paused' then
    if ARGV[7] ~= '' then redis.call('ZADD', ARGV[5] .. 'waiters:' .. cur, ARGV[4], ARGV[7]) end
    return {'join', cur}
  end
end
if ARGV[2] == '0' then
  local done = redis.call('GET', KEYS[2])
  if done and redis.call('EXISTS', ARGV[5] .. 'out:' .. done) == 1 then
    redis.call('ZADD', ARGV[5] .. 'stored', ARGV[4], ARGV[8])  -- recently used: evicted last
    return {'done', done}
  end
end
local jid = ARGV[1]
if ARGV[7] ~= '' then redis.call('ZADD', ARGV[5] .. 'waiters:' .. jid, ARGV[4], ARGV[7]) end  -- before a worker looks
redis.call('SET', KEYS[1], jid)
redis.call('HSET', ARGV[5] .. 'job:' .. jid, unpack(cjson.decode(ARGV[6])))
redis.call('ZADD', ARGV[5] .. 'queued', ARGV[3], jid)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100000', '*', 'job', jid)
return {'new', jid}
"""

# Finish once: the first worker to finish a job records it; a second (a job claimed from a worker that was only
# slow, not dead) is refused. KEYS: job hash, inflight key. ARGV: jid, state, JSON fields, time.
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' or state == 'error' or state == 'skipped' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], unpack(cjson.decode(ARGV[3])))
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', ARGV[5] .. 'queued', ARGV[1])
redis.call('ZREM', ARGV[5] .. 'running', ARGV[1])
return 1
"""


def _key(*parts: str) -> str:
    """A Redis key of gptviz's: ``_key("job", jid)`` is ``gptviz:job:<jid>``."""
    return PREFIX + ":".join(parts)


def _live_waiters(client: redis.Redis, jid: str) -> int:
    """Waiters of ``jid`` whose heartbeat is fresh (any replica's)."""
    return int(client.zcount(_key("waiters", jid), time.time() - WAITER_TTL, "+inf"))


def connect(url: str) -> redis.Redis:
    """A client for ``url``, checked now: Unavailable with one clear line when nobody answers there (no
    fallback to this process alone: see gptviz.serve.connect)."""
    try:
        client = redis.Redis.from_url(url, **TIMEOUTS, health_check_interval=10)
        client.ping()
    except ValueError as exc:  # not a redis:// URL
        raise Unavailable(f"{REDIS_URL_ENV}={url!r} is not a Redis URL ({exc}): use redis://host:port/db.") from None
    except (*ERRORS, redis.RedisError) as exc:
        raise Unavailable(f"Redis at {url} does not answer ({exc}): start it or correct {REDIS_URL_ENV} (unset, "
                          "the app decodes on its own server alone).") from None
    return client


def _gone(url: str, exc: Exception) -> Unavailable:
    return Unavailable(f"the shared queue (Redis at {url}) stopped answering ({exc.__class__.__name__}): the "
                       "run cannot be followed. Try again in a minute.")


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class _Decoded:
    """Results decoded once per process, shared by every session showing them (a class of thirty decodes one
    copy, and the figures cached per result object are then built once)."""

    def __init__(self, size: int = 8):
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock, self._size = threading.Lock(), size

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            value = self._items.setdefault(key, value)  # another thread's copy, if it was quicker
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


class Job:
    """A job in Redis as a replica's sessions see it (the JobHandle of gptviz/serve/__init__.py)."""

    def __init__(self, server: Server, key: Hashable, jid: str, kind: str):
        self.key, self.jid, self.kind = key, jid, kind
        self._server = server

    def _field(self, name: str) -> str | None:
        return _text(self._server._call(self._server.client.hget, self._server.k("job", self.jid), name))

    @property
    def state(self) -> str:
        state = self._field("state")
        if state is None:  # the job's record expired: as good as skipped (ask again)
            return "skipped"
        return "done" if state == "error" else state

    @property
    def queue_seconds(self) -> float:
        queued, started = (self._server._call(self._server.client.hmget, self._server.k("job", self.jid),
                                              "queued_at", "started_at"))
        end = time.time() if started is None else float(started)
        return max(0.0, end - float(queued or end))

    @property
    def progress(self) -> Any:
        return self._server._progress(self)

    @property
    def paused_seconds(self) -> float:
        """Time its worker spent on first results while this refinement stepped aside."""
        return float(self._field("paused_seconds") or 0.0)

    def waiting(self) -> int:
        return self._server._waiting(self.jid)

    def __eq__(self, other: object) -> bool:  # handles are made per request: the same job is the same jid
        return isinstance(other, Job) and other.jid == self.jid

    def __hash__(self) -> int:
        return hash(self.jid)

    def result(self, timeout: float | None = None) -> Any:
        return self._server._result(self, timeout)

    def report(self, progress: Any) -> None:
        raise RuntimeError("a replica's job is run by a worker process: only the worker reports progress")

    def checkpoint(self) -> None:
        raise RuntimeError("a replica's job is run by a worker process")


class Server:
    """What one replica of the app uses: requests, waits and places in Redis; local tasks on its own queue."""

    def __init__(self, url: str, slots: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 nbytes: Callable[[Any], int] = lambda result: 0, kinds: Mapping[str, Any] | None = None,
                 local: memory.Server | None = None):
        from gptviz.serve import tasks  # the kinds a worker runs (torch, transformers): only when asked for

        self.url = url
        self.client = connect(url)
        self.kinds = tasks.KINDS if kinds is None else kinds
        self.max_bytes = max_bytes  # the budget of every replica's stored results together (workers enforce it)
        self.local = local or memory.Server(slots=slots, max_bytes=max_bytes, nbytes=nbytes)  # tasks of no kind
        self.slots = self.local.slots
        self._waits: dict[str, dict[Hashable, Callable[[], bool]]] = {}  # jid -> this replica's waiters
        self._waits_lock = threading.Lock()
        self._decoded = _Decoded()
        self._closing = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="gptviz-redis-waiters", daemon=True)
        self._beat.start()

    k = staticmethod(_key)

    def _call(self, method: Callable, *args, **kwargs) -> Any:
        try:
            return method(*args, **kwargs)
        except ERRORS as exc:
            raise _gone(self.url, exc) from None

    def close(self, timeout: float = 30.0) -> None:
        self._closing.set()
        self.local.close(timeout)
        self.client.close()

    # ---- what sessions call ------------------------------------------------------------------
    def request(self, key: Hashable, task: Any, *, fresh: bool = False, waiter: Hashable | None = None,
                alive: Callable[[], bool] = lambda: True, size: float = 1.0, size_kind: Hashable = None,
                priority: int = FIRST) -> Any:
        kind = getattr(task, "kind", None)
        if kind is None:  # only this process can run it
            return self.local.request(key, task, fresh=fresh, waiter=waiter, alive=alive, size=size,
                                      size_kind=size_kind, priority=priority)
        if kind not in self.kinds:
            raise ValueError(f"no worker runs tasks of kind {kind!r} (known: {', '.join(sorted(self.kinds))})")
        kid, jid, now = key_id(key), uuid.uuid4().hex, time.time()
        fields = ["key_id", kid, "kind", kind, "args", json.dumps(task.wire()), "priority", priority,
                  "size", float(size), "size_kind", key_id(size_kind), "state", "queued", "queued_at", now,
                  "progress_version", 0]
        seq = self._call(self.client.incr, self.k("seq"))
        waiter = uuid.uuid4().hex if waiter is None else waiter
        outcome, jid = self._call(self.client.eval, _REQUEST, 3, self.k("inflight", kid), self.k("stored", kid),
                                  STREAMS[priority], jid, int(fresh), priority * 1e15 + seq, now, PREFIX,
                                  json.dumps([str(f) for f in fields]), _waiter_id(waiter) if alive() else "", kid)
        job = Job(self, key, _text(jid), kind)
        if _text(outcome) != "done":
            self._wait_for(job.jid, waiter, alive)
        return job

    def finished(self, key: Hashable) -> Job | None:
        kid = key_id(key)
        jid = _text(self._call(self.client.get, self.k("stored", kid)))
        if jid is None or not self._call(self.client.exists, self.k("out", jid)):
            return None
        kind = _text(self._call(self.client.hget, self.k("job", jid), "kind")) or ""
        return Job(self, key, jid, kind)

    def leave(self, job: Any, waiter: Hashable) -> None:
        if not isinstance(job, Job):
            return self.local.leave(job, waiter)
        with self._waits_lock:
            self._waits.get(job.jid, {}).pop(waiter, None)
        self._call(self.client.zrem, self.k("waiters", job.jid), _waiter_id(waiter))

    def place(self, job: Any) -> Place:
        if not isinstance(job, Job):
            return self.local.place(job)
        c = self.client
        score = self._call(c.zscore, self.k("queued"), job.jid)
        if score is None or job.state != "queued":
            return Place(0, 0.0)
        now = time.time()
        ahead = [_text(j) for j in self._call(c.zrangebyscore, self.k("queued"), "-inf", f"({score}")]
        running = [_text(j) for j in self._call(c.zrange, self.k("running"), 0, -1)]
        mine = int(self._call(c.hget, self.k("job", job.jid), "priority") or FIRST)
        pipe = c.pipeline()
        for jid in running + ahead:
            pipe.hmget(self.k("job", jid), "priority", "size", "size_kind", "started_at", "paused_seconds")
            pipe.zcount(self.k("waiters", jid), now - WAITER_TTL, "+inf")
        rows = self._call(pipe.execute)
        rates = {_text(k): float(v) for k, v in self._call(c.hgetall, self.k("rates")).items()}
        estimates, before = [], 0
        for i in range(len(running + ahead)):
            (priority, size, size_kind, started, paused), live = rows[2 * i], rows[2 * i + 1]
            if priority is None or (i >= len(running) and not live):
                continue  # finished meanwhile, or abandoned: skipped when its turn comes
            if i < len(running) and int(priority) > mine:
                continue  # a running refinement steps aside for a first result
            before += 1
            rate = rates.get(_text(size_kind))
            ran = 0.0 if started is None else now - float(started) - float(paused or 0)
            estimates.append(None if rate is None else max(0.0, rate * float(size) - ran))
        known = all(e is not None for e in estimates)
        return Place(before, sum(estimates) / max(1, self.worker_slots()) if known else None)

    @property
    def decodes(self) -> int:
        """First-result jobs started by every worker, since this Redis began."""
        return int(self._call(self.client.get, self.k("count", "decode")) or 0)

    @property
    def refines(self) -> int:
        return int(self._call(self.client.get, self.k("count", "refine")) or 0)

    @property
    def skipped(self) -> int:
        """Jobs skipped or dropped because every waiter had gone."""
        return int(self._call(self.client.get, self.k("count", "skipped")) or 0)

    def worker_slots(self) -> int:
        """Decode slots of every worker whose heartbeat is fresh."""
        now, slots = time.time(), 0
        for raw in self._call(self.client.hvals, self.k("workers")):
            info = json.loads(raw)
            if now - float(info["beat"]) < CLAIM_IDLE:
                slots += int(info["slots"])
        return slots

    def queued(self) -> int:
        return int(self._call(self.client.zcard, self.k("queued")))

    def stored_keys(self) -> list[str]:
        return [_text(k) for k in self._call(self.client.zrange, self.k("stored"), 0, -1)]

    def stored_bytes(self) -> int:
        return sum(int(v) for v in self._call(self.client.hvals, self.k("sizes")))

    # ---- waiting (this replica's sessions) ------------------------------------------------------
    def _wait_for(self, jid: str, waiter: Hashable, alive: Callable[[], bool]) -> None:
        with self._waits_lock:
            for other, waiting in self._waits.items():  # one wait per waiter: asking anew leaves the others
                if other != jid and waiter in waiting:
                    del waiting[waiter]
                    self._call(self.client.zrem, self.k("waiters", other), _waiter_id(waiter))
            self._waits.setdefault(jid, {})[waiter] = alive  # the request itself made it a waiter in Redis

    def _heartbeat(self) -> None:
        """Every second: this replica's live waits refreshed, gone ones removed, finished jobs forgotten."""
        while not self._closing.wait(HEARTBEAT):
            try:
                with self._waits_lock:
                    waits = {jid: dict(w) for jid, w in self._waits.items()}
                pipe, now = self.client.pipeline(), time.time()
                for jid, waiting in waits.items():
                    for waiter, alive in waiting.items():
                        if alive():
                            pipe.zadd(self.k("waiters", jid), {_waiter_id(waiter): now})
                        else:
                            pipe.zrem(self.k("waiters", jid), _waiter_id(waiter))
                    pipe.expire(self.k("waiters", jid), int(RESULT_TTL))
                    pipe.hget(self.k("job", jid), "state")
                states = pipe.execute()
                finished = [jid for jid, state in zip(waits, _states(states, waits), strict=True)
                            if state is None or _text(state) in TERMINAL]
                with self._waits_lock:
                    for jid in finished:
                        self._waits.pop(jid, None)
                    for waiting in self._waits.values():
                        for waiter, alive in list(waiting.items()):
                            if not alive():
                                del waiting[waiter]
            except ERRORS:
                pass  # the waits themselves find out and tell their sessions; keep beating for when it is back
            except Exception:
                log.exception("gptviz.serve the waiters' heartbeat failed once")

    def _waiting(self, jid: str) -> int:
        return self._call(_live_waiters, self.client, jid)

    def _result(self, job: Job, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state, error, kind = self._call(self.client.hmget, self.k("job", job.jid), "state", "error", "error_type")
            state = _text(state)
            if state == "done":
                return self._decoded.get(("out", job.jid), lambda: self._load_result(job))
            if state == "error":
                raise _error(_text(kind), _text(error))
            if state in (None, "skipped"):  # skipped or dropped while nobody seemed to wait (or expired): ask again
                raise Dropped(_text(error)) if _text(kind) == "Dropped" else CancelledError()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            time.sleep(POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic())))

    def _load_result(self, job: Job) -> Any:
        data = self._call(self.client.get, self.k("out", job.jid))
        if data is None:
            raise CancelledError()  # evicted between the state and the read: ask again
        return self.kinds[job.kind].decode(data)

    def _progress(self, job: Job) -> Any:
        part, version = self._call(self.client.hmget, self.k("job", job.jid), "progress", "progress_version")
        if part is None:
            return None
        kind = self.kinds[job.kind]
        version = int(version or 0)

        def partial() -> Any:
            data = self._call(self.client.get, self.k("partial", job.jid, str(version)))
            return None if data is None else kind.decode(data)

        result = self._decoded.get(("partial", job.jid, version), partial) if version else None
        return kind.progress_from(json.loads(part), result)


def _states(replies: list, waits: dict) -> list:
    """The job states out of a heartbeat pipeline's replies (the last reply of each job's group)."""
    states, i = [], 0
    for waiting in waits.values():
        i += len(waiting) + 2
        states.append(replies[i - 1])
    return states


def _waiter_id(waiter: Hashable) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{waiter!r}"


def _error(kind: str | None, message: str | None) -> BaseException:
    """The worker's error as the class the in-process server would raise: one of ours or a built-in exception
    (looked up by name, never unpickled), else RuntimeError."""
    import builtins

    import gptviz
    from gptviz.divergence import DivergenceError
    from gptviz.lab import LabError

    ours = {"DecodeError": gptviz.DecodeError, "ModelLoadError": gptviz.ModelLoadError, "Dropped": Dropped,
            "LabError": LabError, "DivergenceError": DivergenceError}  # the pages say what to change
    cls = ours.get(kind or "") or getattr(builtins, kind or "", None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RuntimeError
    return cls(message or "the worker failed without a message")


# ---- the worker ---------------------------------------------------------------------------------------------
class _Running:
    """A job as its worker's task sees it (``report``, ``checkpoint``)."""

    def __init__(self, worker: Worker, jid: str, kid: str, kind: str, priority: int, stream: str, entry: str):
        self.jid, self.key, self.kind, self.priority = jid, kid, kind, priority
        self.stream, self.entry = stream, entry
        self.progress: Any = None
        self._worker = worker
        self._last_result: Any = None
        self._version = 0

    @property
    def state(self) -> str:
        return "running"

    def report(self, progress: Any) -> None:
        self.progress = progress
        self._worker._report(self, progress)

    def checkpoint(self) -> None:
        self._worker._checkpoint(self)


class Worker:
    """A process's decode slots, fed from the Streams: ``python -m gptviz worker`` runs one until stopped."""

    def __init__(self, url: str, slots: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 kinds: Mapping[str, Any] | None = None, name: str | None = None, claim_idle: float = CLAIM_IDLE):
        from gptviz.serve import tasks

        self.url = url
        self.client = connect(url)
        self.kinds = tasks.KINDS if kinds is None else kinds
        self.slots = default_slots() if slots is None else slots
        self.max_bytes = max_bytes
        self.claim_idle = claim_idle  # seconds a job's worker may be silent before this one takes the job over
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.decodes = self.refines = self.skipped = 0  # what this worker ran, for its log lines
        self._stop = threading.Event()
        self._mine: dict[str, tuple[str, str]] = {}  # jid -> (stream, entry) being run here: heartbeats claim them
        self._mine_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        for stream in STREAMS.values():
            try:
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def start(self) -> Worker:
        """Slot threads and the heartbeat, in the background (``stop`` ends them)."""
        self._threads = [threading.Thread(target=self._loop, name=f"gptviz-worker-{i}", daemon=True)
                         for i in range(self.slots)]
        self._threads.append(threading.Thread(target=self._heartbeat, name="gptviz-worker-beat", daemon=True))
        for thread in self._threads:
            thread.start()
        log.info("gptviz.serve worker %s: %d slot(s) on %s", self.name, self.slots, self.url)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; a running job stops at its next checkpoint and stays pending for another worker."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        try:
            self.client.hdel(PREFIX + "workers", self.name)
        except ERRORS:
            pass

    k = staticmethod(_key)

    # ---- taking jobs ------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                taken = self._take(block_ms=1000)
                if taken is not None:
                    self._run(*taken)
            except ERRORS as exc:
                log.warning("gptviz.serve worker %s: Redis at %s does not answer (%s); retrying", self.name,
                            self.url, exc.__class__.__name__)
                self._stop.wait(2.0)
            except Exception:  # a slot thread that died would leave its worker announcing slots it does not run
                log.exception("gptviz.serve worker %s: a slot failed; going on", self.name)
                self._stop.wait(1.0)

    def _take(self, block_ms: int | None, first_only: bool = False) -> tuple[str, str, str] | None:
        """The next entry (stream, entry id, jid): a job taken over from a dead worker, else a first result,
        else (unless ``first_only``) a refinement; waits up to ``block_ms`` for one."""
        for priority, stream in STREAMS.items():
            if first_only and priority != FIRST:
                break
            claimed = self.client.xautoclaim(stream, GROUP, self.name, int(self.claim_idle * 1000), count=1)
            if claimed and claimed[1]:
                entry, fields = claimed[1][0]
                return stream, _text(entry), _text(fields[b"job"])
        streams = {STREAMS[FIRST]: ">"} if first_only else {s: ">" for s in STREAMS.values()}
        replies = self.client.xreadgroup(GROUP, self.name, {STREAMS[FIRST]: ">"}, count=1)  # first results first
        if not replies and not first_only:
            replies = self.client.xreadgroup(GROUP, self.name, streams, count=1, block=block_ms)
        for stream, entries in sorted(replies or [], key=lambda r: _text(r[0]) != STREAMS[FIRST]):
            for entry, fields in entries:
                taken = _text(stream), _text(entry), _text(fields[b"job"])
                if len(replies) > 1 and _text(stream) != STREAMS[FIRST]:
                    self.client.xclaim(_text(stream), GROUP, self.name, 0, [entry], idle=10 * int(CLAIM_IDLE * 1000))
                    continue  # read beside a first result: left for whoever claims it (at once: idle set)
                return taken
        return None

    def _run(self, stream: str, entry: str, jid: str) -> None:
        c, job_key = self.client, self.k("job", jid)
        fields = {_text(k): _text(v) for k, v in c.hgetall(job_key).items()}
        if not fields or fields.get("state") in TERMINAL:
            c.xack(stream, GROUP, entry)  # finished by the worker it was taken from, or expired
            return
        kid, kind, priority = fields["key_id"], fields["kind"], int(fields["priority"])
        word = "decode" if priority == FIRST else "refine"
        if self._abandoned(jid):
            if self._finish(jid, kid, "skipped", {}):
                self.skipped = int(c.incr(self.k("count", "skipped")))
                log.info("gptviz.serve skipped key=%s (nobody waiting) skipped=%d", kid, self.skipped)
            c.xack(stream, GROUP, entry)
            return
        deliveries = self._deliveries(stream, entry)
        if deliveries > MAX_DELIVERIES:
            self._finish(jid, kid, "error", {"error_type": "RuntimeError", "error": (
                f"this job stopped {deliveries - 1} workers part-way (killed or out of memory): not tried again.")})
            c.xack(stream, GROUP, entry)
            return
        running = self._start(fields, jid, stream, entry, deliveries)
        began = time.monotonic()
        try:
            task = self.kinds[kind].task(json.loads(fields["args"]), self._stored)
            result, error = task(running), None
        except BaseException as exc:  # its waiters re-raise it; the worker goes on
            result, error = None, exc
        seconds = time.monotonic() - began - float(c.hget(job_key, "paused_seconds") or 0)
        try:
            if isinstance(error, Dropped) and self._stop.is_set():  # left pending: taken over once our beat stops
                log.info("gptviz.serve %s left for another worker (this one stops) key=%s", word, kid)
                return
            outcome = self._outcome(running, fields, result, error, seconds)
            c.xack(stream, GROUP, entry)
        finally:
            with self._mine_lock:
                self._mine.pop(jid, None)
        log.info("gptviz.serve %s finished in %.2fs %s decodes_executed=%d key=%s worker=%s", word, seconds, outcome,
                 int(c.get(self.k("count", "decode")) or 0), kid, self.name)

    def _start(self, fields: dict, jid: str, stream: str, entry: str, deliveries: int) -> _Running:
        """Mark the job running here (its heartbeat claims it from now on) and log its start."""
        c, started = self.client, time.time()
        kid, priority = fields["key_id"], int(fields["priority"])
        word = "decode" if priority == FIRST else "refine"
        c.hset(self.k("job", jid), mapping={"state": "running", "started_at": started, "worker": self.name,
                                            "paused_seconds": 0})
        c.zrem(self.k("queued"), jid)
        c.zadd(self.k("running"), {jid: started})
        with self._mine_lock:
            self._mine[jid] = (stream, entry)
        count = int(c.incr(self.k("count", word)))
        if priority == FIRST:
            self.decodes += 1
        else:
            self.refines += 1
        log.info("gptviz.serve %s started %s_executed=%d waiters=%d queued=%d waited=%.2fs key=%s worker=%s%s",
                 word, "decodes" if priority == FIRST else "refines", count, _live_waiters(c, jid),
                 int(c.zcard(self.k("queued"))), started - float(fields.get("queued_at") or started), kid,
                 self.name, f" taken over (delivery {deliveries})" if deliveries > 1 else "")
        return _Running(self, jid, kid, fields["kind"], priority, stream, entry)

    def _outcome(self, job: _Running, fields: dict, result: Any, error: BaseException | None, seconds: float) -> str:
        """Record how the job ended (its result stored, or its error), once; the word its log line ends with."""
        if error is None:
            try:
                data = self.kinds[job.kind].encode(result)
            except Exception as exc:  # a result that cannot cross processes ends the job now, not after retries
                error = RuntimeError(f"the worker could not store this result ({exc.__class__.__name__}: {exc}).")
            else:
                self._learn(fields["size_kind"], seconds / max(float(fields["size"]), 1e-9))
                finished = self._store(job.jid, job.key, data)
                return "ok" if finished else "ok (already finished by another worker: not recorded)"
        dropped = isinstance(error, Dropped)
        finished = self._finish(job.jid, job.key, "skipped" if dropped else "error",
                                {"error_type": "Dropped" if dropped else error.__class__.__name__, "error": str(error)})
        if finished and dropped:
            self.skipped = int(self.client.incr(self.k("count", "skipped")))
        return "dropped (nobody waiting)" if dropped else f"error={error.__class__.__name__}"

    def _deliveries(self, stream: str, entry: str) -> int:
        pending = self.client.xpending_range(stream, GROUP, entry, entry, 1)
        return int(pending[0]["times_delivered"]) if pending else 1

    def _stored(self, kid: str) -> Any:
        """The result stored for request key id ``kid`` (a refinement's first result), decoded, or None."""
        jid = _text(self.client.get(self.k("stored", kid)))
        data = None if jid is None else self.client.get(self.k("out", jid))
        if data is None:
            return None
        kind = _text(self.client.hget(self.k("job", jid), "kind"))
        return self.kinds[kind].decode(data)

    def _abandoned(self, jid: str) -> bool:
        return _live_waiters(self.client, jid) == 0

    # ---- what a running task calls ------------------------------------------------------------
    def _report(self, job: _Running, progress: Any) -> None:
        part, result = self.kinds[job.kind].progress_parts(progress)
        pipe = self.client.pipeline()
        if result is not None and result is not job._last_result:  # a new partial result: sent once
            job._version += 1
            job._last_result = result
            pipe.set(self.k("partial", job.jid, str(job._version)), self.kinds[job.kind].encode(result), ex=WAIT_TTL)
        pipe.hset(self.k("job", job.jid), mapping={"progress": json.dumps(part),
                                                   "progress_version": job._version if result is not None else 0})
        pipe.execute()

    def _checkpoint(self, job: _Running) -> None:
        if self._stop.is_set():
            raise Dropped("the worker is stopping")
        if job.priority == FIRST:
            return
        if self._abandoned(job.jid):
            raise Dropped(f"nobody waits for {job.key} any more")
        paused = 0.0
        while (taken := self._take(block_ms=None, first_only=True)) is not None:  # first results go first: here
            began = time.monotonic()
            self.client.hset(self.k("job", job.jid), "state", "paused")
            log.info("gptviz.serve refine paused for a first result key=%s", job.key)
            self._run(*taken)
            paused += time.monotonic() - began
        if paused:
            self.client.hset(self.k("job", job.jid), "state", "running")
            self.client.hincrbyfloat(self.k("job", job.jid), "paused_seconds", paused)
            if self._abandoned(job.jid):
                raise Dropped(f"nobody waits for {job.key} any more")

    # ---- finishing -------------------------------------------------------------------------------
    def _finish(self, jid: str, kid: str, state: str, fields: dict) -> bool:
        flat = [str(x) for pair in {**fields, "finished_at": time.time()}.items() for x in pair]
        finished = bool(self.client.eval(_FINISH, 2, self.k("job", jid), self.k("inflight", kid), jid, state,
                                         json.dumps(flat), time.time(), PREFIX))
        self.client.expire(self.k("job", jid), RESULT_TTL)  # a finished job's record goes with its result
        return finished

    def _store(self, jid: str, kid: str, data: bytes) -> bool:
        """Write the encoded result, then finish the job (once); kept for later sessions within the TTL and budget."""
        keep = len(data) <= self.max_bytes
        self.client.set(self.k("out", jid), data, ex=RESULT_TTL if keep else WAIT_TTL)
        if not self._finish(jid, kid, "done", {}):
            self.client.delete(self.k("out", jid))
            return False
        if keep:
            pipe = self.client.pipeline()
            pipe.set(self.k("stored", kid), jid, ex=RESULT_TTL)
            pipe.zadd(self.k("stored"), {kid: time.time()})
            pipe.hset(self.k("sizes"), kid, len(data))
            pipe.execute()
            self._evict()
        return True

    def _evict(self) -> None:
        """Least recently used results beyond the byte budget (and entries whose TTL ran out) go."""
        c = self.client
        sizes = {_text(k): int(v) for k, v in c.hgetall(self.k("sizes")).items()}
        for kid in [_text(k) for k in c.zrange(self.k("stored"), 0, -1)]:
            if not c.exists(self.k("stored", kid)):
                c.zrem(self.k("stored"), kid)
                c.hdel(self.k("sizes"), kid)
                sizes.pop(kid, None)
        order = [_text(k) for k in c.zrange(self.k("stored"), 0, -1)]  # least recently used first
        while sum(sizes.values()) > self.max_bytes and order:
            kid = order.pop(0)
            c.delete(self.k("stored", kid))  # its out:<jid> stays until its TTL: sessions fetching it still can
            c.zrem(self.k("stored"), kid)
            c.hdel(self.k("sizes"), kid)
            sizes.pop(kid, None)

    def _learn(self, size_kind: str, rate: float) -> None:
        old = self.client.hget(self.k("rates"), size_kind)
        new = rate if old is None else RATE_MEMORY * rate + (1 - RATE_MEMORY) * float(old)
        self.client.hset(self.k("rates"), size_kind, new)

    def _heartbeat(self) -> None:
        """Every second: this worker's jobs claimed afresh (their idle time reset: nobody takes them over) and
        its slots announced (places and estimates count them)."""
        while not self._stop.wait(HEARTBEAT):
            try:
                with self._mine_lock:
                    mine = list(self._mine.values())
                for stream, entry in mine:
                    self.client.xclaim(stream, GROUP, self.name, 0, [entry], justid=True)
                self.client.hset(self.k("workers"), self.name, json.dumps({"slots": self.slots, "beat": time.time()}))
            except ERRORS:
                pass  # the slot threads say so and retry
