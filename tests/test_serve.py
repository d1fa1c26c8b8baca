"""The decode queue, single flight and shared results (gptviz.serve), with stand-in decodes (no model).

One suite, run against every implementation of the interface: in-process (gptviz/serve/memory.py) and Redis
(gptviz/serve/redis.py, a real redis-server started on a random port, its worker threads in this process).
Redis-only behaviour (a worker killed mid-job, a lost Redis) is in tests/test_serve_redis.py.
"""

import json
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

from gptviz import serve
from gptviz.serve.tasks import Kind

WAIT = 10  # seconds a test waits for a worker before failing
FUNCS: dict = {}  # the stand-in decodes by name: a worker thread here looks them up (they cannot be sent)


@dataclass
class Fn:
    """A plain function as a task of the test kind "fn": what a worker runs is found by name in FUNCS."""

    fn: object
    name: str = field(default_factory=lambda: uuid.uuid4().hex)
    kind: str = "fn"

    def __post_init__(self):
        FUNCS[self.name] = self.fn

    def __call__(self, job):
        return self.fn(job)

    def wire(self) -> dict:
        return {"name": self.name}


def _json(value) -> bytes:
    return json.dumps(value).encode()


KINDS = {"fn": Kind(task=lambda args, stored: FUNCS[args["name"]], encode=_json, decode=json.loads,
                    progress_parts=lambda p: (p, None), progress_from=lambda part, result: part)}


class Shared:
    """A backend as these tests use it: plain functions become tasks; keys are shown as they were asked."""

    def __init__(self, backend, size, ident, workers=()):
        self.backend, self.size, self.ident, self.workers = backend, size, ident, list(workers)

    def request(self, key, fn, **kwargs):
        return self.backend.request(key, fn if isinstance(fn, Fn) else Fn(fn), **kwargs)

    def stored(self, *keys):
        """Which of ``keys`` are stored, in the store's order (least recently used first)."""
        ids = {self.ident(k): k for k in keys}
        return [ids[k] for k in self.backend.stored_keys() if k in ids]

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def close(self):
        for worker in self.workers:
            worker.stop(WAIT)
        self.backend.close(WAIT)


@pytest.fixture(params=["memory", "redis"])
def make(request):
    """make(slots=1, max_bytes=…) -> a fresh backend of each kind; stopped after the test."""
    made = []

    def build(slots=1, max_bytes=serve.DEFAULT_MAX_BYTES):
        if request.param == "memory":
            shared = Shared(serve.Server(slots=slots, max_bytes=max_bytes, nbytes=lambda r: len(_json(r))),
                            size=lambda r: len(_json(r)), ident=lambda k: k)
        else:
            from gptviz.serve import redis as shared_redis

            url = request.getfixturevalue("redis_url")
            worker = shared_redis.Worker(url, slots=slots, max_bytes=max_bytes, kinds=KINDS).start()
            shared = Shared(shared_redis.Server(url, slots=slots, max_bytes=max_bytes, kinds=KINDS),
                            size=lambda r: len(_json(r)), ident=serve.key_id, workers=[worker])
        made.append(shared)
        return shared

    yield build
    for shared in made:
        shared.close()


def blocker(server, size_kind=None):
    """A job that holds the server's only slot until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold(job):
        started.set()
        release.wait(WAIT)
        return "blocker"

    job = server.request("blocker", hold, fresh=True, size=10, size_kind=size_kind)
    assert started.wait(WAIT)
    return job, release


def recorder(order: list, name: str):
    def compute(job):
        order.append(name)
        return name
    return compute


def test_queue_runs_jobs_in_arrival_order_and_tells_each_its_place(make):
    server = make(slots=1)
    first, release = blocker(server)
    order: list[str] = []
    jobs = [server.request(name, recorder(order, name)) for name in "abc"]
    assert [server.place(job).ahead for job in jobs] == [1, 2, 3]  # the running blocker, then the queue
    assert [job.state for job in jobs] == ["queued"] * 3
    release.set()
    assert [job.result(WAIT) for job in jobs] == ["a", "b", "c"]
    assert order == ["a", "b", "c"]
    assert first.result(WAIT) == "blocker" and server.decodes == 4
    assert server.place(jobs[0]) == serve.Place(0, 0.0)  # done: nothing ahead any more


def test_a_job_whose_waiter_left_is_skipped_and_does_not_hold_the_queue(make):
    server = make(slots=1)
    _, release = blocker(server)
    order: list[str] = []
    left = server.request("left", recorder(order, "left"), waiter="student-1")
    closed = server.request("closed", recorder(order, "closed"), waiter="student-2", alive=lambda: False)
    kept = server.request("kept", recorder(order, "kept"), waiter="student-3")
    server.leave(left, "student-1")
    assert server.place(kept).ahead == 1  # only the blocker: the two abandoned jobs do not count
    release.set()
    assert kept.result(WAIT) == "kept"
    assert order == ["kept"]
    assert left.state == closed.state == "skipped" and server.skipped == 2
    with pytest.raises(serve.CancelledError):
        left.result(0)
    # Asking again after a skip queues a new decode.
    assert server.request("left", recorder(order, "left again")).result(WAIT) == "left again"


def test_asking_for_other_settings_leaves_the_queued_job_but_a_shared_one_still_runs(make):
    server = make(slots=1)
    _, release = blocker(server)
    order: list[str] = []
    mine = server.request("old", recorder(order, "old"), waiter="me")
    shared = server.request("shared", recorder(order, "shared"), waiter="me")
    assert server.request("shared", recorder(order, "never"), waiter="you") == shared  # the same job
    server.request("new", recorder(order, "new"), waiter="me")  # I changed my settings twice
    release.set()
    server.request("barrier", recorder(order, "barrier")).result(WAIT)
    assert mine.state == "skipped"
    assert order == ["shared", "new", "barrier"]  # "you" still waits for "shared"


def test_two_threads_asking_the_same_key_share_one_decode(make):
    server = make(slots=1)
    calls, entered, release = [], threading.Event(), threading.Event()

    def decode(job):
        calls.append(job.key)
        entered.set()
        release.wait(WAIT)
        return f"decode {len(calls)}"  # a distinct result per decode

    results = {}

    def student(name):
        results[name] = server.request(("bundled", "float32", 24), decode, waiter=name).result(WAIT)

    threads = [threading.Thread(target=student, args=(name,)) for name in ("ann", "bob")]
    threads[0].start()
    assert entered.wait(WAIT)  # ann's request is decoding when bob asks
    threads[1].start()
    release.set()
    for t in threads:
        t.join(WAIT)
    assert len(calls) == 1 and server.decodes == 1
    assert results["ann"] is results["bob"]  # one object, however many sessions show it
    # Later visitors get the stored result; the Run button (fresh) decodes again.
    assert server.request(("bundled", "float32", 24), decode).result(0) is results["ann"]
    assert server.request(("bundled", "float32", 24), decode, fresh=True).result(WAIT) == "decode 2"
    assert len(calls) == 2


def test_fresh_joins_a_decode_already_in_flight(make):
    server = make(slots=1)
    job, release = blocker(server)
    assert server.request("blocker", recorder([], "second"), fresh=True) == job
    release.set()
    assert job.result(WAIT) == "blocker" and server.decodes == 1


def test_finished_results_are_evicted_by_bytes_least_recently_used_first(make):
    server = make(slots=1, max_bytes=100)
    one = server.size("a" * 40)  # 42 bytes as JSON: two fit in 100, three do not
    for key in ("a", "b"):
        server.request(key, lambda job, key=key: key * 40).result(WAIT)
    server.request("a", recorder([], "unused"))  # a hit: "a" becomes the most recently used
    server.request("c", lambda job: "c" * 40).result(WAIT)  # 3 × 42 bytes > 100: evict the oldest
    assert server.stored("a", "b", "c") == ["a", "c"] and server.stored_bytes() == 2 * one
    server.request("huge", lambda job: "x" * 101).result(WAIT)  # over the whole budget: not kept at all
    assert server.stored("a", "b", "c", "huge") == ["a", "c"]
    again = server.request("b", lambda job: "b" * 40)
    assert again.result(WAIT) == "b" * 40 and server.decodes == 5  # "b" was decoded again


def test_an_error_reaches_every_waiter_is_not_stored_and_the_worker_goes_on(make):
    server = make(slots=1)

    def fail(job):
        raise ValueError("the prompt is empty")

    with pytest.raises(ValueError, match="prompt is empty"):
        server.request("bad", fail).result(WAIT)
    assert server.stored("bad") == []
    assert server.request("good", recorder([], "good")).result(WAIT) == "good"


def test_the_wait_estimate_comes_from_timed_runs_of_the_same_kind(make):
    server = make(slots=1)
    _, release = blocker(server)  # of a kind never timed before
    unknown = server.request("unknown", recorder([], "u"), size=10, size_kind="gpt2")
    assert server.place(unknown) == serve.Place(1, None)
    assert server.place(unknown).describe() == "1 run ahead of you"
    release.set()
    unknown.result(WAIT)

    server.request("timed", lambda job: time.sleep(0.2), size=10, size_kind="bundled").result(WAIT)  # ≥ 0.02 s/unit
    _, release = blocker(server, "bundled")  # now the running job's kind has a rate too
    big = server.request("big", recorder([], "b"), size=20, size_kind="bundled")
    behind = server.request("behind", recorder([], "c"), size=10, size_kind="bundled")
    asked = time.monotonic()
    first, second = server.place(big), server.place(behind)
    between = time.monotonic() - asked  # the running blocker's remaining estimate shrinks meanwhile
    assert (first.ahead, second.ahead) == (1, 2)
    assert second.seconds - first.seconds >= 20 * 0.02 * 0.999 - between  # the big job's own estimate
    assert second.describe().startswith("2 runs ahead of you, about ")
    release.set()
    behind.result(WAIT)


def test_slots_follow_the_core_count():  # not a backend's
    assert [serve.default_slots(n) for n in (1, 2, 4, 8, 16)] == [1, 1, 1, 2, 4]


def test_a_result_that_cannot_be_sized_still_reaches_its_waiters():  # nbytes: the in-process store's own
    server = serve.Server(slots=1, nbytes=len)
    assert server.request("odd", lambda job: 42).result(WAIT) == 42  # len(42) fails: not kept, no hang
    assert server.stored_keys() == [] and server.request("next", lambda job: "ok").result(WAIT) == "ok"


def test_each_job_computes_in_a_thread_that_ends_with_it():  # the in-process queue's own
    # A thread's torch OpenMP pool lives as long as the thread, and two live pools make every forward pass slower
    # (gptviz/serve/memory.py): a slot's two long-lived workers each kept one. Each job's thread must end.
    server = serve.Server(slots=1)
    seen: list[threading.Thread] = []
    try:
        for name in "ab":
            assert server.request(name, lambda job, n=name: seen.append(threading.current_thread()) or n
                                  ).result(WAIT) == name
        for thread in seen:
            thread.join(WAIT)
        assert len(set(seen)) == 2 and not any(thread.is_alive() for thread in seen)
    finally:
        server.close(WAIT)


def refinement(order: list, name: str, steps: int, gate: threading.Event | None = None):
    """A refinement of ``steps`` steps calling job.checkpoint() between them; waits on ``gate`` after step 1."""
    def compute(job):
        for step in range(steps):
            order.append(f"{name}{step}")
            if step == 0 and gate is not None:
                gate.wait(WAIT)
            job.checkpoint()
        return name
    return compute


def wait_running(job: serve.Job) -> None:
    deadline = time.monotonic() + WAIT
    while job.state != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == "running"


def test_every_first_result_runs_before_any_refinement_queued_earlier(make):
    server = make(slots=1)
    _, release = blocker(server)
    order: list[str] = []
    late = server.request("refine-a", refinement(order, "r", 1), priority=serve.REFINE)
    first = server.request("b", recorder(order, "b"))
    assert server.place(first).ahead == 1 and server.place(late).ahead == 2  # b goes before the refinement
    release.set()
    assert late.result(WAIT) == "r" and first.result(WAIT) == "b"
    assert order == ["b", "r0"]
    assert server.decodes == 2 and server.refines == 1  # the blocker and b are decodes; the refinement is not


def test_a_running_refinement_steps_aside_at_its_next_step_for_a_first_result(make):
    server = make(slots=1)
    order: list[str] = []
    gate = threading.Event()
    refine = server.request("refine-a", refinement(order, "r", 3, gate), priority=serve.REFINE)
    wait_running(refine)
    first = server.request("b", recorder(order, "b"))
    assert server.place(first).ahead == 0  # the refinement will step aside: nothing runs before b
    gate.set()
    assert first.result(WAIT) == "b" and refine.result(WAIT) == "r"
    assert order == ["r0", "b", "r1", "r2"]  # b ran at the refinement's first step boundary
    assert refine.paused_seconds > 0


def test_a_refinement_nobody_waits_for_is_dropped_at_its_next_step(make):
    server = make(slots=1)
    order: list[str] = []
    gate = threading.Event()
    refine = server.request("refine-a", refinement(order, "r", 3, gate), priority=serve.REFINE, waiter="s1")
    wait_running(refine)
    server.request("refine-b", refinement(order, "q", 1), priority=serve.REFINE, waiter="s1")  # s1 moved on
    gate.set()
    with pytest.raises(serve.Dropped):
        refine.result(WAIT)
    assert order[:1] == ["r0"] and "r1" not in order and server.skipped == 1


def test_a_refinement_someone_still_waits_for_is_not_dropped(make):
    server = make(slots=1)
    order: list[str] = []
    gate = threading.Event()
    refine = server.request("refine-a", refinement(order, "r", 3, gate), priority=serve.REFINE, waiter="s1")
    server.request("refine-a", refinement(order, "x", 1), priority=serve.REFINE, waiter="s2")  # joins it
    wait_running(refine)
    server.request("refine-b", refinement(order, "q", 1), priority=serve.REFINE, waiter="s1")  # s1 moved on, s2 not
    gate.set()
    assert refine.result(WAIT) == "r" and order[:3] == ["r0", "r1", "r2"]
