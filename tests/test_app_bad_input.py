"""Whatever a student types or pastes into a link: a clear message on screen, never a traceback,
and the last good results stay visible."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from transformers import LlamaConfig, LlamaForCausalLM

from gptviz import ui_state
from gptviz.settings import APP_MAX_NEW_TOKENS
from tests.conftest import TINY_SOURCE

APP = Path(__file__).resolve().parent.parent / "app.py"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tiny_gpt2):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # what huggingface_hub read at import
    monkeypatch.chdir(APP.parent)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2, vocab_size=64)).save_pretrained(path)
    return path


def good_run(model: str = "bundled") -> tuple[AppTest, object]:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"model": model, "new": "4"})
    at.run()
    assert not at.exception
    runs = at.session_state["gptviz_runs"]
    return at, runs[at.session_state["gptviz_shown"]]


def still_showing(at: AppTest, good) -> bool:
    """The same run is on screen (its timing may have been refined meanwhile: same identity, more passes)."""
    return at.session_state["gptviz_runs"][at.session_state["gptviz_shown"]].run_id == good.run_id


@pytest.mark.parametrize("prompt,message", [
    ("", "prompt is empty"),
    ("\n\t  ", "prompt is empty"),
    ("x " * 5000, "shorten it"),  # 10,000 characters, far past the context
], ids=["empty", "whitespace", "10k-chars"])
def test_bad_prompts(prompt, message):
    at, good = good_run()
    at.text_area(key="prompt").set_value(prompt)
    at.button(key="run").click().run()
    assert not at.exception
    assert message in at.error[0].value
    assert still_showing(at, good)


@pytest.mark.parametrize("prompt", ["🙂🎭 To be 🤔", "生存还是毁灭", "tab\tnul\x00bell\x07\x1b[31m"],
                         ids=["emoji", "cjk", "control"])
def test_unusual_prompts_just_work(prompt):
    at, good = good_run()
    at.text_area(key="prompt").set_value(prompt)
    at.button(key="run").click().run()
    assert not at.exception and not at.error
    assert not still_showing(at, good)  # a new run replaced it


def test_max_new_tokens_past_the_context():
    at, good = good_run()
    at.number_input(key="new").set_value(APP_MAX_NEW_TOKENS)  # the app's cap on a private server
    at.text_area(key="prompt").set_value("word " * 200)  # ~200 tokens: together past the 256-token context
    at.button(key="run").click().run()
    assert not at.exception
    assert "over the model's context of 256: at most" in at.error[0].value  # the context, checked before memory
    assert still_showing(at, good)


@pytest.mark.parametrize("directory,message", [
    ("../../../../etc", "no config.json"),
    ("/etc/passwd", "is a file"),
    ("~/no-such-model", "no such directory"),
    ("", "no model given"),
], ids=["dotdot", "a-file", "tilde", "blank"])
def test_bad_local_directories(directory, message):
    at, good = good_run()
    at.selectbox(key="model").set_value(ui_state.LOCAL_CHOICE).run()
    at.text_input(key="dir").set_value(directory)
    at.button(key="run").click().run()
    assert not at.exception
    assert message in at.error[0].value
    assert still_showing(at, good)


def test_a_non_gpt2_model_directory(llama_dir):
    at, good = good_run()
    at.selectbox(key="model").set_value(ui_state.LOCAL_CHOICE).run()
    at.text_input(key="dir").set_value(str(llama_dir))
    at.button(key="run").click().run()
    assert not at.exception and "'llama' models are not supported" in at.error[0].value
    assert still_showing(at, good)


def adjusted(at: AppTest) -> list[str]:
    """The lines of the 'This link was adjusted' note on screen."""
    notes = [w.value for w in at.warning if w.value.startswith("**This link was adjusted.**")]
    return notes[0].split("  \n")[1:] if notes else []


@pytest.mark.parametrize("params,told,runs", [
    ({"new": "-5"}, "Ignored new='-5' from the link: max new tokens must be a whole number ≥ 1", {"new": 24}),
    ({"new": "abc"}, "Ignored new='abc' from the link: 'abc' is not a whole number.", {"new": 24}),
    ({"new": "1e9"}, "Ignored new='1e9' from the link: '1e9' is not a whole number.", {"new": 24}),
    ({"temperature": "0", "sampling": "sample"}, "Ignored temperature='0' from the link: temperature must be > 0",
     {"temperature": 1.0}),
    ({"top_p": "7", "sampling": "sample"}, "Ignored top_p='7' from the link: top-p must be a number in (0, 1]",
     {"top_p": 1.0}),
    ({"model": "../../etc"}, "Ignored model='../../etc' from the link: it is not one of this app's models",
     {"model": "bundled"}),
    ({"model": "<script>alert(1)</script>"}, "Ignored model='<script>alert(1)</script>' from the link",
     {"model": "bundled"}),
    ({"dtype": "int8"}, "Ignored dtype='int8' from the link: dtype must be one of float32, float64.",
     {"dtype": "float32"}),
    ({"cache": "paged"}, "Ignored cache='paged' from the link: cache must be one of dynamic, static.",
     {"cache": "dynamic"}),
    ({"seed": "-1", "sampling": "sample"}, "Ignored seed='-1' from the link: seed must be a whole number", {"seed": 0}),
], ids=["new-negative", "new-text", "new-huge", "temp-0", "top-p-7", "model-path", "model-html", "dtype",
        "cache", "seed-negative"])
def test_hostile_share_links_say_what_was_refused(params, told, runs):
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"model": TINY_SOURCE, "new": "4", **params})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(adjusted(at)) == 1 and adjusted(at)[0].startswith(told), adjusted(at)
    shown = at.session_state["gptviz_runs"][at.session_state["gptviz_shown"]].settings
    fields = {"new": "max_new_tokens", "model": "source"}
    assert all(getattr(shown, fields.get(k, k)) == v for k, v in runs.items())  # the run used what the note says
    assert not set(params) - {"sampling"} & set(at.query_params)  # the refused value left the link
    at.run()  # the next rerun (a slider, a page): said once, not again
    assert adjusted(at) == []


def test_hosted_server_refuses_local_paths_and_clamps_tokens(monkeypatch):
    """A stale link from a private server, opened on a hosted one: each change said, the dir gone from the link."""
    monkeypatch.setenv("GPTVIZ_HOSTED", "1")
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"model": ui_state.LOCAL_CHOICE, "dir": "/etc", "new": "100000", "dtype": "float16",
                            "prompt": "A"})
    at.run()
    assert not at.exception
    assert ui_state.LOCAL_CHOICE not in at.selectbox(key="model").options
    assert [line.split(" from the link")[0] for line in adjusted(at)] == [
        "Ignored model='local directory…'", "Ignored dir='/etc'", "Ignored dtype='float16'", "Clamped new=100000"]
    assert "local model directories are disabled on this server" in adjusted(at)[1]
    assert "dir" not in at.query_params and at.query_params["new"] == "128"
    assert at.number_input(key="new").value == 128  # the cap, not the 24 default
    assert at.session_state["gptviz_runs"][at.session_state["gptviz_shown"]].settings.max_new_tokens == 128


def test_a_deep_link_to_values_the_run_does_not_have():
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.switch_page("views/attention.py")
    at.query_params.update({"model": TINY_SOURCE, "new": "4", "layer": "99", "head": "-1", "step": "500"})
    at.run()
    assert not at.exception
    assert adjusted(at) == ["Ignored layer='99' from the link: this run has layers 0–1; showing layer 0.",
                            "Ignored head='-1' from the link: this run has heads 0–1; showing head 0.",
                            f"Ignored step='500' from the link: this run has steps 0–3; showing step "
                            f"{at.slider(key='step').value}."]
    at.selectbox(key="layer").set_value(1).run()
    assert adjusted(at) == []


def test_max_new_tokens_field_shows_what_runs():
    """Typing 0, -3 or 99999 into the field: the field keeps it, Run says why it cannot, the last run stays."""
    at, good = good_run(TINY_SOURCE)
    for typed, told in ((0, "max new tokens must be a whole number ≥ 1, got 0"),
                        (-3, "max new tokens must be a whole number ≥ 1, got -3"),
                        (99999, "this server allows at most 512 new tokens per run (asked for 99999)")):
        at.number_input(key="new").set_value(typed)
        at.button(key="run").click().run()
        assert not at.exception
        assert at.number_input(key="new").value == typed
        assert told in at.error[0].value
        assert still_showing(at, good)


def test_misconfigured_server_says_which_variable_on_every_page(monkeypatch):
    monkeypatch.setenv("GPTVIZ_HOSTED", "1")
    monkeypatch.setenv("GPTVIZ_MAX_NEW_TOKENS", "lots")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.switch_page("views/attention.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == ["**This server is misconfigured:** GPTVIZ_MAX_NEW_TOKENS='lots' is not a "
                                           "whole number ≥ 1: fix it in the server's environment (unset, it is 128)."]
    assert "gptviz_runs" not in at.session_state  # it stopped before loading or decoding anything
