"""Run several decoders a step at a time, in turn, so that the machine's other load hits them alike.

Timed one after the other, a burst of load (another student, a browser) lands on whichever mode
happens to run then: the same run measured 0.46x one time and 2.6x the next. Here every decoder
runs in its own thread but never two at once: a round gives each decoder one step, in an order
that rotates every round, so a slow moment costs every mode about the same. A decoder that needs
another one's choices (recompute replays the cached tokens) starts ``lag`` rounds later.

The decoders themselves are unchanged: they hand over from their ``on_step`` callback, after a
step's forward pass and choice, so the timed section of a step is exactly what it is alone.

Each decoder's thread runs with the torch thread count of the thread that called ``run``. torch sets a new
thread's count from the process-wide value then in force, which another job may have changed meanwhile
(gptviz/serve/tasks.py: each model decodes with its own fastest count).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch


def use_threads(count: int) -> None:
    """Give the calling thread ``count`` torch threads, for good. torch sets a thread's count from the process-wide
    value at the thread's first use (``get_num_threads`` included), so that happens first, then the count."""
    torch.get_num_threads()
    torch.set_num_threads(count)


class _Stopped(BaseException):
    """Raised inside a decoder's thread when another decoder failed: unwinds it quietly."""


class Lockstep:
    """One round-robin turn at a time among decoders started as ``start(step_done)``."""

    def __init__(self):
        self._cv = threading.Condition()
        self._turn: str | None = None  # the decoder that may run now; None: the scheduler's move
        self._stopped = False
        self.order: list[tuple[int, str]] = []  # (round, decoder) in the order steps were given

    def run(self, decoders: dict[str, tuple[int, Callable[[Callable[[], None]], Any]]]) -> dict[str, Any]:
        """``decoders[name] = (lag, start)``; ``start(step_done)`` decodes to the end, calling ``step_done()``
        after every step, and returns its result. Returns every decoder's result; re-raises the first error."""
        results: dict[str, Any] = {}
        errors: list[BaseException] = []
        finished: set[str] = set()
        threads = torch.get_num_threads()  # this thread's count (not the process-wide value)

        def body(name: str, start) -> None:
            use_threads(threads)
            try:
                self._wait_for_turn(name)
                results[name] = start(lambda: self._hand_over(name))
            except _Stopped:
                pass
            except BaseException as exc:  # re-raised by the scheduler
                errors.append(exc)
            finally:
                with self._cv:
                    finished.add(name)
                    self._turn = None
                    self._cv.notify_all()

        workers = [threading.Thread(target=body, args=(name, start), name=f"gptviz-lockstep-{name}", daemon=True)
                   for name, (_, start) in decoders.items()]
        for t in workers:
            t.start()
        try:
            self._schedule({name: lag for name, (lag, _) in decoders.items()}, finished, errors)
        finally:
            with self._cv:
                self._stopped = True
                self._cv.notify_all()
            for t in workers:
                t.join()
        if errors:
            raise errors[0]
        return results

    def _schedule(self, lags: dict[str, int], finished: set[str], errors: list[BaseException]) -> None:
        names, round_ = list(lags), 0
        while len(finished) < len(names) and not errors:
            active = [n for n in names if lags[n] <= round_ and n not in finished]
            shift = round_ % max(len(active), 1)
            for name in active[shift:] + active[:shift]:  # rotate who goes first
                with self._cv:
                    if name in finished or errors:
                        continue
                    self.order.append((round_, name))
                    self._turn = name
                    self._cv.notify_all()
                    self._cv.wait_for(lambda: self._turn is None)  # its step is done (or it finished)
            round_ += 1

    def _wait_for_turn(self, name: str) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._turn == name or self._stopped)
            if self._stopped:
                raise _Stopped

    def _hand_over(self, name: str) -> None:
        """Called by a decoder after each step: give the turn back and wait for the next one."""
        with self._cv:
            self._turn = None
            self._cv.notify_all()
        self._wait_for_turn(name)
