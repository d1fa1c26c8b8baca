"""The Cache lab page in-process (AppTest): its numbers come from the lab report, bad settings get a message."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from gptviz.lab import quanto
from tests.conftest import TINY_SOURCE

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 120


@pytest.fixture(autouse=True)
def _test_models(monkeypatch, tiny_gpt2):
    monkeypatch.chdir(APP.parent)
    assert quanto.warm() is None  # a server's start-up build of int4/int2's kernel, finished (app.py starts it)


def lab_page(model: str = TINY_SOURCE) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({"model": model, "new": "12"})
    at.run()
    at.switch_page("views/cache_lab.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def tables(at: AppTest) -> list:
    return [d.value for d in at.dataframe]


def test_the_page_shows_the_reports_numbers_on_the_bundled_model():
    at = lab_page("bundled")
    assert not at.error, [e.value for e in at.error]
    summary = tables(at)[0]
    assert list(summary["variant"])[:3] == ["fp8", "quanto-int4", "quanto-int2"]
    assert (summary["bytes measured"] == summary["bytes formula"]).all()
    assert len(at.get("plotly_chart")) == 4
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Max |Δlogit| vs fresh prefill"]) <= 5e-5
    assert "learned absolute positions" in " ".join(m.value for m in at.markdown)


@pytest.mark.parametrize("key, value, message", [
    ("lab_window", 0, "window must be a whole number ≥ 2"),
    ("lab_window", 5000, "larger than the model's context"),
    ("lab_groups", 3, "do not divide the model's 2 heads"),
    ("lab_block", 0, "block size must be a whole number ≥ 1"),
])
def test_bad_settings_show_a_message_and_keep_the_last_results(key, value, message):
    at = lab_page()
    good = tables(at)[0]
    widget = at.slider(key=key) if key == "lab_block" else at.number_input(key=key)
    widget.set_value(value).run()
    assert not at.exception
    assert message in at.error[0].value
    assert tables(at)[0].equals(good)  # the last good lab result is still on screen
    assert len(at.get("plotly_chart")) == 4


def test_a_bad_config_json_gets_a_message():
    at = lab_page()
    at.text_area(key="lab_json").set_value('{"model_type": "llama"}').run()
    assert "has no" in at.error[0].value and not at.exception
    at.text_area(key="lab_json").set_value("{not json").run()
    assert at.error and not at.exception


def test_a_second_session_gets_the_shared_lab_result_without_computing():
    from views._wait import server

    first = lab_page()
    jobs = server().decodes  # every job the server has started: decodes and labs
    assert any(isinstance(k, tuple) and k[0] == "lab" for k in server().stored_keys())
    second = lab_page()  # another student, same settings
    assert server().decodes == jobs
    assert tables(second)[0].equals(tables(first)[0])
