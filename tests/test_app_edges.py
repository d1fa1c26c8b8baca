"""The smallest and largest runs a user can ask for: every page draws them (no widget with min = max)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import TINY_SOURCE

APP = Path(__file__).resolve().parent.parent / "app.py"
PAGES = ["views/overview.py", "views/side_by_side.py", "views/attention.py", "views/kv_cache.py", "views/timing.py",
         "views/frozen_past.py", "views/inside_gpt2.py", "views/cache_lab.py"]


@pytest.fixture(autouse=True)
def _test_models(monkeypatch, tiny_gpt2):
    monkeypatch.chdir(APP.parent)


def visit_every_page(params: dict, pages: list[str] = PAGES) -> dict[str, list[str]]:
    """One session: decode once, then open every page on that result; page -> its captions."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"model": TINY_SOURCE, **params})
    seen = {}
    for page in pages:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.message for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        seen[page] = [c.value for c in at.caption]
    assert len(at.session_state["gptviz_runs"]) == 1  # one decode served every page
    return seen


def test_one_new_token_after_a_one_token_prompt():
    captions = visit_every_page({"prompt": "A", "new": "1"})
    assert any("only step (1 new token)" in c for c in captions["views/attention.py"])


def test_three_tokens_in_all_leave_one_prefix_to_test():
    """Prompt 'A' + 2 new tokens: one prefix of 2 tokens with the third appended (was min = max = 2)."""
    captions = visit_every_page({"prompt": "A", "new": "2"})
    assert any("One prefix length to test" in c for c in captions["views/frozen_past.py"])


def test_the_longest_run_the_context_allows():
    """1 + 256 tokens feed 256 positions (the last token is never fed back): exactly the tiny model's context.
    'Why the past is frozen' fed all 257 tokens to the model (an IndexError). The Cache lab page is left out:
    its 256-token lab takes minutes here (tests/test_lab.py runs the lab at exactly the context, on a small one)."""
    captions = visit_every_page({"prompt": "A", "new": "256", "cache": "static"}, PAGES[:-1])
    assert any("past the model's context of 256 positions" in c for c in captions["views/frozen_past.py"])
