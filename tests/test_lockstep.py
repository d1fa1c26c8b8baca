"""The lockstep scheduler (gptviz.lockstep) with stand-in decoders: turns, rotation, lag, errors."""

import threading

import pytest

from gptviz.lockstep import Lockstep, use_threads


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


def test_decoders_run_with_the_calling_threads_torch_count_not_the_process_wide_one():
    # A thread's torch count is fixed at its first parallel op from the process-wide value, which another job may
    # have changed meanwhile (gptviz/serve/tasks.py sets each model's own count): the decoders must take the
    # caller's. Without the capture they took the process-wide 2 here.
    import torch

    counts: dict = {}
    ready, changed = threading.Event(), threading.Event()

    def counting(name):
        def start(step_done):
            counts[name] = torch.get_num_threads()
            step_done()
        return start

    def caller():
        use_threads(1)  # this thread's count for good (the process-wide one, for now, too)
        ready.set()
        changed.wait(10)
        Lockstep().run({"a": (0, counting("a")), "b": (1, counting("b"))})

    before = torch.get_num_threads()
    thread = threading.Thread(target=caller)
    thread.start()
    ready.wait(10)
    torch.set_num_threads(2)  # another job sets the process-wide count before the caller's decoders start
    changed.set()
    thread.join(10)
    torch.set_num_threads(before)
    assert counts == {"a": 1, "b": 1}
