"""Load test: a class of students on one real `streamlit run app.py` server (hosted mode).

    python scripts/load_test.py                          # every scenario in ALL (~10+ min on 2 cores)
    python scripts/load_test.py a --students 30          # (a) 30 students open the same link at once
    python scripts/load_test.py a --students 30 --new 128
    python scripts/load_test.py b --students 30          # (b) 30 students, 30 different settings
    python scripts/load_test.py b --students 8 --new 64 --client browser
    python scripts/load_test.py c --runs 5 --hogs 2      # (c) the default run 5x beside 2 CPU-burning processes
    python scripts/load_test.py d                        # (d) a student switches page during the decode
    python scripts/load_test.py e                        # (e) 60 students, one link, 2 replicas behind HAProxy
    python scripts/load_test.py f                        # (f) 60 students over 6 settings, 2 replicas
    python scripts/load_test.py g                        # (g) 6 settings: 2 workers × 1 thread vs 1 worker × 2
    python scripts/load_test.py h                        # (h) faults: a worker killed, a replica killed, Redis stopped
    python scripts/load_test.py cluster                  # e–h (a cluster of scripts/cluster.py each; ~10 min)

Every scenario a–d starts a fresh server, e–h a fresh cluster (scripts/cluster.py: Redis, app replicas,
decode workers, HAProxy) whose decodes are counted over every replica and worker. A student is either
a real headless Chromium (selenium, Debian's chromium + chromedriver; the default for N ≤ 8 in a and b)
or a websocket client that sends what a browser sends (a GET of the page, whose cookies it keeps, then
a ``BackMsg`` with the share link's query string and page) and reads the ``ForwardMsg``s that come back
(the default otherwise: 30 Chromium processes would compete with the server for the CPU). Both go
through the real server, its session threads, queue and caches.

Printed per student: time to the first result (first metric of the decoded run) and to the first
chart, the queue wait (from the first "… ahead of you" message to the decode starting), the place
it was first shown, and the speed-up the page showed. Per scenario: percentiles, the number of
decodes the server executed (read from its log lines ``gptviz.serve decode started decodes_executed=N``)
and the server's peak RSS (VmHWM). Nothing here asserts a target: it prints them beside the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import cluster  # scripts/cluster.py: the same server command and environment, and the cluster scenarios

ROOT = Path(__file__).resolve().parent.parent
PAGE = "timing"  # the share link's page: it shows the speed-up and draws charts
PROMPTS = [  # different students, different prompts (the app's presets and more)
    "ROMEO.\nBut soft, what light through yonder window breaks?",
    "HAMLET.\nTo be, or not to be, that is the question:",
    "KING HENRY.\nOnce more unto the breach, dear friends, once more;",
    "One, two, three, four, five,",
    "JULIET.\nO Romeo, Romeo, wherefore art thou Romeo?",
    "MACBETH.\nTomorrow, and tomorrow, and tomorrow,",
]
WAITING = "ahead of you"  # the app's queue message
TIMING_LINE = "timing: "  # the sidebar's timing line ("timing: pass 2 of up to 3", then "timing: 2 passes, …")
DECODES = re.compile(r"decodes_executed=(\d+)")
DECODE_SECONDS = re.compile(r"decode finished in ([\d.]+)s")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1400,1000")


# ---- the server ------------------------------------------------------------------------------
class Server:
    """A fresh `streamlit run app.py` in hosted mode; its output is kept for the decode counter."""

    def __init__(self, timeout: float, hosted: bool = True):
        (self.port,) = cluster.free_ports(1)
        self.proc = subprocess.Popen(cluster.streamlit_command(self.port), cwd=ROOT, env=cluster.server_env(hosted),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.decodes_before = 0
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited:\n" + "".join(self.lines[-40:]))
            try:
                with urllib.request.urlopen(f"{self.http}/_stcore/health", timeout=1) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"the server was not healthy after {timeout} s")

    def warm(self) -> None:
        """Load the model and the pages before any clock starts (a class opens a link to a running server)."""
        warm = run_ws(self, [Seen("warm-up", query(1, "Warm up."))], PAGE)[0]
        if warm.errors or warm.finished is None:
            raise RuntimeError(f"the warm-up visit failed: {warm.errors}")
        self.decodes_before = self.decodes() or 0

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def decodes(self) -> int | None:
        """Decodes the server executed since the warm-up (None: this server does not log them)."""
        counts = [int(m.group(1)) for line in self.lines if (m := DECODES.search(line))]
        return max(counts) - self.decodes_before if counts else None

    def decode_seconds(self) -> list[float]:
        """Wall time of each decode the server finished since the warm-up, from its log lines."""
        times = [float(m.group(1)) for line in self.lines if (m := DECODE_SECONDS.search(line))]
        return times[self.decodes_before:]

    def peak_rss(self) -> int:
        """Bytes: the server process's high-water mark of resident memory (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def started(timeout: float) -> Server:
    server = Server(timeout)
    try:
        server.warm()
    except BaseException:
        server.stop()
        raise
    return server


# ---- what one student saw ----------------------------------------------------------------------
@dataclass
class Seen:
    name: str
    query: str
    start: float = 0.0
    first_result: float | None = None  # seconds to the first metric of the decoded run
    first_chart: float | None = None  # seconds to the first chart
    waiting_from: float | None = None  # first "… ahead of you" message
    waiting_to: float | None = None  # first sign of the decode starting after it
    place: str = ""  # the first queue message shown
    speedup: float | None = None
    finished: float | None = None
    timing_done: bool = False  # the sidebar's timing line said the refinement was complete
    errors: list[str] = field(default_factory=list)
    alerts: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, text): errors, warnings
    cookies: dict[str, str] = field(default_factory=dict)  # what the server set, sent back as a browser does
    route: list[str] = field(default_factory=list)  # the replica (HAProxy's cookie) of each connection, in order
    reconnects: int = 0  # connections lost (a replica died) and opened again

    @property
    def replica(self) -> str | None:
        """The replica this student's first connection reached (None: no HAProxy in front)."""
        return self.route[0] if self.route else None

    @property
    def queue_wait(self) -> float:
        if self.waiting_from is None:
            return 0.0
        return (self.waiting_to or self.finished or self.waiting_from) - self.start

    def text(self, body: str, now: float) -> None:
        if TIMING_LINE in body:  # the sidebar's timing line, not the queue's message
            self.timing_done = self.timing_done or "of up to" not in body
            return
        if WAITING in body:
            if self.waiting_from is None:
                self.waiting_from, self.place = now, body.split("\n")[0][:80]
        elif self.waiting_from is not None and self.waiting_to is None and ("step" in body or "Decoding" in body):
            self.waiting_to = now

    def metric(self, label: str, value: str, now: float) -> None:
        if self.first_result is None:
            self.first_result = now - self.start
        if self.waiting_from is not None and self.waiting_to is None:
            self.waiting_to = now
        if label.startswith("Speed-up"):
            number = re.match(r"[\d.]+", value)
            self.speedup = float(number.group()) if number else None


# ---- websocket student ---------------------------------------------------------------------------
RECONNECT_SECONDS = 1.0  # a browser's first retry after its websocket dropped (Streamlit's frontend backs off)


def _set_cookies(seen: Seen, headers: list[str]) -> None:
    for header in headers:
        seen.cookies.update({k: m.value for k, m in SimpleCookie(header).items()})


async def _open(server: Server, seen: Seen, page: str, timeout: float):
    """Open the page as a browser does: GET it (a load balancer sets its affinity cookie on that response), then
    the websocket with the cookies it got, so both reach the same replica."""
    import websockets

    def get() -> None:
        request = urllib.request.Request(f"{server.http}/{page}?{seen.query}", headers=_cookie_header(seen))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            _set_cookies(seen, response.headers.get_all("Set-Cookie") or [])
            response.read()

    await asyncio.to_thread(get)
    ws = await websockets.connect(f"ws{server.http.removeprefix('http')}/_stcore/stream", subprotocols=["streamlit"],
                                  origin=server.http, max_size=None, open_timeout=60,
                                  additional_headers=_cookie_header(seen))
    _set_cookies(seen, ws.response.headers.get_all("Set-Cookie"))
    if cluster.AFFINITY_COOKIE in seen.cookies:
        seen.route.append(seen.cookies[cluster.AFFINITY_COOKIE])
    return ws


def _cookie_header(seen: Seen) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in seen.cookies.items())} if seen.cookies else {}


async def ws_student(server: Server, seen: Seen, page: str, clicks: int = 0, switch_to: str | None = None,
                     timeout: float = 600.0, stay: float = 0.0, refined: bool = False,
                     reconnects: int = 0) -> list[Seen]:
    """Open the link as a browser would; optionally press Run ``clicks`` times after it, or switch page
    (``switch_to``) as soon as the decode shows progress; then stay connected ``stay`` seconds more (a student
    still looking at the page: the server keeps refining the timing for an open session only). ``refined``: after
    each run, rerun the page once a second (as a browser's timing line does) until the timing is complete, and
    keep the speed-up it then shows. ``reconnects``: a connection lost before the run finished (its replica died)
    is opened again up to this many times, and the page rerun there, as Streamlit's frontend does; the clock keeps
    running. Returns one Seen per script run measured."""
    import websockets.exceptions
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    lost = (websockets.exceptions.WebSocketException, OSError)  # a dead replica: closed, refused or a 503
    runs = [seen]
    ws = await _open(server, seen, page, timeout)
    try:
        async def rerun(page_name: str, run_button: str | None = None) -> None:
            msg = BackMsg()
            msg.rerun_script.query_string = seen.query
            msg.rerun_script.page_name = page_name
            if run_button is not None:
                widget = msg.rerun_script.widget_states.widgets.add()
                widget.id, widget.trigger_value = run_button, True
            await ws.send(msg.SerializeToString())

        async def receive(current: Seen) -> bytes:
            """The next message; a lost connection is opened again (``reconnects``) and the page rerun."""
            nonlocal ws
            while True:
                try:
                    return await asyncio.wait_for(ws.recv(), timeout)
                except TimeoutError:  # (an OSError too) the server said nothing for `timeout` s: not a lost replica
                    raise
                except lost:
                    if seen.reconnects >= reconnects:
                        raise
                    seen.reconnects += 1
                    await asyncio.sleep(RECONNECT_SECONDS)
                    with contextlib.suppress(*lost):
                        ws = await _open(server, seen, page, timeout)
                        await rerun(page)

        async def read_until_finished(current: Seen, switch: str | None) -> str | None:
            button = None
            while True:
                raw = await receive(current)
                now = time.perf_counter()
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                kind = msg.WhichOneof("type")
                if kind == "script_finished":
                    # A run stopped by our own page switch ends early "for rerun": keep reading.
                    if msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN and switch is None:
                        current.finished = now - current.start
                        return button
                    continue
                if kind != "delta":
                    continue
                delta = msg.delta
                if delta.WhichOneof("type") == "add_block" and delta.add_block.HasField("expandable"):
                    current.text(delta.add_block.expandable.label, now)
                    continue
                if delta.WhichOneof("type") != "new_element":
                    continue
                element = delta.new_element
                which = element.WhichOneof("type")
                if which == "metric":
                    current.metric(element.metric.label, element.metric.body, now)
                elif which == "plotly_chart" and current.first_chart is None:
                    current.first_chart = now - current.start
                elif which == "exception":
                    current.errors.append(element.exception.message[:200])
                    current.alerts.append((now - current.start, element.exception.message[:200]))
                elif which == "alert" and element.alert.format in (1, 2):  # ERROR, WARNING
                    if element.alert.format == 1:
                        current.errors.append(element.alert.body[:200])
                    current.alerts.append((now - current.start, element.alert.body[:200]))
                elif which == "button" and element.button.label == "Run":
                    button = element.button.id
                elif which in ("text", "markdown", "progress"):
                    current.text(getattr(element, which).body if which != "progress"
                                 else element.progress.text, now)
                if switch is not None and which == "progress" and "step" in element.progress.text:
                    await rerun(switch)
                    switch = None

        async def until_refined(current: Seen) -> None:
            deadline = time.monotonic() + timeout
            while refined and not current.timing_done and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                look = Seen(current.name, current.query, start=time.perf_counter())
                await rerun(page)
                await read_until_finished(look, None)
                current.speedup, current.timing_done = look.speedup, look.timing_done

        seen.start = time.perf_counter()
        await rerun(page)
        button = await read_until_finished(seen, switch_to)
        await until_refined(seen)
        for i in range(clicks):
            if button is None:
                raise RuntimeError("no Run button on the page")
            again = Seen(f"{seen.name} run {i + 2}", seen.query)
            runs.append(again)
            again.start = time.perf_counter()
            await rerun(page, button)
            button = await read_until_finished(again, None) or button
            await until_refined(again)
        if stay > 0:
            end = time.monotonic() + stay
            while (left := end - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    break
    finally:
        await ws.close()
    return runs


def run_ws(server: Server, students: list[Seen], page: str, **kwargs) -> list[Seen]:
    async def everyone():
        results = await asyncio.gather(*(ws_student(server, s, page, **kwargs) for s in students),
                                       return_exceptions=True)
        out = []
        for s, r in zip(students, results, strict=True):
            if isinstance(r, BaseException):
                s.errors.append(f"client: {r.__class__.__name__}: {r}")
                out.append(s)
            else:
                out.extend(r)
        return out
    return asyncio.run(everyone())


# ---- browser student -----------------------------------------------------------------------------
READ_PAGE_JS = """
const text = document.body ? document.body.innerText : "";
const metrics = [...document.querySelectorAll('[data-testid="stMetric"]')].map(m => [
  (m.querySelector('[data-testid="stMetricLabel"]') || {}).innerText || "",
  (m.querySelector('[data-testid="stMetricValue"]') || {}).innerText || ""]);
const charts = document.querySelectorAll('[data-testid="stPlotlyChart"] .main-svg').length;
const errors = [...document.querySelectorAll('[data-testid="stException"], [data-testid="stAlertContentError"]')]
  .map(e => e.innerText.slice(0, 200));
const running = !!document.querySelector('[data-testid="stStatusWidget"]');
const waiting = text.split("\\n").filter(l => l.includes(arguments[0])).slice(0, 1);
return {metrics, charts, errors, running, waiting};
"""


def run_browser(server: Server, students: list[Seen], page: str, clicks: int = 0, timeout: float = 600.0):
    """Each student a headless Chromium, started before the clock; all open the link at the same moment."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    def browser():
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                                options=options)

    drivers = [browser() for _ in students]
    for d in drivers:
        d.get("about:blank")
    gate = threading.Barrier(len(students))
    out: list[list[Seen]] = [[] for _ in students]

    def watch(driver, current: Seen) -> None:
        deadline = time.perf_counter() + timeout
        settled = 0
        while time.perf_counter() < deadline:
            page_state = driver.execute_script(READ_PAGE_JS, WAITING)
            now = time.perf_counter()
            for line in page_state["waiting"]:
                current.text(line, now)
            for label, value in page_state["metrics"]:
                current.metric(label, value, now)
            if page_state["charts"] and current.first_chart is None:
                current.first_chart = now - current.start
            current.errors = page_state["errors"]
            settled = settled + 1 if (current.first_chart is not None and not page_state["running"]) else 0
            if settled >= 3:
                current.finished = now - current.start
                return
            time.sleep(0.1)
        current.errors.append(f"timed out after {timeout:.0f} s")

    def student(i: int) -> None:
        from selenium.webdriver.common.by import By

        driver, seen = drivers[i], students[i]
        try:
            gate.wait()
            seen.start = time.perf_counter()
            driver.get(f"{server.http}/{page}?{seen.query}")
            watch(driver, seen)
            out[i].append(seen)
            for c in range(clicks):
                again = Seen(f"{seen.name} run {c + 2}", seen.query)
                button = driver.find_element(By.XPATH, "//button[.//p[text()='Run']]")
                old = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]')
                again.start = time.perf_counter()
                button.click()
                while old and not _stale(old[0]):  # the page redraws: wait for the old chart to go
                    time.sleep(0.05)
                watch(driver, again)
                out[i].append(again)
        except Exception as exc:  # report it with the others
            seen.errors.append(f"browser: {exc.__class__.__name__}: {str(exc)[:200]}")
            out[i].append(seen)

    threads = [threading.Thread(target=student, args=(i,)) for i in range(len(students))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for d in drivers:
            d.quit()
    return [s for group in out for s in group]


def _stale(element) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        element.is_displayed()
        return False
    except StaleElementReferenceException:
        return True


# ---- scenarios ---------------------------------------------------------------------------------
def query(new: int, prompt: str = PROMPTS[0], **extra) -> str:
    return urllib.parse.urlencode({"model": "bundled", "prompt": prompt, "new": new, **extra})


def different_settings(i: int, new: int) -> str:
    """Student i's own settings: another prompt, sampling with its own seed (no two alike)."""
    return query(new, PROMPTS[i % len(PROMPTS)], sampling="sample", seed=i, temperature=0.8)


def students_for(n: int, queries: list[str]) -> list[Seen]:
    return [Seen(f"student {i + 1:2d}", q) for i, q in enumerate(queries)]


def drive(server: Server, client: str, students: list[Seen], page: str = PAGE, **kwargs) -> list[Seen]:
    if client == "browser":
        return run_browser(server, students, page, **{k: v for k, v in kwargs.items() if k == "clicks"})  # a browser
        # redraws by itself when the timing is refined: its speed-up is read at the end of each run's wait
    return run_ws(server, students, page, **kwargs)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def fmt(x: float | None, unit: str = "s") -> str:
    return "—" if x is None else f"{x:.2f}{unit}" if unit == "s" else f"{x:.2f}{unit}"


def report(title: str, seen: list[Seen], server: Server, targets: list[str]) -> dict:
    print(f"\n=== {title}")
    print(f"{'student':<16} {'1st result':>10} {'1st chart':>10} {'queue wait':>10} {'speed-up':>9}  "
          "place shown / errors")
    for s in seen:
        extra = s.place + ("  ERRORS: " + " | ".join(s.errors) if s.errors else "")
        print(f"{s.name:<16} {fmt(s.first_result):>10} {fmt(s.first_chart):>10} {fmt(s.queue_wait):>10} "
              f"{fmt(s.speedup, '×'):>9}  {extra}")
    results = [s.first_result for s in seen if s.first_result is not None]
    charts = [s.first_chart for s in seen if s.first_chart is not None]
    waits = [s.queue_wait for s in seen]
    speedups = [s.speedup for s in seen if s.speedup is not None]
    summary = {"students": len(seen), "completed": len(results), "errors": sum(bool(s.errors) for s in seen),
               "saw_place": sum(s.waiting_from is not None for s in seen), "decodes": server.decodes(),
               "peak_rss_gb": server.peak_rss() / 1e9}
    for name, values in (("first result", results), ("first chart", charts), ("queue wait", waits)):
        if values:
            print(f"{name:>13}: p50 {pct(values, 50):6.2f} s  p95 {pct(values, 95):6.2f} s  max {max(values):6.2f} s")
            summary[name] = {"p50": pct(values, 50), "p95": pct(values, 95), "max": max(values)}
    if speedups:
        spread = max(speedups) / max(min(speedups), 1e-9)
        print(f"     speed-up: median {statistics.median(speedups):.2f}×  min {min(speedups):.2f}×  "
              f"max {max(speedups):.2f}×  max/min {spread:.2f}")
        summary["speedup"] = {"median": statistics.median(speedups), "min": min(speedups), "max": max(speedups),
                              "max_over_min": spread}
    decode_seconds = server.decode_seconds()
    if decode_seconds:
        print(f"  first-pass decode wall time (server log): median {statistics.median(decode_seconds):.2f} s, "
              f"max {max(decode_seconds):.2f} s over {len(decode_seconds)} decodes")
    decodes = summary["decodes"]
    print(f"   completed {summary['completed']}/{len(seen)}, with errors {summary['errors']}, "
          f"saw their place {summary['saw_place']}; decodes executed "
          f"{'not reported by this server' if decodes is None else decodes}; "
          f"server peak RSS {summary['peak_rss_gb']:.2f} GB")
    for t in targets:
        print(f"   target: {t}")
    sys.stdout.flush()
    return summary


def scenario_a(args) -> dict:
    server = started(args.timeout)
    try:
        link = query(args.new)
        if args.stored:  # the teacher opened the link first and its timing is refined: the class finds it stored
            drive(server, "ws", students_for(1, [link]), refined=True)
            server.decodes_before += server.decodes() or 0
        seen = drive(server, args.client, students_for(args.students, [link] * args.students))
        charts = [s.first_chart for s in seen if s.first_chart is not None]
        decode = server.decode_seconds()
        if charts and decode:
            print(f"\np95 first chart {pct(charts, 95):.2f} s; the decode itself {max(decode):.2f} s: "
                  f"p95 − decode = {pct(charts, 95) - max(decode):.2f} s (target ≤ 3 s)")
        elif charts:
            print(f"\np95 first chart {pct(charts, 95):.2f} s, no decode (the result was stored; target ≤ 3 s)")
        return report(f"(a) {args.students} students open the same link at once ({args.client}, {args.new} new "
                      f"tokens{', result already stored' if args.stored else ''})", seen, server,
                      ["exactly 1 decode (0 when stored); p95 first chart ≤ decode + 3 s (≤ 3 s when stored); "
                       "peak RSS ≤ 1.0 GB"])
    finally:
        server.stop()


def scenario_b(args) -> dict:
    server = started(args.timeout)
    try:
        alone = drive(server, args.client, students_for(1, [different_settings(1000, args.new)]))
        seen = drive(server, args.client,
                     students_for(args.students, [different_settings(i, args.new) for i in range(args.students)]))
        quiet = alone[0].speedup
        print(f"\n(reference: one student alone first, same server: speed-up {fmt(quiet, '×')}, first result "
              f"{fmt(alone[0].first_result)})")
        if quiet:
            within = [s for s in seen if s.speedup is not None and abs(s.speedup / quiet - 1) <= 0.3]
            print(f"students whose speed-up is within ±30% of that: {len(within)}/{len(seen)}")
        return report(f"(b) {args.students} students, {args.students} different settings ({args.client}, "
                      f"{args.new} new tokens)", seen, server,
                      ["all complete, each sees their place; median first result ≤ 15 s (N=30); "
                       "peak RSS ≤ 1.0 GB; N=8 at 64 tokens: speed-ups within ±30% of the single-user value"])
    finally:
        server.stop()


def scenario_c(args) -> dict:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    server = None
    try:
        server = started(args.timeout)
        seen = drive(server, args.client, students_for(1, [query(args.new)]), clicks=args.runs, refined=True)
        first, runs = seen[0], seen[1:]
        print(f"\n(first visit: speed-up {fmt(first.speedup, '×')}; then Run pressed {args.runs}×)")
        return report(f"(c) the default run {args.runs}× (Run on unchanged settings) beside {args.hogs} CPU-burning "
                      f"processes ({args.client}, {args.new} new tokens)", runs, server,
                      ["max/min of the reported speed-up ≤ 1.5; with --hogs 0 (quiet): speed-up > 1.5"])
    finally:
        for h in hogs:
            h.kill()
        if server is not None:
            server.stop()


def scenario_d(args) -> dict:
    server = started(args.timeout)
    try:
        plain = run_ws(server, students_for(1, [query(args.new, PROMPTS[1])]), PAGE)
        seen = run_ws(server, students_for(1, [query(args.new)]), PAGE, switch_to="overview")
        print(f"\n(reference: the same length decoded without switching: first result {fmt(plain[0].first_result)})")
        return report(f"(d) one student switches page during the decode (websocket, {args.new} new tokens)", seen,
                      server, ["2 decodes in all (the reference + the switched one): the switch neither restarts "
                               "nor duplicates the decode"])
    finally:
        server.stop()


# ---- cluster scenarios: replicas behind HAProxy sharing Redis, decodes in workers (scripts/cluster.py) ---------
CLUSTER_STUDENTS = {"e": 60, "f": 60, "g": 6, "h": 12}  # default class size of each cluster scenario
CLUSTER_WORKERS = {"e": 1, "f": 1, "h": 2}  # default workers ((g) compares its own two set-ups; (h) kills one)
DEFAULT_NEW = 24  # new tokens per run
NEW_TOKENS = {"h": 64}  # … but here: (h) a decode long enough to kill something during it
SETTINGS = 6  # (f) the class's distinct settings
KILL_AFTER = 1.0  # (h) seconds into the decode at which a worker or a replica is killed
MESSAGE_WAIT = 60.0  # (h) a student still waiting this long after Redis stopped counts as hung
RECONNECTS = 3  # (h) times a student's page reconnects after losing its replica (Streamlit's frontend retries)


@dataclass
class Address:
    """One replica directly, as a student would reach a lone server (ws_student needs only ``http``)."""

    http: str  # http://127.0.0.1:port


def cluster_started(args, workers: int, threads: int | None = None) -> cluster.Cluster:
    """A fresh cluster, every replica and worker warmed up, decodes counted from then on."""
    c = cluster.Cluster(args.replicas, workers, threads, shared=False if args.no_redis else None,
                        timeout=args.timeout, keep_logs=args.keep_logs).start()
    try:
        for i in range(len(c.replicas)):  # each replica loads the model and the pages (a stored result on r2…)
            warm = run_ws(Address(c.replica_url(i)), [Seen("warm-up", query(1, "Warm up."))], PAGE)[0]
            if warm.errors or warm.finished is None:
                raise RuntimeError(f"the warm-up visit of r{i + 1} failed: {warm.errors}")
        if len(c.workers) > 1:  # … and each worker its model: as many different decodes at once as workers
            warm = run_ws(Address(c.replica_url(0)), students_for(len(c.workers), [
                query(1, f"Warm up {j}.") for j in range(len(c.workers))]), PAGE)
            if any(w.errors or w.finished is None for w in warm):
                raise RuntimeError(f"the workers' warm-up failed: {[w.errors for w in warm]}")
        c.reset_counts()
    except BaseException:
        c.stop()
        raise
    print(f"\ncluster: {c.describe()}", flush=True)
    return c


def routes(seen: list[Seen]) -> str:
    """How many students each replica served first, and how many moved: "r1 30, r2 30; 0 reconnected"."""
    counts: dict[str, int] = {}
    for s in seen:
        counts[s.replica or "?"] = counts.get(s.replica or "?", 0) + 1
    moved = sum(len(set(s.route)) > 1 for s in seen)
    return f"{', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}; {moved} moved to another replica"


def print_decodes(c: cluster.Cluster, target: str) -> None:
    print(f"decodes started in total: {c.decodes()} (per process {c.decodes_by_process()}; target {target})")


def in_background(c: cluster.Cluster, students: list[Seen], **kwargs) -> tuple[threading.Thread, list[Seen]]:
    """The class runs on its own thread while the caller injects a fault; each Seen fills in as it goes (a student
    that hangs is still there to report)."""
    thread = threading.Thread(target=run_ws, args=(c, students, PAGE), kwargs=kwargs, daemon=True)
    thread.start()
    return thread, students


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def scenario_e(args) -> dict:
    c = cluster_started(args, args.workers or CLUSTER_WORKERS["e"])
    try:
        link = query(args.new)
        seen = run_ws(c, students_for(args.students, [link] * args.students), PAGE, timeout=args.timeout)
        print(f"\nstudents per replica (HAProxy's cookie): {routes(seen)}")
        print_decodes(c, "exactly 1" if c.shared else "1 with Redis; here 1 per replica")
        charts, decode = [s.first_chart for s in seen if s.first_chart is not None], c.decode_seconds()
        if charts and decode:
            print(f"p95 first chart {pct(charts, 95):.2f} s; the decode itself {max(decode):.2f} s: "
                  f"p95 − decode = {pct(charts, 95) - max(decode):.2f} s (target ≤ 5 s)")
        return report(f"(e) {args.students} students open the same link via {len(c.replicas)} replicas "
                      f"({args.new} new tokens)", seen, c,
                      ["exactly 1 decode over every process; p95 first chart ≤ decode + 5 s"])
    finally:
        c.stop()


def scenario_f(args) -> dict:
    c = cluster_started(args, args.workers or CLUSTER_WORKERS["f"])
    try:
        links = [different_settings(i % SETTINGS, args.new) for i in range(args.students)]
        seen = run_ws(c, students_for(args.students, links), PAGE, timeout=args.timeout)
        print(f"\nstudents per replica (HAProxy's cookie): {routes(seen)}")
        print_decodes(c, f"exactly {SETTINGS}" if c.shared else f"{SETTINGS} with Redis; here up to {SETTINGS} "
                                                               "per replica")
        return report(f"(f) {args.students} students over {SETTINGS} settings via {len(c.replicas)} replicas "
                      f"({args.new} new tokens)", seen, c, [f"exactly {SETTINGS} decodes over every process"])
    finally:
        c.stop()


def scenario_g(args) -> dict:
    if args.no_redis or not cluster.redis_backend_available():
        print("\n(g) needs the Redis backend (gptviz/serve/redis.py) and its workers: skipped")
        return {}
    walls = {}
    for workers, threads in ((2, 1), (1, 2)):
        c = cluster_started(args, workers, threads)
        try:
            links = [different_settings(i, args.new) for i in range(args.students)]
            began = time.perf_counter()
            seen = run_ws(c, students_for(args.students, links), PAGE, timeout=args.timeout)
            walls[(workers, threads)] = wall = time.perf_counter() - began
            decode = c.decode_seconds()
            print(f"\n{workers} worker(s) × {threads} torch thread(s): all {args.students} results in {wall:.2f} s; "
                  f"decodes {c.decodes()} (per process {c.decodes_by_process()}), each "
                  f"{statistics.median(decode) if decode else float('nan'):.2f} s median, "
                  f"{sum(decode):.2f} s summed")
            report(f"(g) {args.students} different settings, {workers} worker(s) × {threads} thread(s) "
                   f"({args.new} new tokens)", seen, c, ["compare the total wall time of the two set-ups"])
        finally:
            c.stop()
    two, one = walls[(2, 1)], walls[(1, 2)]
    print(f"\n(g) total wall time: 2 workers × 1 thread {two:.2f} s, 1 worker × 2 threads {one:.2f} s "
          f"(ratio {one / two:.2f})")
    return {"two_workers_s": two, "one_worker_s": one}


def scenario_h(args) -> dict:
    c = cluster_started(args, args.workers or CLUSTER_WORKERS["h"])
    try:
        out = {}
        if c.shared and len(c.workers) >= 2:
            out["worker"] = _kill_a_worker(c, args)
        else:
            print("\n(h1) killing a worker needs the Redis backend and 2 workers: skipped")
        out["replica"] = _kill_a_replica(c, args)
        if c.shared:
            out["redis"] = _stop_redis(c, args)
        else:
            print("\n(h3) stopping Redis needs the Redis backend: skipped")
        return out
    finally:
        c.stop()


def _decoding(c: cluster.Cluster, where: str = "") -> str | None:
    """The process (name starting with ``where``) that started a decode since the last reset, once one has."""
    names = [name for name, _ in c.lines(cluster.DECODE_STARTED) if name.startswith(where)]
    return names[0] if names else None


def _kill_a_worker(c: cluster.Cluster, args) -> dict:
    c.reset_counts()
    link = query(args.new, PROMPTS[2])
    thread, seen = in_background(c, students_for(args.students, [link] * args.students), timeout=args.timeout)
    if not wait_until(lambda: _decoding(c, "w"), 60):
        print("\n(h1) no worker started the decode within 60 s")
        thread.join(args.timeout)
        return {}
    victim = _decoding(c, "w")
    time.sleep(KILL_AFTER)
    mid = not c.lines(cluster.DECODE_FINISHED)
    c.kill_worker(int(victim[1:]) - 1)
    killed = time.perf_counter()
    thread.join(args.timeout)
    done = [s.start + s.first_result - killed for s in seen if s.first_result is not None]
    when = "mid-decode" if mid else "AFTER it had finished: use more --new tokens"
    print(f"\n(h1) killed worker {victim} {KILL_AFTER:.0f} s into the decode ({when}); decodes started "
          f"{c.decodes()} (per process {c.decodes_by_process()}); finished ok per key {c.finished_ok_by_key()} "
          "(target: the key once)")
    if done:
        print(f"(h1) results reached students {min(done):.2f}–{max(done):.2f} s after the kill")
    return report(f"(h1) {args.students} students on one link, worker {victim} killed mid-decode", seen, c,
                  ["the job is claimed again and finishes once; every student gets the result"])


def _kill_a_replica(c: cluster.Cluster, args) -> dict:
    c.reset_counts()
    link = query(args.new, PROMPTS[3])
    thread, seen = in_background(c, students_for(args.students, [link] * args.students), timeout=args.timeout,
                                 reconnects=RECONNECTS)
    if not wait_until(lambda: _decoding(c), 60):
        print("\n(h2) no decode started within 60 s")
    time.sleep(KILL_AFTER)
    mid = not c.lines(cluster.DECODE_FINISHED)
    c.kill_replica(0)
    killed = time.perf_counter()
    thread.join(args.timeout)
    moved = [s for s in seen if s.replica == "r1"]
    after = [s.start + s.first_chart - killed for s in moved if s.first_chart is not None]
    when = "mid-decode" if mid else "AFTER it had finished: use more --new tokens"
    print(f"\n(h2) killed r1 {KILL_AFTER:.0f} s into the decode ({when}); students per replica: {routes(seen)}; "
          f"r1's {len(moved)} students: {sum(s.first_chart is not None for s in moved)} got the result, "
          f"{sum(s.reconnects for s in moved)} reconnects, now on {sorted({s.route[-1] for s in moved})}")
    if after:
        print(f"(h2) r1's students saw the chart {min(after):.2f}–{max(after):.2f} s after the kill")
    print_decodes(c, "exactly 1" if c.shared else "1 with Redis; here 1 per replica")
    return report(f"(h2) {args.students} students on one link, replica r1 killed mid-decode", seen, c,
                  ["r1's students reconnect through HAProxy and get the result; exactly 1 decode"])


def _stop_redis(c: cluster.Cluster, args) -> dict:
    c.reset_counts()
    link = query(args.new, PROMPTS[4])
    thread, seen = in_background(c, students_for(args.students, [link] * args.students), timeout=MESSAGE_WAIT)
    if not wait_until(lambda: _decoding(c), 60):
        print("\n(h3) no decode started within 60 s")
    time.sleep(KILL_AFTER)
    mid = not c.lines(cluster.DECODE_FINISHED)
    c.stop_redis()
    stopped = time.perf_counter()
    print(f"\n(h3) stopped Redis {KILL_AFTER:.0f} s into the decode "
          f"({'mid-decode' if mid else 'AFTER it had finished: use more --new tokens'})")
    time.sleep(2)
    late_thread, late = in_background(c, students_for(2, [query(args.new, PROMPTS[5])] * 2), timeout=MESSAGE_WAIT)
    thread.join(MESSAGE_WAIT + 30)
    late_thread.join(MESSAGE_WAIT + 30)
    hung = thread.is_alive() or late_thread.is_alive()

    def message(s: Seen) -> tuple[float, str] | None:
        """The first error or warning after the stop: seconds from the stop, or from arriving if later."""
        after = [(s.start + t - max(stopped, s.start), text) for t, text in s.alerts if s.start + t >= stopped]
        return after[0] if after else None

    for group, name, since in ((seen, "waiting", "the stop"), (late, "arriving 2 s after", "arriving")):
        shown = [m for s in group if (m := message(s))]
        times = [t for t, _ in shown]
        summary = f"{len(shown)}/{len(group)} saw a message"
        if times:
            summary += f", {min(times):.2f}–{max(times):.2f} s after {since}; e.g. {shown[0][1]!r}"
        no_message = [s.name for s in group if not message(s)]
        print(f"\n(h3) students {name}: {summary}; without one: {no_message or 'none'}; "
              f"client timeouts: {sum(any('Timeout' in e for e in s.errors) for s in group)}")
    alive = {p.name: p.alive for p in c.processes()}
    print(f"(h3) after Redis stopped: student threads still running: {hung}; processes alive: {alive}")
    return report(f"(h3) {args.students} students waiting on one link, Redis stopped mid-decode", seen + late, c,
                  ["every waiting or arriving student sees a message within seconds; nothing hangs"])


SCENARIOS = {"a": scenario_a, "b": scenario_b, "c": scenario_c, "d": scenario_d, "e": scenario_e, "f": scenario_f,
             "g": scenario_g, "h": scenario_h}
ALL = [  # the README's table of targets, in order: (scenario, students, new tokens, client)
    ("a", 30, 24, "ws"), ("a", 30, 128, "ws"), ("a", 8, 24, "browser"), ("b", 30, 24, "ws"),
    ("b", 8, 64, "browser"), ("c", 1, 24, "ws"), ("d", 1, 24, "ws"),
]
CLUSTER = "efgh"  # `cluster`: every cluster scenario, each at its default class size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scenario", nargs="?", choices=[*SCENARIOS, "all", "cluster"], default="all")
    p.add_argument("--students", type=int, default=None,
                   help=f"class size (30; {', '.join(f'{k} {v}' for k, v in CLUSTER_STUDENTS.items())})")
    p.add_argument("--new", type=int, default=None, help=f"new tokens per run ({DEFAULT_NEW}; h {NEW_TOKENS['h']})")
    p.add_argument("--client", choices=["auto", "ws", "browser"], default="auto",
                   help="auto: real Chromium for ≤ 8 students, the websocket client above that (a–d)")
    p.add_argument("--stored", action="store_true", help="(a) the link's result is already stored when the class comes")
    p.add_argument("--runs", type=int, default=5, help="(c) times Run is pressed (5)")
    p.add_argument("--hogs", type=int, default=2, help="(c) CPU-burning processes beside the server (2)")
    p.add_argument("--replicas", type=int, default=2, help="(e–h) app replicas behind HAProxy (2)")
    p.add_argument("--workers", type=int, default=None,
                   help=f"(e, f, h) decode workers ({', '.join(f'{k} {v}' for k, v in CLUSTER_WORKERS.items())})")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server or a student")
    p.add_argument("--keep-logs", action="store_true", help="(e–h) leave each cluster's process logs behind")
    p.add_argument("--no-redis", action="store_true", help="(e–h) the baseline: replicas with their own queues")
    args = p.parse_args(argv)
    if (args.students is not None and args.students < 1) or args.replicas < 1 or (args.workers or 1) < 1:
        p.error("--students, --replicas and --workers must be at least 1")
    if args.scenario in SCENARIOS:
        args.students = args.students or CLUSTER_STUDENTS.get(args.scenario, 30)
        args.new = args.new or NEW_TOKENS.get(args.scenario, DEFAULT_NEW)
        if args.client == "auto":
            args.client = "browser" if args.students <= 8 and args.scenario in "ab" else "ws"
        SCENARIOS[args.scenario](args)
        return 0
    if args.scenario == "cluster":
        for scenario in CLUSTER:
            SCENARIOS[scenario](argparse.Namespace(**{**vars(args), "students": CLUSTER_STUDENTS[scenario],
                                                      "new": args.new or NEW_TOKENS.get(scenario, DEFAULT_NEW)}))
        return 0
    for scenario, students, new, client in ALL:
        SCENARIOS[scenario](argparse.Namespace(**{**vars(args), "students": students, "new": new, "client": client}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
