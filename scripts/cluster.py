"""A whole gptviz cluster on this machine: Redis, app replicas, decode workers and HAProxy in front.

    python scripts/cluster.py                          # 2 replicas, 1 worker; prints the URL, runs until Ctrl-C
    python scripts/cluster.py --replicas 2 --workers 2 --seconds 600

Everything listens on 127.0.0.1 on free random ports and lives in its own temporary directory:

* ``redis-server`` (Debian's), in memory only (``--save '' --appendonly no``);
* ``replicas`` × ``streamlit run app.py`` in hosted mode, each with ``GPTVIZ_REDIS_URL`` pointing at that Redis;
* ``workers`` × ``python -m gptviz worker`` (``--threads 1`` each when there are two or more: the cores split
  between them);
* HAProxy (Debian's): round robin over the replicas, a ``SERVERID`` cookie that keeps a browser's page and its
  websocket on one replica, health checks on Streamlit's ``/_stcore/health``, and ``option redispatch``: a
  student whose replica died is sent to another one.

Without Redis (``--no-redis``, ``shared=False``, or where gptviz/serve/redis.py is missing) the replicas each
run their own in-process queue and no worker is started: HAProxy, affinity and faults work the same, and each
replica decodes on its own, which is the baseline the Redis backend improves on.

As a library (scripts/load_test.py scenarios e–h, tests/test_cluster.py)::

    with Cluster(replicas=2, workers=1) as c:
        c.url                   # HAProxy's address: what students open
        c.replica_url(0)        # one replica directly, bypassing HAProxy
        c.decodes()             # "decode started" lines over every process since c.reset_counts()
        c.kill_replica(0); c.kill_worker(0); c.stop_redis()

Every process is stopped on leaving the ``with`` block, on an exception, on Ctrl-C, and at interpreter exit.
Every wait is bounded.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
REDIS_URL_ENV = "GPTVIZ_REDIS_URL"  # gptviz/serve/__init__.py REDIS_URL_ENV (not imported: that pulls in torch)
AFFINITY_COOKIE = "SERVERID"  # HAProxy's cookie: which replica holds this browser's session
STOP_SECONDS = 10.0  # SIGTERM, then this long before SIGKILL
DECODE_STARTED = re.compile(r"gptviz\.serve decode started\b")
# "… decode finished in 1.23s ok decodes_executed=…": the seconds, then the outcome ("ok", "error=…", "ok (already
# finished by another worker: not recorded)" from gptviz/serve/redis.py)
DECODE_FINISHED = re.compile(r"gptviz\.serve decode finished in ([\d.]+)\s?s (.*?) ?decodes_executed=")
WORKER_READY = re.compile(r"gptviz\.serve worker \S+: \d+ slot")  # gptviz/serve/redis.py Worker.start's log line
KEY = re.compile(r"\bkey=(\S+)")
# HAProxy's httplog line: "… replicas/r1 0/0/0/5/15588 101 1971 - - --VN 4/4/3/1/0 0/0 "GET /_stcore/stream HTTP/1.1"":
# the replica, the 4-letter termination state (3rd letter: the affinity cookie's status), the method and path
PROXIED = re.compile(r' replicas/(r\d+) \S+ \d+ \d+ \S+ \S+ (\S{4}) .*"([A-Z]+) (\S+) HTTP')
HEALTH_CHECK_SECONDS = 1  # HAProxy checks every replica this often; 2 misses mark it down


def redis_backend_available() -> bool:
    """True once gptviz/serve/redis.py exists: only then can replicas share a queue and workers decode."""
    return (ROOT / "gptviz" / "serve" / "redis.py").is_file()  # not imported here: gptviz pulls in torch


def missing_tools() -> list[str]:
    """Debian packages this needs that are not installed (``apt-get install redis-server haproxy``)."""
    return [tool for tool in ("redis-server", "haproxy") if shutil.which(tool) is None]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held open together, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def server_env(hosted: bool = True) -> dict[str, str]:
    """The environment of an app server under load: offline (the bundled model), hosted mode (a shared server)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    env.pop(REDIS_URL_ENV, None)  # only a cluster sets it, for its own Redis
    if hosted:
        env["GPTVIZ_HOSTED"] = "1"
    return env


def streamlit_command(port: int) -> list[str]:
    """``streamlit run app.py`` on ``port`` of 127.0.0.1, headless, no file watcher, no usage statistics."""
    return [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
            str(port), "--server.address", HOST, "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none"]


@dataclass
class Proc:
    """One child process and every line it wrote (stdout and stderr together)."""

    name: str  # "redis", "r1", "w1", "haproxy": r<i> is also the replica's HAProxy server name and cookie
    popen: subprocess.Popen
    log: Path  # the same lines, in the cluster's temporary directory
    lines: list[str] = field(default_factory=list)

    def start_reading(self) -> None:
        def read() -> None:
            with open(self.log, "w") as out:
                for line in self.popen.stdout:
                    self.lines.append(line)
                    out.write(line)
                    out.flush()
        threading.Thread(target=read, name=f"read-{self.name}", daemon=True).start()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int = signal.SIGTERM) -> None:
        """Signal it (its whole process group) without waiting."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal it, wait a bounded time, then kill."""
        self.send(sig)
        try:
            self.popen.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.popen.wait(timeout=STOP_SECONDS)

    def tail(self, n: int = 30) -> str:
        return "".join(self.lines[-n:])

    def peak_rss(self) -> int:
        """Bytes: the process's high-water mark of resident memory (VmHWM); 0 once it has exited."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0


def haproxy_config(port: int, replica_ports: list[int], stats_socket: Path) -> str:
    """HAProxy in front of the replicas (the reasons are in the module's docstring)."""
    servers = "\n".join(f"    server r{i + 1} {HOST}:{p} cookie r{i + 1} check inter {HEALTH_CHECK_SECONDS}s "
                        "fall 2 rise 1" for i, p in enumerate(replica_ports))
    return f"""\
global
    log stdout format raw local0
    stats socket {stats_socket} mode 600 level admin
    maxconn 2000

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    # Plain HTTP (the page, static files, health): short. A websocket, once upgraded, lives under
    # "timeout tunnel": a student may keep a page open for a whole lesson.
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s
    # A request whose replica refuses the connection (it died, not yet marked down) is sent to another one at
    # its first retry (1), not its last: a reconnecting student waits milliseconds, not retries × 1 s.
    option redispatch 1
    retries 2

frontend students
    bind {HOST}:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    cookie {AFFINITY_COOKIE} insert indirect nocache
    option httpchk
    http-check send meth GET uri /_stcore/health
    http-check expect string ok
{servers}
"""


class Cluster:
    """Redis, ``replicas`` app servers, ``workers`` decode workers and HAProxy (see the module's docstring)."""

    def __init__(self, replicas: int = 2, workers: int = 1, threads: int | None = None, hosted: bool = True,
                 shared: bool | None = None, timeout: float = 120.0, worker_args: list[str] | None = None,
                 keep_logs: bool = False):
        if replicas < 1 or workers < 0:
            raise ValueError("a cluster needs at least 1 replica and 0 or more workers")
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"{' and '.join(missing)} not installed: apt-get install redis-server haproxy")
        self.shared = redis_backend_available() if shared is None else shared  # replicas share Redis
        if self.shared and not redis_backend_available():
            raise RuntimeError("gptviz.serve.redis does not exist yet: the replicas cannot share a queue")
        self.n_replicas = replicas
        self.n_workers = workers if self.shared else 0  # without the Redis backend each replica decodes itself
        self.threads = threads if threads is not None else (1 if workers >= 2 else None)  # torch threads per worker
        self.hosted = hosted
        self.timeout = timeout  # seconds any one start may take
        self.worker_args = worker_args or []  # more `python -m gptviz worker` options (e.g. --slots 1)
        self.keep_logs = keep_logs  # leave the temporary directory (every process's log) behind on stop
        self.dir: Path | None = None
        self.redis: Proc | None = None
        self.replicas: list[Proc] = []
        self.workers: list[Proc] = []
        self.haproxy: Proc | None = None
        self.port = self.redis_port = 0
        self.replica_ports: list[int] = []
        self._marks: dict[str, int] = {}  # lines per process when the counts were last reset
        self._stopped = False

    # ---- starting and stopping ----------------------------------------------------------------
    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Cluster:
        """Start everything and wait until HAProxy sees every replica healthy; on any failure stop what started."""
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gptviz-cluster-"))
        self.port, self.redis_port, *self.replica_ports = free_ports(2 + self.n_replicas)
        env = server_env(self.hosted)
        if self.shared:
            self.redis = self._spawn("redis", ["redis-server", "--bind", HOST, "--port", str(self.redis_port),
                                               "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                                               "--daemonize", "no"], os.environ)
            self._wait(self.redis, self._redis_ready, "Redis answering PING")
            env[REDIS_URL_ENV] = self.redis_url
        for i, port in enumerate(self.replica_ports):
            self.replicas.append(self._spawn(f"r{i + 1}", streamlit_command(port), env))
        for i in range(self.n_workers):
            self.workers.append(self._spawn(f"w{i + 1}", self.worker_command(), env))
        for i, replica in enumerate(self.replicas):
            self._wait(replica, lambda i=i: self._healthy(self.replica_url(i)), f"{replica.name} healthy")
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.port, self.replica_ports, self.dir / "haproxy.sock"))
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"HAProxy refused its config {cfg}:\n{check.stdout}{check.stderr}")
        self.haproxy = self._spawn("haproxy", ["haproxy", "-db", "-f", str(cfg)], os.environ)
        self._wait(self.haproxy, lambda: self.backend_states() == {r.name: "UP" for r in self.replicas},
                   "HAProxy seeing every replica UP")
        for w in self.workers:
            self._wait(w, lambda w=w: any(WORKER_READY.search(line) for line in w.lines), f"worker {w.name} ready")

    def worker_command(self) -> list[str]:
        command = [sys.executable, "-m", "gptviz", "worker", *self.worker_args]
        return command + (["--threads", str(self.threads)] if self.threads else [])

    def _spawn(self, name: str, command: list[str], env) -> Proc:
        # Its own session: Ctrl-C in a terminal reaches this script only, which then stops every child in order.
        popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, errors="replace", start_new_session=True)
        proc = Proc(name, popen, self.dir / f"{name}.log")
        proc.start_reading()
        return proc

    def _wait(self, proc: Proc, ready, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
            with contextlib.suppress(OSError):
                if ready():
                    return
            time.sleep(0.2)
        raise TimeoutError(f"no {what} after {self.timeout:.0f} s:\n{proc.tail()}")

    def stop(self) -> None:
        """Stop every process (HAProxy first: no new students; Redis last: workers and replicas still reach it
        while they stop) and remove the temporary directory. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for group in ([self.haproxy], [*self.replicas, *self.workers], [self.redis]):
            procs = [p for p in group if p is not None]
            for proc in procs:  # all of a group at once: each replica's or worker's shutdown takes seconds
                proc.send()
            for proc in procs:
                with contextlib.suppress(Exception):
                    proc.stop()
        if self.dir is not None and self.keep_logs:
            print(f"cluster logs kept in {self.dir}", flush=True)
        elif self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        atexit.unregister(self.stop)

    # ---- addresses and health ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """HAProxy: where students go."""
        return f"http://{HOST}:{self.port}"

    http = url  # what scripts/load_test.py's students connect to (a load_test.Server has it too)

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def replica_url(self, i: int) -> str:
        """Replica ``i`` (0-based) directly, bypassing HAProxy."""
        return f"http://{HOST}:{self.replica_ports[i]}"

    @staticmethod
    def _healthy(url: str) -> bool:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().strip() == b"ok"

    def _redis_ready(self) -> bool:
        with socket.create_connection((HOST, self.redis_port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def backend_states(self) -> dict[str, str]:
        """HAProxy's view of each replica: {"r1": "UP", "r2": "DOWN", …} (its stats socket's ``show stat``)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(self.dir / "haproxy.sock"))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = list(csv.reader(data.decode().lstrip("# ").splitlines()))
        header, body = rows[0], [r for r in rows[1:] if r]
        col = {name: header.index(name) for name in ("pxname", "svname", "status")}
        return {r[col["svname"]]: r[col["status"]].split()[0] for r in body
                if r[col["pxname"]] == "replicas" and r[col["svname"]] not in ("FRONTEND", "BACKEND")}

    def wait_states(self, want: dict[str, str], timeout: float = 15.0) -> bool:
        """Wait (bounded) until HAProxy reports these states, e.g. {"r1": "DOWN"}; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                states = self.backend_states()
                if all(states.get(k, "").startswith(v) for k, v in want.items()):
                    return True
            time.sleep(0.2)
        return False

    # ---- faults --------------------------------------------------------------------------------
    def kill_replica(self, i: int) -> None:
        """Replica ``i`` (0-based) dies at once (SIGKILL: no goodbye to its students)."""
        self.replicas[i].stop(signal.SIGKILL)

    def kill_worker(self, i: int) -> None:
        """Worker ``i`` (0-based) dies at once, mid-decode if it was decoding (SIGKILL)."""
        self.workers[i].stop(signal.SIGKILL)

    def stop_redis(self) -> None:
        """Redis goes away (SIGKILL: as a crash or a network cut looks to its clients)."""
        if self.redis is not None:
            self.redis.stop(signal.SIGKILL)

    # ---- logs ----------------------------------------------------------------------------------
    def processes(self) -> list[Proc]:
        """Every process that decodes or serves students: replicas and workers."""
        return [*self.replicas, *self.workers]

    def reset_counts(self) -> None:
        """Count decodes from now on (e.g. after a warm-up)."""
        self._marks = {p.name: len(p.lines) for p in self.processes()}

    def lines(self, pattern: re.Pattern) -> list[tuple[str, str]]:
        """(process name, line) for each line matching ``pattern`` since the last reset, over every process."""
        return [(p.name, line) for p in self.processes() for line in p.lines[self._marks.get(p.name, 0):]
                if pattern.search(line)]

    def decodes(self) -> int:
        """First-result decodes started since the last reset, over every replica and worker."""
        return len(self.lines(DECODE_STARTED))

    def decodes_by_process(self) -> dict[str, int]:
        counts = {p.name: 0 for p in self.processes()}
        for name, _ in self.lines(DECODE_STARTED):
            counts[name] += 1
        return counts

    def decode_seconds(self) -> list[float]:
        """Wall time of each first-result decode finished since the last reset (their log lines)."""
        return [float(DECODE_FINISHED.search(line).group(1)) for _, line in self.lines(DECODE_FINISHED)]

    def finished_ok_by_key(self) -> dict[str, int]:
        """Decodes that finished "ok" and were recorded, per key (lines without a key count under "?")."""
        counts: dict[str, int] = {}
        for _, line in self.lines(DECODE_FINISHED):
            if DECODE_FINISHED.search(line).group(2) == "ok":
                key = m.group(1) if (m := KEY.search(line)) else "?"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def proxied(self, path: str, cookie: str | None = None) -> dict[str, int]:
        """Requests for ``path`` HAProxy sent to each replica (its log; a websocket is logged once it closed).
        ``cookie``: only those whose affinity cookie HAProxy found so: "N" none (balanced), "V" valid (sent where it
        says), "D" naming a replica that was down (redispatched) — the third letter of its termination state."""
        counts: dict[str, int] = {}
        for line in self.haproxy.lines if self.haproxy else []:
            m = PROXIED.search(line)
            if m and m.group(4).split("?")[0] == path and cookie in (None, m.group(2)[2]):
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return counts

    def peak_rss(self) -> int:
        """Bytes: the largest high-water mark of resident memory over the replicas and workers."""
        return max((p.peak_rss() for p in self.processes()), default=0)

    def describe(self) -> str:
        mode = f"shared through Redis at {self.redis_url}" if self.shared else \
            "no Redis: each replica decodes on its own"
        workers = f"{len(self.workers)} worker(s), torch threads {self.threads or 'default'}" if self.shared else \
            "no workers"
        replicas = ", ".join(f"{r.name} {self.replica_url(i)}" for i, r in enumerate(self.replicas))
        return f"{self.url}  (HAProxy → {replicas}; {workers}; {mode}; logs in {self.dir})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: 1 with 2+ workers)")
    p.add_argument("--not-hosted", action="store_true", help="run the replicas without GPTVIZ_HOSTED=1")
    p.add_argument("--no-redis", action="store_true", help="replicas each with their own queue, no workers")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds any one process may take to start")
    p.add_argument("--keep-logs", action="store_true", help="leave every process's log behind")
    args = p.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"error: {' and '.join(missing)} not installed: apt-get install redis-server haproxy", file=sys.stderr)
        return 2
    if args.replicas < 1 or args.workers < 0 or (args.threads is not None and args.threads < 1):
        print("error: --replicas ≥ 1, --workers ≥ 0, --threads ≥ 1", file=sys.stderr)
        return 2
    # SIGTERM (e.g. `timeout`, a service manager) stops the children too, as Ctrl-C does; Ctrl-C works even where
    # the shell started this with SIGINT ignored (a background job).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cluster = Cluster(args.replicas, args.workers, args.threads, hosted=not args.not_hosted,
                      shared=False if args.no_redis else None, timeout=args.timeout, keep_logs=args.keep_logs)
    try:
        cluster.start()
        print(cluster.describe(), flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
            dead = [p.name for p in cluster.processes() if not p.alive]
            if dead:
                print(f"stopping: {', '.join(dead)} exited", flush=True)
                return 1
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print(f"decodes started per process: {cluster.decodes_by_process()}", flush=True)
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
