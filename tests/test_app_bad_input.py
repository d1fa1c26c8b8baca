"""Whatever a student types or pastes into a link: a clear message on screen, never a traceback,
and the last good results stay visible."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from transformers import LlamaConfig, LlamaForCausalLM

from gptviz import ui_state
from tests.conftest import TINY_SOURCE

APP = Path(__file__).resolve().parent.parent / "app.py"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tiny_gpt2):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
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
    return at.session_state["gptviz_runs"][at.session_state["gptviz_shown"]] is good


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
    at.number_input(key="new").set_value(at.number_input(key="new").max)  # the widget's own cap
    at.text_area(key="prompt").set_value("word " * 200)  # ~200 tokens: together past the 256-token context
    at.button(key="run").click().run()
    assert not at.exception
    assert "new tokens fit" in at.error[0].value or "budget" in at.error[0].value
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


@pytest.mark.parametrize("params", [
    {"new": "-5"}, {"new": "abc"}, {"new": "1e9"}, {"temperature": "0", "sampling": "sample"},
    {"top_p": "7", "sampling": "sample"}, {"model": "../../etc"}, {"model": "<script>alert(1)</script>"},
    {"dtype": "int8"}, {"cache": "paged"}, {"seed": "-1", "sampling": "sample"},
], ids=["new-negative", "new-text", "new-huge", "temp-0", "top-p-7", "model-path", "model-html", "dtype",
        "cache", "seed-negative"])
def test_hostile_share_links_never_crash(params):
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"model": TINY_SOURCE, "new": "4", **params})
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_hosted_server_refuses_local_paths(monkeypatch):
    monkeypatch.setenv("GPTVIZ_HOSTED", "1")
    at, good = good_run()
    assert ui_state.LOCAL_CHOICE not in at.selectbox(key="model").options
    at.query_params["dir"] = "/etc"
    at.query_params["model"] = ui_state.LOCAL_CHOICE
    at.run()
    assert not at.exception
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
