"""Run several decoders a step at a time, in turn, so that the machine's other load hits them alike.

Timed one after the other, a burst of load (another student, a browser) lands on whichever mode
happens to run then: the same run measured 0.46x one time and 2.6x the next. Here a round gives each
decoder one step, in an order that rotates every round, so a slow moment costs every mode about the
same. A decoder that needs another one's choices (recompute replays the cached tokens) starts ``lag``
rounds later.

A decoder is a generator that yields after each step's forward pass and choice (gptviz/decoding.py), so the
timed section of a step is exactly what it is alone, and every decoder runs in the caller's thread. Not a thread
each: torch's OpenMP pool belongs to the thread that runs the op, and while two threads' pools are alive on a
machine with no core to spare for both, GNU OpenMP stops its threads spinning between ops. Beside a second
thread's idle pool a first pass took 1.35x as long for GPT-2-small shape and 2.76x for the bundled model
(scripts/measure_threads.py); with a thread per decoder, a GPT-2-shape first pass took 4.0-5.0 s, now 2.4 s.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

Result = TypeVar("Result")
Decoder = Generator[None, None, Result]  # yields after every step, returns its result


def alone(decoder: Decoder[Result]) -> Result:
    """Run one decoder to its end and return its result."""
    return Lockstep().run({"alone": (0, decoder)})["alone"]


class Lockstep:
    """One round-robin turn at a time among decoders."""

    def __init__(self):
        self.order: list[tuple[int, str]] = []  # (round, decoder) in the order steps were given

    def run(self, decoders: dict[str, tuple[int, Decoder[Any]]]) -> dict[str, Any]:
        """``decoders[name] = (lag, decoder)``: a step of each in turn until all have returned. Returns every
        decoder's result; the first error stops the others (closed where they are) and is raised."""
        results: dict[str, Any] = {}
        lags = {name: lag for name, (lag, _) in decoders.items()}
        running = {name: decoder for name, (_, decoder) in decoders.items()}
        round_ = 0
        try:
            while running:
                active = [n for n in running if lags[n] <= round_]
                shift = round_ % max(len(active), 1)
                for name in active[shift:] + active[:shift]:  # rotate who goes first
                    self.order.append((round_, name))
                    try:
                        next(running[name])
                    except StopIteration as done:
                        results[name] = done.value
                        del running[name]
                round_ += 1
        finally:
            for decoder in running.values():  # after an error: unwind the others where they stand
                decoder.close()
        return results
