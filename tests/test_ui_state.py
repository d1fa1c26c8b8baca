"""The app's Streamlit-free state: settings, run keys, model choices, display tables."""

import pytest
import torch

import gptviz
from gptviz import ui_state
from gptviz.hosting import Policy
from gptviz.ui_state import AppSettings
from tests.conftest import TINY_SOURCE, CharTokenizer, tiny_loaded
from tests.test_plots import STEPS, make_run


def test_settings_become_decode_settings():
    s = AppSettings(max_new_tokens=7, sampling="sample", temperature=0.7, top_k=5, top_p=0.9, seed=3, cache="static")
    d = s.decode_settings()
    assert (d.max_new_tokens, d.sampling, d.temperature, d.top_k, d.top_p, d.seed, d.cache) == \
        (7, "sample", 0.7, 5, 0.9, 3, "static")


def test_run_key_ignores_sampling_knobs_only_when_greedy():
    assert AppSettings(seed=1, temperature=0.5).key == AppSettings(seed=2).key
    assert AppSettings(sampling="sample", seed=1).key != AppSettings(sampling="sample", seed=2).key
    assert AppSettings(dtype="float64").key != AppSettings().key
    hash(AppSettings().key)


def test_model_choices_follow_the_hosting_policy():
    assert ui_state.model_choices(Policy()) == ["bundled", "gpt2", "distilgpt2", "gpt2-medium", ui_state.LOCAL_CHOICE]
    hosted = Policy.from_env({"GPTVIZ_HOSTED": "1", "GPTVIZ_ALLOWED_MODELS": "bundled,distilgpt2"})
    assert ui_state.model_choices(hosted) == ["bundled", "distilgpt2"]


def test_char_tokenizer_round_trips_ascii_ids():
    tok = CharTokenizer(256)
    ids = tok("Hi!")["input_ids"]
    assert ids == [72, 105, 33] and len(tok.decode(ids)) == 3


def test_the_app_offers_no_test_model(monkeypatch):
    """The tiny test model is the tests' patch of gptviz.load, not something the product ships or lists."""
    monkeypatch.setenv("GPTVIZ_ALLOW_TEST_MODELS", "1")  # the old switch does nothing any more
    assert ui_state.model_choices(Policy()) == ["bundled", "gpt2", "distilgpt2", "gpt2-medium", ui_state.LOCAL_CHOICE]
    assert not hasattr(ui_state, "load_test_model")


def test_the_tiny_test_model_runs_through_the_real_engine():
    lm = tiny_loaded(TINY_SOURCE, "float64")
    assert lm.info["tied_embeddings"] and next(lm.model.parameters()).dtype == torch.float64
    run = gptviz.run(lm.model, lm.tokenizer, "hi there", gptviz.DecodeSettings(max_new_tokens=2))
    assert run.summary().recompute.same_tokens


def test_step_table_has_a_row_per_step_with_both_modes_top_tokens():
    table = ui_state.step_table(make_run())  # top-k texts come from the Steps: no model or tokenizer needed
    assert len(table) == STEPS
    assert table["cached top-5"].iloc[0] == "<7> · <8> · <1> · <2> · <3>"
    assert {"recompute top-5", "max |Δlogit|", "KL", "cached ms", "recompute ms", "recompute_last ms"} <= set(table)
    assert table["recompute ms"].iloc[2] == pytest.approx(30.0)
    assert list(table)[:4] == ["step", "token", "max |Δlogit|", "KL"]  # what a phone shows without scrolling


def test_step_table_writes_whitespace_tokens_in_the_charts_notation():
    run = make_run()
    run.cached.steps[0].top_texts = ["\n", " x", "\t"]
    table = ui_state.step_table(run)
    assert table["cached top-5"].iloc[0] == "⏎ · ␣x · ⇥" and table["token"].iloc[0] == "␣b"


def test_token_steps_lists_generated_tokens_with_their_context():
    table = ui_state.token_steps(make_run())
    assert table["token"].tolist()[:2] == ["␣b", "a"] and table["context"].tolist()[0] == 3
