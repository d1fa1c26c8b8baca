"""Smoke test of the benchmark at a tiny shape: every field is there and plausible. No timed assertions."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from gptviz.models import random_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
_spec = importlib.util.spec_from_file_location("bench", SCRIPT)
bench = sys.modules["bench"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

TINY = ["--layers", "2", "--heads", "2", "--d-model", "32", "--vocab", "64", "--context", "64",
        "--prompt-tokens", "4", "--tokens", "3,5", "--repeats", "2", "--cached-repeats", "2", "--concurrency", "1,2",
        "--concurrency-tokens", "3", "--bandwidth-mib", "8", "--lab-tokens", "3"]


def test_bench_json_report(capsys, tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main([*TINY, "--json", "--json-out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    assert report["shape"] == {"layers": 2, "heads": 2, "d_model": 32, "vocab": 64, "context": 64}
    assert report["threads"] >= 1 and report["weight_bytes"] > 0
    bandwidth = report["memory_bandwidth_bytes_per_s"]
    assert bandwidth["read"] > 0 and bandwidth["copy"] > 0
    tiny = random_model(layers=2, heads=2, d_model=32, vocab=64, context=64)
    assert report["weight_bytes"] == 4 * sum(p.numel() for p in tiny.parameters())  # tied embedding once, float32
    # the floor's definition, written out: every weight read once, at the measured read rate
    assert report["cached_step_floor_seconds"] == pytest.approx(report["weight_bytes"] / bandwidth["read"])
    assert report["peak_rss_bytes"] > 0
    session = report["session"]  # a fresh process running gptviz.run at the largest token count
    assert session["new_tokens"] == 5 and session["peak_rss_bytes"] >= session["peak_rss_after_load_bytes"] > 0
    assert session["trace_bytes"] > 0
    assert [r["new_tokens"] for r in report["runs"]] == [3, 5]
    for run in report["runs"]:
        assert set(run["modes"]) == set(bench.MODES)
        for m in run["modes"].values():
            assert len(m["plain_seconds"]) == len(m["instrumented_seconds"]) == 2
            assert m["plain_best"] > 0 and m["instrumented_best"] > 0
            assert m["ratio"] == m["instrumented_step_floor"] / m["plain_step_floor"]
            assert m["ratio_best"] == m["instrumented_best"] / m["plain_best"] and m["ratio_median"] > 0
            assert 0 < m["instrumented_step_floor"] <= m["instrumented_best"]
            assert 0 < m["plain_step_floor"] <= m["plain_best"]
            assert m["same_tokens_as_generate"] is True  # the instrumented decoders follow generate exactly
            assert m["trace_bytes"] > 0
        # attention kept by cached and recompute, not by recompute_last: stored bytes say so
        assert run["trace_bytes"] == run["modes"]["cached"]["trace_bytes"] + run["modes"]["recompute"]["trace_bytes"]
        assert run["modes"]["recompute_last"]["trace_bytes"] < run["modes"]["recompute"]["trace_bytes"]
        assert run["cached_step_vs_floor"] == run["cached_step_seconds"] / report["cached_step_floor_seconds"] > 0
        rows = 4 + run["new_tokens"] - 1
        stored = 2 * 2 * rows * (rows + 1) // 2 * 2  # layers · heads · packed triangle · 2 bytes (float16)
        # the same steps' bookkeeping, and attention only in the cached trace: the difference is exactly it
        assert run["modes"]["cached"]["trace_bytes"] - run["modes"]["recompute_last"]["trace_bytes"] == stored
    lab = report["lab"]  # every Cache-lab variant timed against the exact cached decode
    assert [v["variant"] for v in lab["variants"]][:2] == ["exact", "fp8"] and lab["new_tokens"] == 3
    assert all(v["seconds"] > 0 and v["overhead_vs_exact"] > 0 and v["kv_bytes"] > 0 for v in lab["variants"])
    assert lab["variants"][0]["overhead_vs_exact"] == 1.0
    assert [c["decodes"] for c in report["concurrency"]] == [1, 2]
    assert all(c["tokens_per_second"] > 0 and c["tokens_each"] == 3 for c in report["concurrency"])


def test_a_verdict_says_miss_when_the_target_is_missed(capsys):
    """Force both cases through the report's own printer: over the target is MISS, within it PASS."""
    mode = {"plain_step_floor": 1.0, "ratio_best": 1.0, "ratio_median": 1.0, "same_tokens_as_generate": True,
            "trace_bytes": 10}
    entry = {"new_tokens": 3, "trace_bytes": 10, "modes": {"cached": {**mode, "instrumented_step_floor": 1.5,
                                                                       "ratio": 1.5},
                                                          "recompute": {**mode, "instrumented_step_floor": 1.05,
                                                                        "ratio": 1.05}}}
    bench.print_run(entry)
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "≤" in line}
    assert lines["cached"].split()[-2] == "MISS" and lines["recompute"].split()[-2] == "PASS"


def test_bench_table_subset_of_modes(capsys):
    args = [*TINY, "--tokens", "3", "--repeats", "1", "--modes", "recompute_last,cached", "--concurrency", "",
            "--no-session-rss"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "cached" in out and "recompute_last" in out and "\n  recompute " not in out
    checked = 0
    for line in out.splitlines():  # each mode's verdict follows its own ratio (it accepted PASS or MISS)
        fields = line.split()
        if fields[:1] in (["cached"], ["recompute_last"]) and "≤" in fields:
            ratio, verdict = float(fields[3]), fields[fields.index("≤") + 2]
            assert verdict == ("PASS" if ratio <= bench.RATIO_TARGET else "MISS"), line
            checked += 1
    assert checked == 2
    assert "peak RSS" in out and "bandwidth" in out and "simultaneous" not in out
