"""The command line: `python -m gptviz compare ...` as a user runs it (subprocess) and in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptviz import cli, cost, models
from gptviz.serve import cores

ROOT = Path(__file__).resolve().parent.parent
REPORT_STEP_KEYS = {"step", "token_id", "token", "context_len", "cached_seconds", "recompute_seconds",
                    "max_abs_dlogit", "argmax_equal", "kv_bytes", "kv_allocated"}


def gptviz_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gptviz", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 saved with save_pretrained, next to the bundled byte-level BPE tokenizer."""
    path = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer_files = [f for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
                       if (models.BUNDLED_DIR / f).is_file()]
    for name in tokenizer_files:
        shutil.copy(models.BUNDLED_DIR / name, path / name)
    vocab = json.loads((models.BUNDLED_DIR / "config.json").read_text())["vocab_size"]
    model = models.random_model(layers=2, heads=2, d_model=32, vocab=vocab, context=48, seed=1)
    model.save_pretrained(path)  # safetensors by default
    assert any(path.glob("*.safetensors"))
    return path


def test_json_report_with_bundled_model():
    proc = gptviz_cli("compare", "--model", "bundled", "--prompt", "ROMEO.\nWhat light", "--max-new-tokens", "6",
                      "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # one JSON document, nothing else on stdout
    assert {"model", "settings", "prompt", "text", "modes", "steps", "summary"} <= set(data)
    assert data["model"]["source"] == "bundled" and data["model"]["layers"] >= 1
    assert set(data["modes"]) == {"cached", "recompute", "recompute_last"}
    cached = data["modes"]["cached"]
    for mode in data["modes"].values():
        assert mode["token_ids"] == cached["token_ids"]  # like for like
        assert len(mode["tokens"]) == len(mode["step_seconds"]) == 6
        assert all(s > 0 for s in mode["step_seconds"])
    assert len(data["steps"]) == 6
    m = data["model"]
    for row in data["steps"]:
        assert REPORT_STEP_KEYS <= set(row)
        assert row["max_abs_dlogit"] <= 1e-4 and row["argmax_equal"] is True
        # measured KV bytes after the step = the formula over the tokens fed so far
        assert row["kv_bytes"] == cost.kv_bytes(m["layers"], m["heads"], m["head_dim"], row["context_len"], 4)
    assert data["summary"]["same_tokens"] is True
    assert data["summary"]["argmax_agreement"] == 1.0
    # Rounding only: a few ulps of the largest weight, 1 (9 ulps measured on an AMD EPYC); a past row that really
    # changed (no causal mask) differs by ~1e-1.
    assert data["summary"]["max_slice_delta"] <= 16 * float(np.finfo(np.float32).eps)


def test_table_output(capsys):
    assert cli.main(["compare", "--prompt", "KING.", "--max-new-tokens", "3", "--modes", "cached,recompute",
                     "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "max|Δlogit|" in out and "same tokens: True" in out
    assert len([line for line in out.splitlines() if line[:4].strip().isdigit()]) == 3  # one row per step


def test_local_directory_sampling_static_float64(random_model_dir):
    proc = gptviz_cli("compare", "--model", str(random_model_dir), "--prompt", "To be, or not", "--max-new-tokens",
                      "5", "--sampling", "sample", "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9",
                      "--seed", "3", "--dtype", "float64", "--cache", "static", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model"]["name"] == str(random_model_dir.resolve())
    assert data["model"]["layers"] == 2 and data["settings"]["cache"] == "static"
    assert data["modes"]["recompute"]["token_ids"] == data["modes"]["cached"]["token_ids"]
    assert data["summary"]["max_abs_dlogit"] <= 1e-10  # float64
    last = data["steps"][-1]
    assert last["kv_allocated"] >= last["kv_bytes"] > 0  # static: preallocated to the full length


def test_same_seed_same_tokens_in_process(random_model_dir, capsys):
    args = ["compare", "--model", str(random_model_dir), "--prompt", "Hamlet", "--max-new-tokens", "4",
            "--sampling", "sample", "--seed", "7", "--modes", "cached", "--no-attention", "--json"]
    reports = []
    for _ in range(2):
        assert cli.main(args) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0]["modes"]["cached"]["token_ids"] == reports[1]["modes"]["cached"]["token_ids"]
    assert set(reports[0]["modes"]) == {"cached"}


BAD_ARGUMENTS = {  # name -> (arguments, what the one line on stderr must say)
    "negative tokens": (["--max-new-tokens", "-3"], "argument --max-new-tokens: must be ≥ 1, got -3"),
    "zero tokens": (["--max-new-tokens", "0"], "argument --max-new-tokens: must be ≥ 1, got 0"),
    "not a number": (["--max-new-tokens", "many"], "argument --max-new-tokens: expected a whole number, got 'many'"),
    "tokens in e-notation": (["--max-new-tokens", "1e3"], "expected a whole number, got '1e3'"),
    "tokens missing": (["--max-new-tokens"], "argument --max-new-tokens: expected one argument"),
    "too long for the context": (["--max-new-tokens", "100000"], "needs 100004 positions (the last new token is "
                                                                 "never fed back), over the model's context of 256: "
                                                                 "at most 252 new tokens fit"),
    "empty prompt": (["--prompt", "   "], "the prompt is empty"),
    "blank prompt": (["--prompt", ""], "the prompt is empty"),
    "prompt with a non-UTF-8 byte": (["--prompt", "caf\udce9"], "the byte 0xE9, which is not UTF-8 (at character 4)"),
    "prompt with a lone surrogate": (["--prompt", "\ud800x"], "a lone surrogate U+D800, which is not a character"),
    "unknown model": (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    "blank model": (["--model", " "], "no model given"),
    "missing directory": (["--model", "/nonexistent/gpt"], "no such directory: /nonexistent/gpt"),
    "a file as model": (["--model", "/etc/passwd"], "/etc/passwd is a file, not a model directory"),
    "not a model directory": (["--model", "/etc"], "/etc has no config.json"),
    "unknown Hub model": (["--model", "openai-community/gpt2-xxl"], "not a known GPT-2 Hub id"),
    "temperature 0": (["--sampling", "sample", "--temperature", "0"], "temperature must be > 0 and finite, got 0.0"),
    "temperature negative": (["--sampling", "sample", "--temperature", "-1"], "temperature must be > 0"),
    "temperature nan": (["--sampling", "sample", "--temperature", "nan"], "expected a finite number, got 'nan'"),
    "temperature inf": (["--sampling", "sample", "--temperature", "inf"], "expected a finite number, got 'inf'"),
    "temperature text": (["--sampling", "sample", "--temperature", "warm"], "expected a number, got 'warm'"),
    "top-p above 1": (["--sampling", "sample", "--top-p", "1.5"], "top-p must be a number in (0, 1]"),
    "top-p 0": (["--sampling", "sample", "--top-p", "0"], "top-p must be a number in (0, 1]"),
    "top-p negative": (["--sampling", "sample", "--top-p", "-0.5"], "top-p must be a number in (0, 1]"),
    "negative top-k": (["--sampling", "sample", "--top-k", "-1"], "argument --top-k: must be ≥ 0, got -1"),
    "fractional top-k": (["--sampling", "sample", "--top-k", "1.5"], "argument --top-k: expected a whole number"),
    "seed 2**64": (["--sampling", "sample", "--seed", str(2**64)], "seed must be a whole number from 0 to 2**64 - 1"),
    "negative seed": (["--sampling", "sample", "--seed", "-1"], "argument --seed: must be ≥ 0, got -1"),
    "seed text": (["--sampling", "sample", "--seed", "abc"], "argument --seed: expected a whole number, got 'abc'"),
    "seed without sampling": (["--seed", "5"], "--seed applies only with --sampling sample"),
    "temperature without sampling": (["--temperature", "0.7"], "--temperature applies only with --sampling sample"),
    "knobs without sampling": (["--top-k", "5", "--top-p", "0.5"], "--top-k, --top-p apply only with --sampling"),
    "unknown sampling": (["--sampling", "beam"], "argument --sampling: invalid choice: 'beam'"),
    "unknown dtype": (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    "unknown cache": (["--cache", "paged"], "argument --cache: invalid choice: 'paged'"),
    "unknown mode": (["--modes", "cached,telepathy"], "telepathy"),
    "no modes": (["--modes", ","], "argument --modes"),
    "zero threads": (["--threads", "0"], "argument --threads: must be ≥ 1, got 0"),
    "threads beyond the cores": (["--threads", str(cores() + 1)], f"argument --threads: at most {cores()}, the CPU "
                                                                  f"cores this process may use (got {cores() + 1})"),
    "unknown option": (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    "stray argument": (["extra"], "unrecognized arguments: extra"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS, ids=list(BAD_ARGUMENTS))
def test_bad_arguments_one_line_exit_2(case, capsys, monkeypatch):
    extra, message = BAD_ARGUMENTS[case]
    monkeypatch.setattr("gptviz.decoding.warm_up", lambda *a, **k: 0.0)  # the bundled model loads; skip warming
    args = ["compare", "--prompt", "ROMEO.", "--max-new-tokens", "2", *extra]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptviz: error: "), captured.err
    assert message in lines[0], lines[0]


@pytest.mark.parametrize("case", ["seed 2**64", "prompt with a non-UTF-8 byte", "temperature 0", "top-p above 1",
                                  "seed without sampling", "empty prompt"])
def test_settings_are_refused_before_any_model_loads(case, capsys, monkeypatch):
    """A bad setting costs no model load (it used to fail after loading and warming up: 28 s under load)."""
    def load(*args, **kwargs):
        raise AssertionError("a model was loaded for settings that can never run")

    monkeypatch.setattr("gptviz.models.load", load)
    assert cli.main(["compare", "--prompt", "ROMEO.", *BAD_ARGUMENTS[case][0]]) == 2
    assert BAD_ARGUMENTS[case][1] in capsys.readouterr().err


def test_missing_subcommand_and_prompt(capsys):
    assert cli.main([]) == 2
    assert cli.main(["compare"]) == 2
    assert all(line.startswith("gptviz: error: ") for line in capsys.readouterr().err.splitlines())


@pytest.fixture(scope="module")
def not_gpt2_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llama")
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                  "num_attention_heads": 2, "num_hidden_layers": 1}))
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.fixture(scope="module")
def corrupt_model_dir(random_model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corrupt") / "model"
    shutil.copytree(random_model_dir, path)
    (path / "model.safetensors").write_bytes(os.urandom(2048))
    return path


SUBPROCESS_CASES = {  # through a real argv: invalid UTF-8 arrives as lone surrogates there
    "not gpt2": (lambda d: ["--model", str(d["not_gpt2"]), "--prompt", "x"], "'llama' models are not supported"),
    "prompt too long": (lambda d: ["--model", str(d["random"]), "--prompt", "To be or not to be, " * 40],
                        "but the model's context is 48"),
    "unknown model": (lambda d: ["--model", "gpt5", "--prompt", "x"], "unknown model 'gpt5'"),
    "corrupt weights": (lambda d: ["--model", str(d["corrupt"]), "--prompt", "x"], "cannot be read as safetensors"),
    "prompt not UTF-8": (lambda d: ["--prompt", b"caf\xe9 au lait"], "the byte 0xE9, which is not UTF-8"),
}


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=list(SUBPROCESS_CASES))
def test_bad_inputs_subprocess_no_traceback(case, not_gpt2_dir, random_model_dir, corrupt_model_dir):
    arguments, expected = SUBPROCESS_CASES[case]
    dirs = {"not_gpt2": not_gpt2_dir, "random": random_model_dir, "corrupt": corrupt_model_dir}
    proc = gptviz_cli("compare", *arguments(dirs), "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expected in proc.stderr
