"""The Streamlit app end to end in-process (AppTest): every page, both a tiny random and the bundled model."""

import json
import re
import threading
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from gptviz import display, ui_state
from gptviz.settings import CACHES, DTYPES, SAMPLINGS
from gptviz.ui_state import AppSettings
from tests.conftest import TINY_SOURCE
from views._model import _load_model, load_model
from views._wait import refine_key, server

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 120  # the first run imports torch and loads a model
# page -> (metrics that must show a value, plotly charts it draws)
PAGES = {
    "views/overview.py": (["Same tokens both ways?", "Largest logit difference", "Speed-up from the cache",
                           "FLOPs ratio, same run",
                           "KV cache at the end"], 0),
    "views/side_by_side.py": (["Largest |Δlogit|", "float32 machine epsilon"], 1),
    "views/attention.py": (["Rows computed this step (cache)", "Rows computed this step (recompute)"], 3),
    "views/kv_cache.py": (["Measured at the end", "Formula 2·L·H·d·t·bytes", "Allocated"], 3),
    "views/timing.py": (["Cached, total", "Recompute, total", "Bandwidth floor per cached step"], 5),
    "views/frozen_past.py": (["Largest drift with the causal mask", "Largest drift without the mask"], 1),
    "views/inside_gpt2.py": (["Blocks (layers)", "Parameters"], 1),
    "views/cache_lab.py": (["Shared prefix", "Max |Δlogit| vs fresh prefill", "Prefill, prefix reused"], 4),
    "views/divergence.py": (["The same computation, rounded differently", "A different computation"], 1),
}


@pytest.fixture(autouse=True)
def _test_models(monkeypatch, tiny_gpt2):
    monkeypatch.chdir(APP.parent)


def start(refined: bool = True, **params) -> AppTest:
    """The app after a first visit; ``refined``: also after its timing refinement landed (a rerun picks it up)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({"model": TINY_SOURCE, "new": "6", **params})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if refined:
        wait_for_timing(at)
    return at


def wait_for_timing(at: AppTest) -> None:
    """Wait until the server finished refining the result on screen, then rerun (as its timer would)."""
    deadline = time.monotonic() + TIMEOUT
    while server().finished(refine_key(shown(at))) is None and not shown(at).run.timing.complete:
        assert time.monotonic() < deadline, "the timing refinement never finished"
        time.sleep(0.05)
    at.run()
    assert shown(at).run.timing.complete and not at.exception


def shown(at: AppTest):
    """The Result on screen (what the pages draw)."""
    return at.session_state["gptviz_runs"][at.session_state["gptviz_shown"]]


def metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def has_data(figure: dict) -> bool:
    return any(len(trace.get(axis) or []) > 0 for trace in figure["data"] for axis in ("x", "y", "z"))


@pytest.mark.parametrize("model", [TINY_SOURCE, "bundled"])
def test_every_page_shows_its_numbers_and_figures(model):
    at = start(model=model)
    for page, (labels, chart_count) in PAGES.items():
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        values = metrics(at)
        assert all(values.get(label) for label in labels), (page, values)
        charts = figures(at)
        assert len(charts) == chart_count, page
        assert all(has_data(f) for f in charts), page
    assert len(at.session_state["gptviz_runs"]) == 1  # walking the pages never decoded again


def test_overview_numbers_come_from_the_run():
    at = start()
    summary = shown(at).run.summary()
    values = metrics(at)
    assert values["Largest logit difference"] == f"{summary.recompute.max_abs_dlogit:.2e}"
    assert values["Speed-up from the cache"] == display.speedup(summary.recompute.speedup)
    assert values["Same tokens both ways?"] == "yes"
    assert any(shown(at).run.text in c.value for c in at.code)
    assert len(at.get("download_button")) == 6  # CSV + JSON for each of the three modes


def test_run_shows_progress_and_the_produced_tokens():
    at = start(refined=False)
    result = shown(at)
    assert any(t.value == result.settings.prompt + result.run.text for t in at.text)  # the live token box
    wait_for_timing(at)
    at.number_input(key="new").set_value(4)
    at.button(key="run").click().run()
    assert len(at.session_state["gptviz_runs"]) == 2 and shown(at).settings.max_new_tokens == 4
    four = shown(at)
    at.button(key="run").click().run()  # Run again, same settings: fresh timings
    assert shown(at) is not four and shown(at).run.text == four.run.text
    at.number_input(key="new").set_value(6).run()  # back to settings already run: shown without decoding
    assert shown(at).run_id == result.run_id and not at.text


def test_moving_a_slider_does_not_run_the_model_again():
    at = start()
    at.switch_page("views/attention.py").run()
    before = shown(at)
    at.slider(key="step").set_value(3).run()
    assert shown(at) is before and len(at.session_state["gptviz_runs"]) == 1
    assert "step 3" in figures(at)[0]["layout"]["title"]["text"]
    assert not at.text  # no progress box: nothing was decoded


def test_a_fresh_sidebar_offers_the_librarys_choices_and_defaults():
    at = start()  # only the model and the token count come from the link
    assert shown(at).settings == AppSettings(source=TINY_SOURCE, max_new_tokens=6)
    assert at.radio(key="sampling").options == list(SAMPLINGS)
    assert at.segmented_control(key="dtype").options == list(DTYPES)
    assert at.segmented_control(key="cache").options == list(CACHES)


def test_settings_come_from_the_url():
    at = start(new="5", dtype="float64", cache="static", prompt="hello class", sampling="sample", seed="7",
               top_k="9")
    settings = shown(at).settings
    assert (settings.max_new_tokens, settings.dtype, settings.cache, settings.prompt) == (5, "float64", "static",
                                                                                         "hello class")
    assert (settings.sampling, settings.seed, settings.top_k) == ("sample", 7, 9)
    allocated = {sum(s.kv_allocated) for s in shown(at).run.cached.steps}
    assert len(allocated) == 1  # the static cache was preallocated once, for all 5 tokens
    at.switch_page("views/side_by_side.py").run()
    assert metrics(at)["float64 machine epsilon"] == f"{torch.finfo(torch.float64).eps:.1e}"


def test_bad_input_shows_the_message_and_keeps_the_last_results():
    at = start()
    good = shown(at)
    at.text_area(key="prompt").set_value("   ")
    at.button(key="run").click().run()
    assert not at.exception
    assert "prompt is empty" in at.error[0].value
    assert shown(at) is good and metrics(at)["Same tokens both ways?"] == "yes"

    at.selectbox(key="model").set_value(ui_state.LOCAL_CHOICE).run()
    at.text_input(key="dir").set_value("/no/such/model").run()
    at.button(key="run").click().run()
    assert not at.exception and "no such directory" in at.error[0].value
    assert shown(at) is good


def test_a_hub_model_offline_falls_back_to_bundled_with_a_notice(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # what huggingface_hub read at import
    at = start(model="distilgpt2")
    assert "bundled offline model" in at.warning[0].value
    assert shown(at).model_name == "bundled Shakespeare GPT-2"


def test_a_hosted_server_offers_only_its_models_and_caps_tokens(monkeypatch):
    monkeypatch.setenv("GPTVIZ_HOSTED", "1")
    monkeypatch.setenv("GPTVIZ_MAX_NEW_TOKENS", "8")
    at = start()
    assert at.selectbox(key="model").options == ["bundled", "gpt2", "distilgpt2"]
    at.number_input(key="new").set_value(9)  # the field takes it; the run says why it cannot
    at.button(key="run").click().run()
    assert "this server allows at most 8 new tokens per run (asked for 9)" in at.error[0].value
    at.number_input(key="new").set_value(5)
    at.button(key="run").click().run()
    assert list(at.session_state["gptviz_runs"]) == [shown(at).settings.key]  # one kept run per student
    at.query_params["model"] = "gpt2-medium"  # a shared link naming a model this server does not offer
    at.run()
    assert at.selectbox(key="model").value != "gpt2-medium"


def test_logit_lens_last_layer_predicts_the_runs_first_token():
    at = start(model="bundled")
    first = shown(at).run.cached.steps[0].token_text
    at.switch_page("views/inside_gpt2.py").run()
    assert any(f"prediction: {display.token(first)} with probability" in c.value for c in at.caption)


def test_students_with_the_same_link_share_one_decode_and_run_gives_a_fresh_one():
    first, second = start(), start()
    assert shown(second) is shown(first)  # one Result for both sessions
    assert server().decodes == 1
    second.button(key="run").click().run()  # Run on unchanged settings: fresh timings, for this student only
    assert shown(second) is not shown(first) and server().decodes == 2
    assert shown(second).run.text == shown(first).run.text
    assert shown(start()).run_id == shown(second).run_id  # the next visitor gets the newest run


def test_a_student_queued_behind_another_run_sees_the_wait():
    release = threading.Event()
    other = shown(start())  # loads the model and the server

    def another_students_run(job):
        release.wait(TIMEOUT)
        return other

    server().request("another student's settings", another_students_run)

    def release_once_queued():  # however slow the machine, the student is queued before the other run ends
        deadline = time.monotonic() + TIMEOUT
        while server().queued() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        release.set()

    threading.Thread(target=release_once_queued, daemon=True).start()
    at = start(refined=False, new="5")
    label = at.status[0].label
    assert label.startswith("Done: 5 tokens both ways"), label
    assert re.search(r"waited [1-9]\d* s for 1 run ahead of you", label), label
    assert server().decodes == 3


def test_the_overview_says_no_when_the_recompute_pass_would_choose_other_tokens(monkeypatch):
    at = start()
    model = load_model(TINY_SOURCE, "float32").model  # the model the app decodes with
    forward, noise = model.forward, torch.Generator().manual_seed(0)

    def perturbed(*args, use_cache=None, **kwargs):  # disturb only the recompute passes' logits
        out = forward(*args, use_cache=use_cache, **kwargs)
        if use_cache is False:
            out.logits = out.logits + 20 * torch.randn(out.logits.shape, generator=noise)
        return out

    monkeypatch.setattr(model, "forward", perturbed)
    at.button(key="run").click().run()
    first = shown(at).run.summary().recompute.first_disagreement
    assert first is not None and metrics(at)["Same tokens both ways?"] == f"no, from step {first}"
    assert f"From step {first} on" in at.warning[0].value


def test_the_timing_page_says_when_the_machine_was_busy_with_the_number():
    at = start()
    at.switch_page("views/timing.py").run()
    busy = [w.value for w in at.warning if "machine was busy" in w.value]
    assert bool(busy) == shown(at).run.summary().busy
    for trace in shown(at).run.traces.values():  # as if a burst of other work had slowed two of three passes
        for step in trace.steps:
            step.pass_seconds = trace.provisional_passes * [step.seconds] + [step.seconds, 3 * step.seconds,
                                                                             3 * step.seconds]
    at.run()
    summary = shown(at).run.summary()
    assert summary.busy and summary.timing_spread == pytest.approx(3.0)
    assert any("the steps' median times were 200% above their fastest" in w.value for w in at.warning)


def test_the_first_result_shows_every_page_before_its_timing_is_refined():
    at = start(refined=False)
    first = shown(at)
    assert not first.run.timing.complete and set(first.run.traces) == {"cached", "recompute"}
    for page in ("views/overview.py", "views/side_by_side.py", "views/attention.py", "views/kv_cache.py",
                 "views/frozen_past.py", "views/timing.py"):
        at.switch_page(page).run()
        assert not at.exception and not at.error, page
        labels, _ = PAGES[page]
        assert all(metrics(at).get(label) for label in labels), page
        if shown(at).run.timing.complete:
            break  # the refinement landed meanwhile (a tiny model refines in a blink): the rest is tested below
    wait_for_timing(at)  # then the timing lands by itself; the same run, refined
    refined = shown(at)
    assert refined.run_id == first.run_id and refined.run.text == first.run.text
    assert set(refined.run.traces) == {"cached", "recompute", "recompute_last"}
    assert refined.run.timing.passes >= 2
    assert any(c.value.endswith(refined.run.timing.describe()) for c in at.sidebar.caption)


def test_sessions_showing_one_result_share_its_figures(monkeypatch):
    from gptviz import plots

    built = []
    real = plots.step_times

    def counted(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(plots, "step_times", counted)
    first = start(page="timing")
    first.switch_page("views/timing.py").run()
    before = len(built)
    second = start()  # the same link: the stored result, its figures already built
    second.switch_page("views/timing.py").run()
    assert shown(second) is shown(first) and len(built) == before
    assert figures(second)[0] == figures(first)[0]
    second.toggle(key="present").set_value(True).run()  # another audience: a figure of its own
    assert len(built) == before + 1


def test_a_figure_goes_with_the_result_it_was_built_from():
    import gc
    import weakref

    from gptviz import display
    from views import _figures

    class Owner:  # stands for a Run: unhashable, weakly referenceable
        __hash__ = None

    owner, calls = Owner(), []

    def build(o):
        calls.append(o)
        import plotly.graph_objects as go
        return go.Figure(go.Scatter(x=[0, 1], y=[1, 2]))

    style = display.style(False)
    a = _figures.styled(style, build, owner)
    assert _figures.styled(style, build, owner) is a and len(calls) == 1
    figure = weakref.ref(a)
    del owner, calls[:], a
    gc.collect()
    _figures.cached_count()  # the store drops what went at its next use (a finalizer only notes it) …
    gc.collect()  # … and a plotly figure holds cycles of its own
    assert figure() is None  # the store let go of it (a count would move with other tests' leftovers too)


def test_sessions_asking_for_one_figure_at_once_build_it_once():
    """A result lands for a whole class at the same moment: the first session builds each figure, the rest wait
    for it instead of building thirty copies side by side (and a builder that fails lets the next one try)."""
    import threading
    import time

    import plotly.graph_objects as go

    from gptviz import display
    from views import _figures

    class Owner:
        __hash__ = None

    owner, calls, failures = Owner(), [], [1]

    def build(o):
        calls.append(o)
        time.sleep(0.2)  # long enough for every thread to ask while it builds
        if failures:
            failures.pop()
            raise RuntimeError("the first build fails")
        return go.Figure(go.Scatter(x=[0, 1], y=[1, 2]))

    style, got, errors = display.style(False), [], []

    def session():
        try:
            got.append(_figures.styled(style, build, owner))
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=session, daemon=True) for _ in range(12)]  # a hang fails, not blocks, CI
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == 1 and len(calls) == 2  # the failed build, then one that every other session shares
    assert len(got) == 11 and all(f is got[0] for f in got)


def test_pages_describe_the_model_that_made_the_run_not_what_its_source_loads_now(monkeypatch):
    """The Hub was down (gpt2 fell back to the bundled model); then the model cache was emptied and the Hub came
    back, so 'gpt2' loads another model. Inside GPT-2 must still describe the bundled model that made the run."""
    import gptviz

    patched, hub = gptviz.load, {"down": True}  # the tests' gpt2 is a tiny random GPT-2 (conftest)

    def load(source, dtype="float32", **kwargs):
        if source == TINY_SOURCE and hub["down"]:
            fallback = patched("bundled", dtype)
            fallback.source, fallback.notice = source, "the Hub is down (test)"
            return fallback
        return patched(source, dtype, **kwargs)

    monkeypatch.setattr(gptviz, "load", load)
    at = start()
    assert shown(at).model_name == "bundled Shakespeare GPT-2"
    bundled = patched("bundled").info["parameters"]
    hub["down"] = False
    _load_model.clear()  # evicted; 'gpt2' now loads the tiny model
    at.switch_page("views/inside_gpt2.py").run()
    assert not at.exception
    assert metrics(at)["Parameters"] == f"{bundled / 1e6:.2f} M"  # was the tiny model's 0.04 M

