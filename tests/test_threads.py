"""Threads per decode: each model decodes with the torch thread count that is fastest for it here
(gptviz.serve.fastest_threads), and a job's decoders use its model's count whatever another job set meanwhile."""

import threading
import time

import pytest
import torch

import gptviz
from gptviz import serve
from gptviz.serve import tasks
from gptviz.ui_state import AppSettings
from tests.conftest import TINY_SOURCE, LocalJob, tiny_loaded


def test_fewer_threads_are_chosen_only_when_they_are_clearly_faster():
    assert serve.fewest_fast_threads({2: 1.0, 1: 0.5}) == 1
    assert serve.fewest_fast_threads({2: 1.0, 1: 0.95}) == 2  # within the noise margin: keep the count in force
    assert serve.fewest_fast_threads({2: 1.0, 1: 1.5}) == 2
    assert serve.fewest_fast_threads({4: 1.0, 2: 0.8, 1: 0.79}) == 2  # 1 does not beat 2 by the margin
    assert serve.fewest_fast_threads({4: 1.0, 2: 0.95, 1: 0.1}) == 4  # the descent stops at the first miss


@pytest.mark.parametrize("slow", [1, 2])
def test_the_count_timed_is_the_count_in_force_in_the_decode(monkeypatch, tiny_model, tokenizer, slow):
    # Stand in for the decode only to make one count slower: what is checked is that each timed decode ran with
    # the count fastest_threads meant to time, so the slower one loses.
    seen = []

    def start(model, tokenizer, prompt, settings, **kwargs):
        seen.append(torch.get_num_threads())
        time.sleep(0.05 if seen[-1] == slow else 0.005)

    monkeypatch.setattr(gptviz.decoding, "start", start)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert serve.fastest_threads(tiny_model, tokenizer, 2) == (2 if slow == 1 else 1)
    # In turn, at least two rounds, until half a second is spent (the slow count's 50 ms passes decide the rounds).
    assert seen[:4] == [2, 1, 2, 1] and seen == [2, 1] * (len(seen) // 2) and 4 <= len(seen) <= 2 * serve.THREAD_ROUNDS
    assert torch.get_num_threads() == 2  # left at most


def test_one_core_or_an_operators_count_is_kept_without_timing(monkeypatch, tiny_model, tokenizer):
    monkeypatch.setattr(gptviz.decoding, "start", lambda *a, **k: pytest.fail("timed a decode"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert serve.fastest_threads(tiny_model, tokenizer, 1) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert serve.fastest_threads(tiny_model, tokenizer, 2) == 2


def test_a_real_measurement_picks_one_of_the_halvings_and_a_loaded_model_keeps_it(monkeypatch, tiny_model, tokenizer):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert serve.fastest_threads(tiny_model, tokenizer, 2) in (1, 2) and torch.get_num_threads() == 2
    lm = tasks.load_model("bundled", "float32")
    assert lm.threads in range(1, torch.get_num_threads() + 1)


@pytest.mark.parametrize("own", [1, 2])
def test_a_job_decodes_with_its_models_count_whatever_the_process_wide_count(own):
    # Each job runs on a worker thread that has not used torch yet, which would take the process-wide count (set to
    # the other value before each, as another model's job would): the run records what its decoders ran with.
    lm = tiny_loaded(TINY_SOURCE)
    lm.threads = own
    out = {}

    def on_a_new_thread(name, task):
        serve.use_threads(3 - own)
        thread = threading.Thread(target=lambda: out.update({name: task(LocalJob())}))
        thread.start()
        thread.join(60)
        return out[name]

    first = on_a_new_thread("first", tasks.FirstPass(AppSettings(source=TINY_SOURCE, max_new_tokens=3), lm.name,
                                                     gptviz.Limits(), lm))
    refined = on_a_new_thread("refined", tasks.Refine(first, "key", lm))
    assert (first.run.info["torch_threads"], refined.run.info["torch_threads"]) == (own, own)


def test_the_apps_server_lets_its_decodes_take_the_gil_back_soon(tiny_gpt2):
    # Its decodes share the process with every session's page draws (scripts/measure_threads.py: a first pass
    # beside one busy Python thread took over 200× as long at CPython's 5 ms switch interval).
    import sys

    from views._wait import server

    default = sys.getswitchinterval()
    try:
        server()
        assert sys.getswitchinterval() == pytest.approx(serve.GIL_SWITCH_SECONDS)
    finally:
        sys.setswitchinterval(default)
