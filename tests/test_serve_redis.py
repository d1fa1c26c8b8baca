"""What only the Redis backend does: real tasks crossing processes, a worker killed mid-decode, Redis lost or never
there, results that are never unpickled. A real redis-server on a random port (tests/conftest.py), no mock; the
queue's behaviour shared with the in-process backend is tested once for both in tests/test_serve.py.
"""

import json
import os
import pickle
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

import gptviz
from gptviz import divergence, lab, serve
from gptviz.serve import codec, tasks
from gptviz.ui_state import AppSettings
from tests.conftest import TINY_SOURCE, LocalJob, RedisProcess

shared = pytest.importorskip("gptviz.serve.redis")  # redis-py (requirements.txt)

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60


def first_pass(settings: AppSettings) -> tasks.FirstPass:
    return tasks.FirstPass(settings, tasks.cached_model(settings.source, settings.dtype).name, gptviz.Limits())


def test_a_first_result_and_its_refinement_cross_processes_and_equal_a_local_run(redis_url, tiny_gpt2):
    worker = shared.Worker(redis_url, slots=1).start()
    server = shared.Server(redis_url)
    try:
        settings = AppSettings(source=TINY_SOURCE, max_new_tokens=5)
        job = server.request(settings.key, first_pass(settings), size=5)
        result = job.result(WAIT)
        local = first_pass(settings)(LocalJob())
        assert result.run.text == local.run.text and result.run.cached.token_ids == local.run.cached.token_ids
        assert result.settings == settings and not result.run.timing.complete
        # A second replica's session asking for the same settings gets the stored result: no second decode.
        other = shared.Server(redis_url)
        again = other.request(settings.key, first_pass(settings), size=5)
        assert again.state == "done" and again.result(0).run_id == result.run_id and server.decodes == 1
        other.close()
        # The refinement finds the first result in the store by its key, and lands complete.
        refine = server.request(("refine", result.run_id), tasks.Refine(result, serve.key_id(settings.key)),
                                priority=serve.REFINE)
        refined = refine.result(WAIT)
        assert refined.run_id == result.run_id and refined.run.timing.complete and server.refines == 1
        stored = server.client.get(server.k("out", refine.jid))
        assert stored.startswith(b"PK")  # the safe format (a zip of JSON and arrays), not a pickle
    finally:
        worker.stop(WAIT)
        server.close()


@pytest.mark.parametrize("task, settings", [
    (tasks.CacheLab, lab.LabSettings(max_new_tokens=6, window=4, sinks=1)),
    (tasks.DivergenceLab, divergence.DivergenceSettings(max_new_tokens=4)),
], ids=["cache lab", "divergence lab"])
def test_a_lab_s_report_crosses_processes_once_and_equals_a_local_run(redis_url, task, settings):
    """The labs go through the shared queue too: one worker runs each for every replica, in the safe format."""
    worker = shared.Worker(redis_url, slots=1).start()
    server, other = shared.Server(redis_url), shared.Server(redis_url)
    try:
        lm = tasks.cached_model(gptviz.BUNDLED, "float32")
        key = (task.kind, gptviz.BUNDLED, "float32", settings)
        job = server.request(key, task(settings, gptviz.BUNDLED, "float32", lm.name), size=6)
        report = job.result(WAIT)
        local = task(settings, gptviz.BUNDLED, "float32", lm.name, lm)(LocalJob())
        assert type(report) is type(local)
        # Everything but wall times is the same computation on the same model: equal, field by field, all the way down.
        assert timeless(asdict(report)) == timeless(asdict(local))
        assert server.client.get(server.k("out", job.jid)).startswith(b"PK")  # the safe format, not a pickle
        again = other.request(key, task(settings, gptviz.BUNDLED, "float32", lm.name), size=6)
        assert again.state == "done" and worker.decodes == 1  # the other replica's session: the stored report
    finally:
        worker.stop(WAIT)
        server.close()
        other.close()


def test_a_worker_running_a_cache_lab_its_app_computed_with_int4_waits_for_its_own_build(monkeypatch):
    """The key says int4/int2 were ready where it was asked: a worker whose build is still finishing waits for it
    rather than store a report without them under that key (the state travels with the task)."""
    import threading

    from gptviz.lab import quanto

    task = tasks.CacheLab(lab.LabSettings(), gptviz.BUNDLED, "float32", "m", quanto="ready")
    rebuilt = tasks.KINDS[tasks.LAB_KIND].task(json.loads(json.dumps(task.wire())), lambda kid: None)
    assert rebuilt == task and rebuilt.lm is None
    finished = threading.Event()
    build = threading.Thread(target=lambda: (time.sleep(0.5), finished.set()), daemon=True)
    monkeypatch.setitem(quanto._state, "thread", build)
    ran = []
    monkeypatch.setattr(tasks.CacheLab, "run", staticmethod(lambda *args: ran.append(finished.is_set())))
    monkeypatch.setattr(tasks, "_model_named", lambda *args: SimpleNamespace(model=None, tokenizer=None, threads=None))
    build.start()
    rebuilt(LocalJob())
    assert ran == [True]  # it ran after the build finished


def timeless(value):
    """A report as plain data without its wall times (``seconds``, ``fresh_seconds``, … at every level)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, (list, tuple)):
        return [timeless(v) for v in value]
    return value


def test_a_worker_killed_mid_decode_is_taken_over_and_the_job_finishes_once(redis_url, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "worker.log").open("w")
    doomed = subprocess.Popen([sys.executable, "-m", "gptviz", "worker", "--redis", redis_url, "--slots", "1"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = shared.Server(redis_url)
    rescuer = None
    try:
        settings = AppSettings(max_new_tokens=120)  # the bundled model: long enough to be killed part-way
        job = server.request(settings.key, first_pass(settings), size=120)
        deadline = time.monotonic() + WAIT
        while (job.progress is None or job.progress.done < 10) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.state == "running" and job.progress.done < job.progress.total, "the worker never got going"
        doomed.kill()  # mid-decode: no goodbye, its stream entry stays pending
        doomed.wait(10)
        rescuer = shared.Worker(redis_url, slots=1, claim_idle=1.0).start()
        result = job.result(WAIT)
        assert result.run.text == first_pass(settings)(LocalJob()).run.text  # the same decode, done once
        assert server.decodes == 2  # started twice (killed, taken over) ...
        assert rescuer.decodes == 1  # ... finished once, by the worker that took it over
        pending = server.client.xpending(shared.STREAMS[serve.FIRST], shared.GROUP)
        assert pending["pending"] == 0  # acknowledged: nobody will run it a third time
    finally:
        doomed.kill()
        if rescuer is not None:
            rescuer.stop(WAIT)
        server.close()
        log.close()


def test_a_second_finish_of_a_job_is_refused(redis_url):
    """A worker that was only slow (its job taken over) cannot overwrite the result of the one that finished."""
    worker = shared.Worker(redis_url, slots=1)
    client = worker.client
    client.hset(worker.k("job", "j1"), mapping={"state": "running", "key_id": "k1"})
    assert worker._finish("j1", "k1", "done", {}) is True
    assert worker._finish("j1", "k1", "error", {"error": "late"}) is False
    assert client.hget(worker.k("job", "j1"), "state") == b"done"


def test_a_result_the_worker_cannot_encode_ends_the_job_with_its_error_at_once(redis_url):
    """Not left pending for other workers to take over and fail on again: one start, the error to the waiter."""
    from dataclasses import replace

    from tests.test_serve import KINDS, Fn

    def refuse(result):
        raise codec.CodecError("cannot write run: a test's unencodable value")

    kinds = {"fn": replace(KINDS["fn"], encode=refuse)}
    worker = shared.Worker(redis_url, slots=1, kinds=kinds).start()
    server = shared.Server(redis_url, kinds=kinds)
    try:
        job = server.request("unencodable", Fn(lambda job: {"x": 1}), waiter="w")
        began = time.monotonic()
        with pytest.raises(RuntimeError, match="could not store this result.*unencodable value"):
            job.result(WAIT)
        assert time.monotonic() - began < shared.CLAIM_IDLE  # before any take-over could have happened
        assert (worker.decodes, job.state) == (1, "done")  # "done": an error is how it ended
    finally:
        worker.stop(WAIT)
        server.close()


def test_redis_lost_during_a_wait_tells_the_waiting_session_within_seconds(tmp_path, tiny_gpt2):
    own = RedisProcess(tmp_path)  # this test's own redis-server: it is stopped part-way
    worker = shared.Worker(own.url, slots=1).start()
    server = shared.Server(own.url)
    try:
        settings = AppSettings(max_new_tokens=200)
        job = server.request(settings.key, first_pass(settings), size=200)
        deadline = time.monotonic() + WAIT
        while job.state != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        own.stop()
        lost = time.monotonic()
        with pytest.raises(serve.Unavailable, match="stopped answering"):
            job.result(WAIT)
        assert time.monotonic() - lost < 10
    finally:
        own.stop()
        worker.stop(WAIT)
        server.close(1)


def test_an_unreachable_redis_is_one_clear_line_not_a_fallback(redis_process):
    with pytest.raises(serve.Unavailable) as caught:
        serve.connect(f"redis://127.0.0.1:{free_port()}/0")
    assert "does not answer" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(serve.Unavailable, match="not a Redis URL"):
        serve.connect("http://127.0.0.1:6379")
    assert isinstance(serve.connect(""), serve.memory.Server)  # unset: this process alone, as before
    out = subprocess.run([sys.executable, "-m", "gptviz", "worker", "--redis", f"redis://127.0.0.1:{free_port()}/0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "does not answer" in out.stderr


def test_the_app_says_when_its_redis_is_unreachable_and_decodes_nothing(monkeypatch, tiny_gpt2):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(serve.REDIS_URL_ENV, f"redis://127.0.0.1:{free_port()}/0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=WAIT)
    at.query_params.update({"model": TINY_SOURCE, "new": "4"})
    at.run()
    assert not at.exception
    assert any("shared queue is unavailable" in e.value and "does not answer" in e.value for e in at.error)


def test_the_app_on_redis_shows_a_worker_s_result_and_its_refined_timing(monkeypatch, redis_url, tiny_gpt2):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(serve.REDIS_URL_ENV, redis_url)
    worker = shared.Worker(redis_url, slots=1).start()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=WAIT)
        at.query_params.update({"model": TINY_SOURCE, "new": "4"})
        at.run()
        assert not at.exception and not at.error
        result = at.session_state["gptviz_runs"][at.session_state["gptviz_shown"]]
        deadline = time.monotonic() + WAIT
        while not at.session_state["gptviz_runs"][at.session_state["gptviz_shown"]].run.timing.complete:
            assert time.monotonic() < deadline, "the refinement never landed"
            time.sleep(0.2)
            at.run()
        assert worker.decodes == 1 and worker.refines == 1
        refined = at.session_state["gptviz_runs"][at.session_state["gptviz_shown"]]
        assert refined.run_id == result.run_id and refined.run.text == result.run.text
    finally:
        worker.stop(WAIT)


@pytest.mark.parametrize("page, shown", [("views/cache_lab.py", "tokens after a"),
                                         ("views/divergence.py", "Reference: the")],
                         ids=["cache lab", "divergence lab"])
def test_the_app_on_redis_shows_a_lab_a_worker_ran(monkeypatch, redis_url, page, shown):
    """The page asks for the model's *source* (what a worker loads), keyed by the model it loaded: a worker given
    the loaded model's display name instead could not load it (found in a browser walk of the labs on a cluster)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(serve.REDIS_URL_ENV, redis_url)
    worker = shared.Worker(redis_url, slots=1).start()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=WAIT)
        at.query_params.update({"new": "4"})  # the bundled model: its display name is not a source
        at.run()
        at.switch_page(page).run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        assert any(shown in c.value for c in at.caption)
        assert worker.decodes == 2  # the first result, then the lab: both run by the worker, none by the app
    finally:
        worker.stop(WAIT)


@pytest.mark.parametrize("page", ["views/cache_lab.py", "views/divergence.py"], ids=["cache lab", "divergence lab"])
def test_a_lab_the_worker_cannot_run_or_a_lost_queue_is_one_line_not_a_traceback(monkeypatch, tmp_path, page):
    """Force both bad cases: the worker loads another model for the source than the app did; then Redis goes."""
    from dataclasses import replace as swap

    own = RedisProcess(tmp_path)  # stopped part-way
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(serve.REDIS_URL_ENV, own.url)
    worker = shared.Worker(own.url, slots=1).start()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=WAIT)
        at.query_params.update({"new": "4"})
        at.run()
        real = tasks.cached_model
        monkeypatch.setattr(tasks, "cached_model", lambda source, dtype: swap(real(source, dtype), name="another"))
        at.switch_page(page).run()
        assert not at.exception
        assert [e.value for e in at.error] and "this worker loads another" in at.error[0].value
        monkeypatch.setattr(tasks, "cached_model", real)
        own.stop()
        if page.endswith("divergence.py"):  # new settings: a new request
            at.text_area(key="div_other").set_value(at.text_area(key="div_other").value + " again")
        else:
            at.number_input(key="lab_sinks").set_value(2)
        at.run()
        assert not at.exception
        assert any("shared queue is unavailable" in e.value for e in at.error)
    finally:
        worker.stop(WAIT)
        own.stop()


def test_a_stored_result_is_never_unpickled(redis_url):
    """A store reachable over the network holding a pickle must not run it: the result is refused."""
    server = shared.Server(redis_url)
    try:
        canary = Path(os.environ.get("TMPDIR", "/tmp")) / f"gptviz-pickle-ran-{os.getpid()}"

        class Payload:
            def __reduce__(self):
                return (canary.write_text, ("ran",))

        client = server.client
        client.hset(server.k("job", "evil"), mapping={"state": "done", "kind": tasks.FIRST_KIND})
        client.set(server.k("out", "evil"), pickle.dumps(Payload()))
        with pytest.raises(codec.CodecError):
            shared.Job(server, "key", "evil", tasks.FIRST_KIND).result(0)
        assert not canary.exists()
    finally:
        server.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
