"""End to end beyond one server: 2 app replicas behind HAProxy sharing Redis, decodes in a worker process.

The cluster is scripts/cluster.py's (real redis-server, haproxy, `streamlit run app.py` ×2, `python -m gptviz
worker`); students are scripts/load_test.py's websocket clients, which carry HAProxy's affinity cookie from the
page's GET to the websocket as a browser does. Skips where Debian's redis-server or haproxy is missing
(`.ci/run` installs both) or the Redis backend (gptviz/serve/redis.py) is not there.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import cluster  # noqa: E402  (scripts/cluster.py)
import load_test  # noqa: E402  (scripts/load_test.py)

NEW_TOKENS = 8  # a short decode: the test is about where it runs, not how long
STUDENTS = 4
WAIT = 60  # seconds a student waits for its page before the test fails
LOGGED = 30  # seconds HAProxy gets to log every closed tunnel (it logs one as it closes)


def redis_backend_missing() -> str | None:
    """Why the Redis backend cannot be used here, or None."""
    try:
        importlib.import_module("gptviz.serve.redis")
    except ImportError as exc:
        return f"gptviz.serve.redis (the Redis backend) is not importable yet: {exc}"
    return None


pytestmark = [
    pytest.mark.skipif(bool(cluster.missing_tools()),
                       reason=f"needs Debian's {' and '.join(cluster.missing_tools())} (apt-get install redis-server "
                              "haproxy); .ci/run installs them"),
    pytest.mark.skipif(redis_backend_missing() is not None, reason=str(redis_backend_missing())),
]


@pytest.fixture(scope="module")
def two_replicas():
    with cluster.Cluster(replicas=2, workers=1, timeout=WAIT) as c:
        yield c
        for p in [*c.processes(), c.haproxy]:  # shown by pytest when the test failed
            print(f"---- {p.name} (last lines)\n{p.tail()}")


def test_one_link_via_two_replicas_decodes_once_and_a_dead_replicas_student_finds_it_stored(two_replicas):
    c = two_replicas
    link = load_test.query(NEW_TOKENS)
    seen = load_test.run_ws(c, load_test.students_for(STUDENTS, [link] * STUDENTS), load_test.PAGE, timeout=WAIT)

    assert [s.errors for s in seen] == [[]] * STUDENTS
    assert all(s.first_chart is not None and s.finished is not None for s in seen), "every student gets the result"
    assert sorted(s.replica for s in seen) == ["r1", "r1", "r2", "r2"]  # round robin, one replica per student
    # Each student's websocket went where the cookie from its page's GET said (HAProxy's log: "V", a valid cookie
    # chose the replica; a tunnel is logged as it closes, just after the client saw it close: on a loaded 2-core CI
    # machine the last of four closed more than 5 s after the others, so the log is polled for up to LOGGED s).
    load_test.wait_until(lambda: c.proxied("/_stcore/stream") == {"r1": 2, "r2": 2}, LOGGED)
    assert c.proxied("/_stcore/stream", cookie="V") == {"r1": 2, "r2": 2}
    assert c.decodes() == 1, c.decodes_by_process()  # one decode over every replica and worker
    assert c.decodes_by_process()["w1"] == 1  # … and it ran in the worker

    # The replica the first student was on dies; the student's page reconnects with its old cookie.
    first = seen[0]
    lost = int(first.replica[1:]) - 1
    c.kill_replica(lost)
    assert c.wait_states({first.replica: "DOWN"}), c.backend_states()
    back = load_test.Seen("student 1 again", link, cookies=dict(first.cookies))
    again = load_test.run_ws(c, [back], load_test.PAGE, timeout=WAIT)[0]

    assert again.errors == [] and again.first_chart is not None
    other = f"r{2 - lost}"
    assert again.route == [other]  # HAProxy sent it to the other replica (option redispatch) and said so:
    assert c.proxied(f"/{load_test.PAGE}", cookie="D") == {other: 1}  # its cookie named a replica that is down
    assert c.decodes() == 1, c.decodes_by_process()  # the stored result, not a new decode
