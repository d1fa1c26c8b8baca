"""How things are shown: one token notation, one byte family, speed-up wording, presentation styles."""

import pytest

from gptviz import display


@pytest.mark.parametrize("text, shown", [(" the", "␣the"), ("\n\n", "⏎⏎"), ("\t", "⇥"), ("", "∅"),
                                         ("a\x00b", "a\\x00b"), ("héllo", "héllo")])
def test_token_makes_whitespace_and_control_characters_visible(text, shown):
    assert display.token(text) == shown


def test_token_shortens_long_tokens_with_an_ellipsis():
    assert display.token("abcdefghij", 5) == "abcd…" and display.token("abc", 5) == "abc"


@pytest.mark.parametrize("largest, unit", [(10, "B"), (1023, "B"), (1024, "KiB"), (5 * 2**20, "MiB"),
                                           (3 * 2**30, "GiB")])
def test_byte_unit_is_binary_and_follows_the_largest_figure(largest, unit):
    name, size = display.byte_unit(largest)
    assert name == unit and largest / size < 1024
    assert display.in_unit(largest, (name, size)).endswith(unit)


@pytest.mark.parametrize("n_bytes, text", [(100, "100 B"), (1536, "1.5 KiB"), (512 * 2**20, "512.0 MiB"),
                                           (3 * 2**30, "3.0 GiB")])
def test_a_lone_byte_figure_takes_the_unit_its_size_calls_for(n_bytes, text):
    assert display.size(n_bytes) == text


def test_a_unit_by_name_is_the_one_byte_unit_picks():
    assert display.unit("MiB") == display.byte_unit(5 * 2**20) and display.WHAT_IF_UNIT == ("MiB", 2**20)


@pytest.mark.parametrize("ratio, text", [(0.7, display.NO_GAIN), (1.0, display.NO_GAIN), (3.46, "3.5×")])
def test_a_speedup_of_one_or_less_is_no_gain(ratio, text):
    assert display.speedup(ratio) == text


@pytest.mark.parametrize("ratio, starts", [(0.7, "No measurable gain"), (1.0, "No measurable gain"),
                                           (1.2, "Only 1.2× here"), (1.49, "Only 1.5× here"), (1.5, None), (8.0, None)])
def test_a_speedup_note_says_why_there_is_none_or_why_it_is_small(ratio, starts):
    note = display.speedup_note(ratio, 3_500_000, 40)
    assert note is None if starts is None else note.startswith(starts)


@pytest.mark.parametrize("steps, at", [(1, 0), (2, 1), (3, 1), (24, 12)])
def test_pages_open_past_the_prompt_pass(steps, at):
    assert display.NORMAL.open_step(steps) == at and display.PRESENTER.open_step(steps) == at


def test_presenter_style_is_larger_and_shows_the_panes_side_by_side():
    normal, present = display.NORMAL, display.PRESENTER
    assert present.font > normal.font and present.ticks > normal.ticks and present.page_font > normal.page_font
    assert present.panes_side_by_side and not normal.panes_side_by_side
    assert not present.toolbar and normal.toolbar
    assert display.style(True) is present and display.style(False) is normal


def test_titles_wrap_to_the_styles_width():
    title = "Largest logit difference per step (× = exactly equal)"
    lines = display.NORMAL.wrap(title).split("<br>")
    assert len(lines) == 2 and all(len(line) <= display.NORMAL.title_chars for line in lines)
    assert " ".join(lines) == title


@pytest.mark.parametrize("values, dtick", [([1e-7, 1e-5], 1), ([1e-16, 1e-2], 3), ([1e6, 1e14], 2), ([0], 1)])
def test_log_axes_label_few_decades(values, dtick):
    assert display.log_dtick(values) == dtick
