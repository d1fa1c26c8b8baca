"""Whether the int4/int2 caches can run here: optimum-quanto compiles a C++ extension on first use.

The package is pure Python, but its unpacking kernel is built by ``torch.utils.cpp_extension.load`` into
``site-packages/optimum/quanto/library/extensions/cpp/build`` the first time an int4/int2 cache is read
(about a minute on 2 cores). That needs a C++ compiler (``c++``), ``ninja`` on the PATH and a writable
site-packages. The build is tried once per process by running a real quanto cache on a tiny model:
a server starts it in the background when it starts (``warm_in_background``), so no student waits for
it; meanwhile, or if it failed, int4/int2 are left out with the reason and every other variant runs.
"""

from __future__ import annotations

import atexit
import importlib.util
import subprocess
import threading
import time
from pathlib import Path

QUANTO_PIN = "optimum-quanto==0.2.7"
STALE_LOCK = 900.0  # seconds after which a build lock is a dead process's (a build takes 1–5 min on 2 cores)
EXIT_WAIT = 120.0  # seconds a process exiting waits for the build to finish (it cannot be interrupted safely)
NEEDS = ("a C++ compiler (c++), ninja on the PATH and a writable site-packages (Debian: `apt-get install g++`, "
         "`pip install ninja`); then restart")

_lock = threading.Lock()
_state: dict = {}  # "result": None (usable) or why not; "started": when a build began; "thread": the warm-up


def installed() -> str | None:
    """None when the package is installed, else what to install."""
    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.quanto") is None:
        return f"int4/int2 need the optional package `{QUANTO_PIN}` (`pip install {QUANTO_PIN}`), not installed here."
    return None


def clear_stale_locks(older_than: float = STALE_LOCK, roots: list[str] | None = None) -> list[Path]:
    """Remove build locks left by a process that died mid-build (killed, or exited with the build running):
    torch waits for such a lock forever, so every later start would hang in its warm-up. Returns what went."""
    if roots is None:  # optimum-quanto's own folders
        spec = importlib.util.find_spec("optimum.quanto")
        roots = [] if spec is None else list(spec.submodule_search_locations or [])
    removed = []
    for root in roots:
        for lock in Path(root).glob("library/extensions/*/build/lock"):
            try:
                if time.time() - lock.stat().st_mtime > older_than:
                    lock.unlink()
                    removed.append(lock)
            except OSError:
                pass  # gone meanwhile, or not ours to remove: the build says why
    return removed


def _probe() -> str | None:
    """Run a real quanto int4 cache on a tiny random GPT-2: this compiles the extension if it is not built."""
    clear_stale_locks()
    from gptviz.lab.caches import build
    from gptviz.lab.settings import Variant
    from gptviz.lab.variants import forced
    from gptviz.models import random_model

    model = random_model(layers=1, heads=1, d_model=16, vocab=8, context=8, seed=0)
    variant = Variant("probe", "quanto", nbits=4, residual_length=1, q_group_size=16)
    try:
        forced(model, [1, 2], [3, 4, 5], build(variant, model.config))  # quantizes, then reads back: unpack
    except (RuntimeError, OSError, ImportError, subprocess.SubprocessError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return (f"int4/int2 need optimum-quanto's C++ extension, which it compiles on first use, and that failed "
                f"here ({first}). It needs {NEEDS}.")
    return None


def warm() -> str | None:
    """Build (or load) the extension now, waiting for it; None when int4/int2 can run, else why not."""
    if (reason := installed()) is not None:
        return reason
    warm_in_background()
    with _lock:
        thread = _state.get("thread")
    if thread is not None:
        thread.join()
    with _lock:
        return _state["result"]


def warm_in_background() -> None:
    """Start the build on a thread, once per process (a server calls this when it starts)."""
    if installed() is not None:
        return
    with _lock:
        if "result" in _state or "thread" in _state:
            return
        _state["started"] = time.monotonic()
        _state["thread"] = threading.Thread(target=_background, name="gptviz-quanto-warm-up", daemon=True)
        _state["thread"].start()
        atexit.register(_state["thread"].join, EXIT_WAIT)  # torch work left running at exit aborts the process


def _background() -> None:
    result = _probe()
    with _lock:
        _state["result"] = result
        _state.pop("thread")


def wait_for_build(timeout: float = EXIT_WAIT) -> None:
    """Wait, at most ``timeout`` s, for a build another thread of this process runs (a worker asked for a report
    that the asking app computes with int4/int2: its own build is then finishing, not failing)."""
    with _lock:
        thread = _state.get("thread")
    if thread is not None:
        thread.join(timeout)


def state() -> str:
    """'building', 'ready', 'unavailable' or 'not tried': a lab result computed in one state is not shown in another."""
    with _lock:
        if "thread" in _state:
            return "building"
        if "result" in _state:
            return "ready" if _state["result"] is None else "unavailable"
    return "not tried" if installed() is None else "unavailable"


def missing() -> str | None:
    """None when int4/int2 can run now; else why not. Never waits for a build another thread is running;
    builds in this thread if nobody started one (the library and the command line)."""
    if (reason := installed()) is not None:
        return reason
    with _lock:
        building = "thread" in _state
        started = _state.get("started", time.monotonic())
    if building:
        return (f"optimum-quanto is compiling its C++ extension on this server (started "
                f"{time.monotonic() - started:.0f} s ago; about a minute on 2 cores): int4/int2 join when it is "
                "done. Open the Cache lab again then.")
    return warm()
