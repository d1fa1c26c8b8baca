"""The lockstep scheduler (gptviz.lockstep) with stand-in decoders: turns, rotation, lag, errors, one thread."""

import threading

import pytest

from gptviz.lockstep import Lockstep, alone


def decoder(name: str, steps: int, log: list, fail_at: int | None = None, closed: list | None = None):
    try:
        for step in range(steps):
            if step == fail_at:
                raise RuntimeError(f"{name} broke at step {step}")
            log.append((name, step, threading.current_thread()))
            yield
    except GeneratorExit:
        if closed is not None:
            closed.append(name)
        raise
    return f"{name} done"


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


def test_every_decoder_runs_in_the_callers_thread():
    # torch's OpenMP pool belongs to the thread that runs an op; a second thread's pool stops GNU OpenMP's threads
    # spinning between ops while both live (gptviz/lockstep.py). A thread per decoder made every pass slower.
    log: list = []
    before = set(threading.enumerate())
    Lockstep().run({"a": (0, decoder("a", 3, log)), "b": (1, decoder("b", 3, log))})
    assert {thread for *_, thread in log} == {threading.current_thread()}
    assert not set(threading.enumerate()) - before  # no thread was started


def test_an_error_in_one_decoder_closes_the_others_and_is_raised():
    log: list = []
    closed: list = []
    with pytest.raises(RuntimeError, match="b broke at step 1"):
        Lockstep().run({"a": (0, decoder("a", 5, log, closed=closed)), "b": (1, decoder("b", 5, log, fail_at=1))})
    assert ("a", 4) not in [(name, step) for name, step, _ in log]  # a was stopped, not run to the end
    assert closed == ["a"]  # unwound where it stood (its cache and tape freed now, not at garbage collection)


def test_alone_runs_one_decoder_to_its_end():
    log: list = []
    assert alone(decoder("a", 4, log)) == "a done"
    assert [step for _, step, _ in log] == [0, 1, 2, 3]
