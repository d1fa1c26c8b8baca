"""One server, many students: a decode queue, single flight and shared results.

Streamlit runs every browser session as a thread of one process. Left alone, thirty students
opening a teacher's link start thirty identical decodes that share the CPU, all finish together,
and every timing they show is wrong. Here a decode is a *job* run by the server's own worker
threads, and sessions only wait for it:

* single flight: jobs are keyed by (model, precision, settings); asking for a key that is queued
  or running joins that job instead of starting another one;
* one queue: at most ``slots`` jobs run at once (from the core count: 1 on 2 cores); a waiter can
  see its place and an estimate of the wait. Two priorities: every ``FIRST`` job (a student's first
  result) runs before any ``REFINE`` job (timing passes that only refine a result already on screen),
  and a running refinement steps aside at its next step boundary (``Job.checkpoint``) while a first
  result waits, so a refinement never delays anyone's first result by more than one step;
* a job whose waiters have all gone (tabs closed, or they asked for something else) is skipped when
  its turn comes, and a refinement nobody waits for any more is dropped at its next checkpoint;
* finished results are kept for the next session that asks, oldest evicted first beyond a byte
  budget; ``fresh=True`` (the Run button: new timings) ignores a finished result but still joins
  a job in flight, which is a fresh run too.

Streamlit-free: the app passes the decode as a function, and for each waiting session an id and a
liveness check. Every job started, finished, skipped or dropped is logged on the ``gptviz.serve``
logger, one line each (``decode started`` / ``decode finished in X s`` for first results, ``refine
…`` for refinements), which is how the load test counts decodes. The in-process implementation is
gptviz/serve/memory.py.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import CancelledError
from dataclasses import dataclass

import torch

DEFAULT_MAX_BYTES = 256 * 2**20  # finished results kept for other sessions, by their own size
CORES_PER_SLOT = 4  # one timed decode per 4 cores: 1 on a 2- or 4-core server, 4 on 16 cores
RATE_MEMORY = 0.5  # weight of the newest run in the seconds-per-size estimate (exponential average)
FIRST, REFINE = 0, 1  # job priorities: a student's first result, then timing refinements (lower runs first)


class Dropped(CancelledError):
    """A refinement stopped at a checkpoint because nobody waits for it any more."""


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


@dataclass(frozen=True)
class Place:
    """Where a queued job stands: runs that will finish or start before it, and about how long that takes."""

    ahead: int  # running jobs plus queued jobs in front of it
    seconds: float | None  # estimated wait until it starts; None until a run of its kind has been timed

    def describe(self) -> str:
        return self.runs() if self.seconds is None else f"{self.runs()}, about {max(1, round(self.seconds))} s"

    def runs(self) -> str:
        """"2 runs ahead of you"."""
        return f"{self.ahead} run{'s' if self.ahead != 1 else ''} ahead of you"


from gptviz.serve.memory import Job, Server  # noqa: E402  (the in-process implementation, the default)

__all__ = ["DEFAULT_MAX_BYTES", "FIRST", "REFINE", "CancelledError", "Dropped", "Job", "Place", "Server", "cores",
           "default_slots", "set_torch_threads"]
