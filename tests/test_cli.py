"""The command line: `python -m gptviz compare ...` as a user runs it (subprocess) and in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gptviz import cli, cost, models

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
    assert data["summary"]["max_slice_delta"] <= 1e-6


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


BAD_ARGUMENTS = {
    "negative tokens": ["--max-new-tokens", "-3"],
    "zero tokens": ["--max-new-tokens", "0"],
    "not a number": ["--max-new-tokens", "many"],
    "empty prompt": ["--prompt", "   "],
    "unknown model": ["--model", "no-such-model"],
    "missing directory": ["--model", "/nonexistent/gpt"],
    "temperature 0": ["--sampling", "sample", "--temperature", "0"],
    "temperature nan": ["--sampling", "sample", "--temperature", "nan"],
    "top-p above 1": ["--sampling", "sample", "--top-p", "1.5"],
    "top-p 0": ["--sampling", "sample", "--top-p", "0"],
    "negative top-k": ["--sampling", "sample", "--top-k", "-1"],
    "temperature without sampling": ["--temperature", "0.7"],
    "unknown dtype": ["--dtype", "float16"],
    "unknown cache": ["--cache", "paged"],
    "unknown mode": ["--modes", "cached,telepathy"],
    "too long for the context": ["--max-new-tokens", "100000"],
    "unknown option": ["--frobnicate"],
}


@pytest.mark.parametrize("extra", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_one_line_exit_2(extra, capsys):
    args = ["compare", "--prompt", "ROMEO.", "--max-new-tokens", "2", *extra]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptviz: error: "), captured.err


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


@pytest.mark.parametrize("case", ["not gpt2", "prompt too long", "unknown model"])
def test_bad_inputs_subprocess_no_traceback(case, not_gpt2_dir, random_model_dir):
    args = {
        "not gpt2": ["--model", str(not_gpt2_dir), "--prompt", "x"],
        "prompt too long": ["--model", str(random_model_dir), "--prompt", "To be or not to be, " * 40],
        "unknown model": ["--model", "gpt5", "--prompt", "x"],
    }[case]
    proc = gptviz_cli("compare", *args, "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    expected = {"not gpt2": "'llama' models are not supported", "prompt too long": "context",
                "unknown model": "unknown model 'gpt5'"}[case]
    assert expected in proc.stderr
