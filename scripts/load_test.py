"""Load test: a class of students on one real `streamlit run app.py` server (hosted mode).

    python scripts/load_test.py                          # every scenario in ALL (~10+ min on 2 cores)
    python scripts/load_test.py a --students 30          # (a) 30 students open the same link at once
    python scripts/load_test.py a --students 30 --new 128
    python scripts/load_test.py b --students 30          # (b) 30 students, 30 different settings
    python scripts/load_test.py b --students 8 --new 64 --client browser
    python scripts/load_test.py c --runs 5 --hogs 2      # (c) the default run 5x beside 2 CPU-burning processes
    python scripts/load_test.py d                        # (d) a student switches page during the decode

Every scenario starts a fresh server. A student is either a real headless Chromium (selenium,
Debian's chromium + chromedriver; the default for N ≤ 8) or a websocket client that sends what a
browser sends (a ``BackMsg`` with the share link's query string and page) and reads the
``ForwardMsg``s that come back (the default for larger N: 30 Chromium processes would compete
with the server for the CPU). Both go through the real server, its session threads, queue and caches.

Printed per student: time to the first result (first metric of the decoded run) and to the first
chart, the queue wait (from the first "… ahead of you" message to the decode starting), the place
it was first shown, and the speed-up the page showed. Per scenario: percentiles, the number of
decodes the server executed (read from its log lines ``gptviz.serve decode started decodes_executed=N``)
and the server's peak RSS (VmHWM). Nothing here asserts a target: it prints them beside the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if hosted:
            env["GPTVIZ_HOSTED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(self.port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
async def ws_student(server: Server, seen: Seen, page: str, clicks: int = 0, switch_to: str | None = None,
                     timeout: float = 600.0, stay: float = 0.0, refined: bool = False) -> list[Seen]:
    """Open the link as a browser would; optionally press Run ``clicks`` times after it, or switch page
    (``switch_to``) as soon as the decode shows progress; then stay connected ``stay`` seconds more (a student
    still looking at the page: the server keeps refining the timing for an open session only). ``refined``: after
    each run, rerun the page once a second (as a browser's timing line does) until the timing is complete, and
    keep the speed-up it then shows. Returns one Seen per script run measured."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    runs = [seen]
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/_stcore/stream", subprotocols=["streamlit"],
                                  origin=server.http, max_size=None, open_timeout=60) as ws:
        async def rerun(page_name: str, run_button: str | None = None) -> None:
            msg = BackMsg()
            msg.rerun_script.query_string = seen.query
            msg.rerun_script.page_name = page_name
            if run_button is not None:
                widget = msg.rerun_script.widget_states.widgets.add()
                widget.id, widget.trigger_value = run_button, True
            await ws.send(msg.SerializeToString())

        async def read_until_finished(current: Seen, switch: str | None) -> str | None:
            button = None
            while True:
                raw = await asyncio.wait_for(ws.recv(), timeout)
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
                elif which == "alert" and element.alert.format == 1:  # ERROR
                    current.errors.append(element.alert.body[:200])
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
                      ["all complete, each sees their place; median first result ≤ 30 s (N=30); "
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


SCENARIOS = {"a": scenario_a, "b": scenario_b, "c": scenario_c, "d": scenario_d}
ALL = [  # the README's table of targets, in order: (scenario, students, new tokens, client)
    ("a", 30, 24, "ws"), ("a", 30, 128, "ws"), ("a", 8, 24, "browser"), ("b", 30, 24, "ws"),
    ("b", 8, 64, "browser"), ("c", 1, 24, "ws"), ("d", 1, 24, "ws"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scenario", nargs="?", choices=[*SCENARIOS, "all"], default="all")
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--new", type=int, default=24, help="new tokens per run (24)")
    p.add_argument("--client", choices=["auto", "ws", "browser"], default="auto",
                   help="auto: real Chromium for ≤ 8 students, the websocket client above that")
    p.add_argument("--stored", action="store_true", help="(a) the link's result is already stored when the class comes")
    p.add_argument("--runs", type=int, default=5, help="(c) times Run is pressed (5)")
    p.add_argument("--hogs", type=int, default=2, help="(c) CPU-burning processes beside the server (2)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server or a student")
    args = p.parse_args(argv)
    if args.scenario != "all":
        if args.client == "auto":
            args.client = "browser" if args.students <= 8 and args.scenario in "ab" else "ws"
        SCENARIOS[args.scenario](args)
        return 0
    for scenario, students, new, client in ALL:
        SCENARIOS[scenario](argparse.Namespace(**{**vars(args), "students": students, "new": new, "client": client}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
