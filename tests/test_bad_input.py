"""Anything a user can type reaches the library as a clear error or a normal run, never a crash."""

import os

import pytest

from gptviz import DecodeError, DecodeSettings, ModelLoadError, load, run


@pytest.fixture(scope="module")
def bundled():
    return load("bundled")


@pytest.mark.parametrize("prompt", [
    "🙂🎭 To be 🤔",  # emoji
    "生存还是毁灭，这是一个问题",  # CJK
    "tab\there\x00nul\x07bell\x1b[31mansi",  # control characters
    "\u202eright-to-left override",
    "a",  # a single character
], ids=["emoji", "cjk", "control", "rtl", "one-char"])
def test_unusual_text_decodes_normally(bundled, prompt):
    result = run(bundled.model, bundled.tokenizer, prompt, DecodeSettings(max_new_tokens=4))
    assert result.summary().recompute.same_tokens


@pytest.mark.parametrize("prompt,settings,match", [
    ("", DecodeSettings(), "empty"),
    (" \t\n ", DecodeSettings(), "empty"),
    ("x " * 5000, DecodeSettings(), "shorten it"),  # 10,000 characters
    ("ROMEO.", DecodeSettings(max_new_tokens=10_000), "new tokens fit"),
    ("ROMEO.", DecodeSettings(max_new_tokens=0), "≥ 1"),
    ("ROMEO.", DecodeSettings(max_new_tokens=-5), "≥ 1"),
    ("ROMEO.", DecodeSettings(sampling="sample", temperature=0.0), "temperature must be > 0"),
    ("ROMEO.", DecodeSettings(sampling="sample", temperature=-1.0), "temperature must be > 0"),
    ("ROMEO.", DecodeSettings(sampling="sample", top_p=0.0), "top-p"),
    ("ROMEO.", DecodeSettings(sampling="sample", top_p=1.01), "top-p"),
    ("ROMEO.", DecodeSettings(sampling="sample", top_k=-2), "top-k"),
    ("ROMEO.", DecodeSettings(seed=-1), "seed"),
    ("ROMEO.", DecodeSettings(sampling="beam"), "sampling"),
    ("ROMEO.", DecodeSettings(modes=("recompute",)), "start with 'cached'"),
], ids=["empty", "whitespace", "10k-chars", "past-context", "zero-tokens", "negative-tokens", "temp-0",
        "temp-negative", "top-p-0", "top-p-above-1", "top-k-negative", "seed-negative", "unknown-sampling",
        "modes"])
def test_bad_settings_are_clear_errors(bundled, prompt, settings, match):
    with pytest.raises(DecodeError, match=match):
        run(bundled.model, bundled.tokenizer, prompt, settings)


@pytest.mark.parametrize("source,match", [
    ("gpt-5-ultra", "unknown model"),
    ("openai-community/gpt2-xxl", "not a known GPT-2 Hub id"),
    ("../../../../etc", "no config.json"),
    ("/etc/passwd", "is a file"),
    ("~/nonexistent-model-dir", "no such directory"),
    ("bundled/../../etc", "no such directory"),
    ("   ", "no model given"),
])
def test_bad_sources_are_clear_errors(source, match):
    with pytest.raises(ModelLoadError, match=match):
        load(source)


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load(str(tmp_path))


def test_symlink_to_a_non_model_is_refused(tmp_path):
    link = tmp_path / "link"
    os.symlink("/etc", link)
    with pytest.raises(ModelLoadError, match="no config.json"):
        load(str(link))
