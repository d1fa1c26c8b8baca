"""The lockstep scheduler (gptviz.lockstep) with stand-in decoders: turns, rotation, lag, errors."""

import threading

import pytest

from gptviz.lockstep import Lockstep


def decoder(name: str, steps: int, log: list, fail_at: int | None = None):
    def start(step_done):
        for step in range(steps):
            if step == fail_at:
                raise RuntimeError(f"{name} broke at step {step}")
            log.append((name, step, threading.current_thread().name))
            step_done()
        return f"{name} done"
    return start


def test_one_step_each_in_turn_rotating_who_goes_first_the_lagging_ones_a_round_behind():
    log: list = []
    results = Lockstep().run({"a": (0, decoder("a", 3, log)), "b": (1, decoder("b", 3, log)),
                              "c": (1, decoder("c", 3, log))})
    assert results == {"a": "a done", "b": "b done", "c": "c done"}
    assert [(name, step) for name, step, _ in log] == [
        ("a", 0),  # round 0: only the leader
        ("b", 0), ("c", 0), ("a", 1),  # round 1: b goes first
        ("c", 1), ("a", 2), ("b", 1),  # round 2: c goes first
        ("b", 2), ("c", 2),  # round 3: a's turn only finishes it
    ]
    assert len({thread for *_, thread in log}) == 3  # each decoder in its own thread


def test_an_error_in_one_decoder_stops_the_others_and_is_raised():
    log: list = []
    with pytest.raises(RuntimeError, match="b broke at step 1"):
        Lockstep().run({"a": (0, decoder("a", 5, log)), "b": (1, decoder("b", 5, log, fail_at=1))})
    assert ("a", 4) not in [(name, step) for name, step, _ in log]  # a was stopped, not run to the end
    assert not [t for t in threading.enumerate() if t.name.startswith("gptviz-lockstep-")]
