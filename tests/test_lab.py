"""Cache lab: each variant's invariant holds where it should, and visibly breaks where it should not."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicSlidingWindowLayer

import gptviz
from gptviz import cost, display, lab
from gptviz.lab import Variant, paged, precision, prefix, settings, variants
from gptviz.models import random_model

FP32_EXACT = 5e-5  # float32 rounding on logits of size ~10-20 (a few ulps; the lab page shows the numbers)
FP64_EXACT = 1e-11


@pytest.fixture(scope="module")
def bundled():
    return gptviz.load("bundled")


@pytest.fixture(scope="module")
def report(bundled):
    return lab.run(bundled.model, bundled.tokenizer, lab.LabSettings(max_new_tokens=40, window=16, sinks=4))


@pytest.fixture(scope="module")
def model():
    return random_model(layers=2, heads=4, d_model=64, vocab=64, context=96, seed=3)


def exact(model, prompt_ids, steps):
    return variants.greedy(model, prompt_ids, steps, DynamicCache(config=model.config))


def forced(model, variant, prompt_ids, tokens):
    return variants.forced(model, prompt_ids, tokens, lab.build(variant, model.config))


def max_abs(a, b):
    return float((a.double() - b.double()).abs().max())


def test_window_at_least_the_sequence_is_exact_and_a_shorter_one_drifts(bundled):
    ids = bundled.tokenizer("ROMEO.\n")["input_ids"]
    tokens, logits, sizes = exact(bundled.model, ids, 30)
    total = len(ids) + len(tokens)
    wide, _ = forced(bundled.model, Variant("w", "window", window=total), ids, tokens)
    assert max_abs(wide, logits) <= FP32_EXACT
    narrow, narrow_sizes = forced(bundled.model, Variant("w", "window", window=12), ids, tokens)
    per_step = (narrow.double() - logits.double()).abs().amax(-1)
    fill = 12 - len(ids)  # the first step whose new token would see more than 12 positions
    assert per_step[:fill].max() <= FP32_EXACT  # exact until the window fills
    assert per_step[fill:].max() > 1e-2  # then drift
    assert max(narrow_sizes) == cost.kv_bytes(6, 6, 32, 11, 4) < sizes[-1]  # capped at W - 1 stored tokens


def test_sinks_zero_is_the_plain_window_and_sinks_change_it_once_full(model):
    ids, window = list(range(1, 9)), 12
    tokens, _, _ = exact(model, ids, 24)
    window_cache = _layers(model, lambda: DynamicSlidingWindowLayer(sliding_window=window))
    plain, _ = variants.forced(model, ids, tokens, window_cache)
    zero, _ = forced(model, Variant("s", "sinks", sinks=0, window=window), ids, tokens)
    assert torch.equal(zero, plain)
    four, _ = forced(model, Variant("s", "sinks", sinks=4, window=window), ids, tokens)
    assert max_abs(four[: window - len(ids)], plain[: window - len(ids)]) <= FP32_EXACT
    assert max_abs(four, plain) > 1e-4


def _layers(model, make):
    cache = DynamicCache()
    cache.layers = [make() for _ in range(model.config.n_layer)]
    return cache


def test_gqa_with_one_group_per_head_is_exact_and_fewer_groups_are_not(model):
    ids = list(range(1, 9))
    tokens, logits, sizes = exact(model, ids, 16)
    same, same_sizes = forced(model, Variant("g", "gqa", groups=4), ids, tokens)
    assert max_abs(same, logits) <= FP32_EXACT and same_sizes == sizes
    pooled, pooled_sizes = forced(model, Variant("g", "gqa", groups=2), ids, tokens)
    assert max_abs(pooled, logits) > 1e-4
    assert [2 * p for p in pooled_sizes] == sizes  # half the heads stored


def test_prefix_reuse_gives_fresh_prefill_logits_and_a_wrong_prefix_does_not(bundled):
    prompts = lab.LabSettings().prefix_prompts
    result = prefix.shared_prefix(bundled.model, bundled.tokenizer, prompts, 12)
    assert result.shared_tokens >= 2 and min(result.own_tokens) >= 1
    assert max(result.max_abs) <= FP32_EXACT
    lm64 = gptviz.load("bundled", "float64")  # the same sums in float64: equal up to its rounding
    assert max(prefix.shared_prefix(lm64.model, lm64.tokenizer, prompts, 12).max_abs) <= FP64_EXACT
    ids = bundled.tokenizer("ROMEO.\nBut soft, what light")["input_ids"]
    tokens, fresh, _ = exact(bundled.model, ids, 8)
    wrong = DynamicCache(config=bundled.model.config)  # a prefix of the same length from another text
    bundled.model(torch.tensor([bundled.tokenizer("JULIET.\nAy me! sad hours")["input_ids"][: result.shared_tokens]]),
                  past_key_values=wrong, use_cache=True)
    reused, _ = variants.forced(bundled.model, ids[result.shared_tokens:], tokens, wrong)
    assert max_abs(reused, fresh) > 1e-2


def test_fp8_holds_a_quarter_of_float32_plus_its_scales_and_costs_exactness(model):
    ids = list(range(1, 9))
    tokens, logits, sizes = exact(model, ids, 16)
    fp8, fp8_sizes = forced(model, Variant("fp8", "fp8"), ids, tokens)
    layers = model.config.n_layer
    assert fp8_sizes == [s // 4 + 2 * layers * 4 for s in sizes]  # 1 byte a value + a float32 scale for K and V
    assert 0 < max_abs(fp8, logits) < 1


def test_quanto_bytes_follow_the_formula_in_float64_too():  # scales and zero-points take the states' dtype
    model64 = random_model(layers=2, heads=4, d_model=64, vocab=64, context=96, seed=3, dtype="float64")
    v = Variant("int4", "quanto", nbits=4, residual_length=4, q_group_size=16)
    _, measured = forced(model64, v, [1, 2, 3], list(range(10)))
    assert measured == [variants.formula_bytes(v, model64.config, 8, 3 + i, 3) for i in range(10)]


def test_quanto_int4_and_int2_bytes_follow_the_formula_and_int2_costs_more(model):
    assert settings.quanto_missing() is None, "optimum-quanto is pinned in requirements.txt"
    ids = list(range(1, 9))
    tokens, logits, sizes = exact(model, ids, 20)
    errors = {}
    for nbits in (4, 2):
        v = Variant(f"int{nbits}", "quanto", nbits=nbits, residual_length=6, q_group_size=16)
        out, measured = forced(model, v, ids, tokens)
        assert measured == [variants.formula_bytes(v, model.config, 4, len(ids) + i, len(ids))
                            for i in range(len(tokens))]
        assert measured[-1] < sizes[-1]
        errors[nbits] = max_abs(out, logits)
    assert 0 < errors[4] < errors[2]


def test_a_missing_quanto_is_left_out_with_the_reason(monkeypatch):
    monkeypatch.setattr(settings, "quanto_missing", lambda: "needs optimum-quanto")
    todo, missing = settings.variants(lab.LabSettings(), head_dim=32)
    assert [v.kind for v in todo if v.kind in ("fp8", "quanto")] == ["fp8"]
    assert missing == {"quanto-int4": "needs optimum-quanto", "quanto-int2": "needs optimum-quanto"}


def test_the_cached_recompute_gap_shrinks_with_precision(model):
    ids = list(range(1, 9))
    tokens, _, _ = exact(model, ids, 12)
    study = precision.precision_study(model, ids, tokens, lab.PRECISIONS)
    gap = {r.dtype: max(r.cached_vs_recompute) for r in study.rows}
    # Each 16-bit decoder rounds to so few values that both may land on the same ones (bfloat16's gap was 0 on an
    # AMD EPYC): what follows the bits for sure is float32 over float64, and every format's distance from float64.
    assert gap["float32"] > gap["float64"]
    assert gap["float64"] < 1e-10 and gap["float32"] < FP32_EXACT
    reference = study.row("float64")  # never compared with itself (that was a column of zeros by construction)
    assert reference.cached_vs_float64 is None and reference.first_flip is None
    summary = study.summary().set_index("dtype")["max |Δ| vs float64"]
    assert pd.isna(summary["float64"]) and 0 < summary["float32"] < summary["bfloat16"]
    assert study.row("float32").recompute_vs_float64 != study.row("float32").cached_vs_float64  # two decoders
    alone = precision.precision_study(model, ids, tokens, ("float32", "float16"))  # no reference at all
    assert all(r.cached_vs_float64 is None for r in alone.rows) and alone.summary()["max |Δ| vs float64"].isna().all()


def test_the_precision_study_refuses_a_model_too_big_to_copy(model, monkeypatch):
    monkeypatch.setattr(precision, "COPY_BUDGET", 1000)
    study = precision.precision_study(model, [1, 2], [3, 4], lab.PRECISIONS)
    copy_bytes = 8 * sum(p.numel() for p in model.parameters())  # the float64 copy it would make
    assert study.rows == [] and study.summary().empty
    assert f"needs {display.size(copy_bytes)}, over this lab's {display.size(1000)}" in study.skipped


def test_calculator_counts_kv_heads_not_query_heads():
    llama = lab.kv_size(lab.KNOWN_CONFIGS["meta-llama/Meta-Llama-3-8B"], 8192)
    assert llama.per_token_full == 2 * 32 * 8 * 128 * 2  # 128 KiB a token
    assert llama.total == llama.per_token_full * 8192
    assert llama.total_if_query_heads == 4 * llama.total and llama.overstatement == 4
    qwen = lab.kv_size(lab.KNOWN_CONFIGS["Qwen/Qwen2.5-7B"], 1000)
    assert qwen.total == 2 * 28 * 4 * 128 * 2 * 1000 and qwen.total_if_query_heads == 7 * qwen.total
    gpt2 = lab.kv_size(lab.KNOWN_CONFIGS["openai-community/gpt2"], 1024)
    assert gpt2.total == gpt2.total_if_query_heads == cost.kv_bytes(12, 12, 64, 1024, 4)


def test_calculator_caps_sliding_window_layers():
    mistral = lab.KNOWN_CONFIGS["mistralai/Mistral-7B-v0.1"]
    short, long = lab.kv_size(mistral, 4000), lab.kv_size(mistral, 10_000)
    assert short.total == 2 * 32 * 8 * 128 * 2 * 4000
    assert long.total == 2 * 32 * 8 * 128 * 2 * 4096  # every layer stops at its window
    mixed = dict(mistral, layer_types=["full_attention", "sliding_attention"] * 16)
    assert lab.kv_size(mixed, 10_000).total == 2 * 8 * 128 * 2 * (16 * 10_000 + 16 * 4096)


@pytest.mark.parametrize("config, message", [
    ({"model_type": "llama", "hidden_size": 4096}, "num_hidden_layers"),  # never a class default
    ({"n_head": 12, "n_embd": 768, "model_type": "gpt2"}, "n_layer"),
    ({"num_hidden_layers": 2}, 'no "model_type"'),
    ([1, 2], "one JSON object"),
])
def test_calculator_refuses_configs_without_a_shape(config, message):
    with pytest.raises(lab.LabError, match=message):
        lab.kv_size(config, 10)


def test_paged_blocks_share_full_prefix_blocks_and_copy_the_block_where_sequences_part():
    seqs = {"a": list(range(10)), "b": list(range(6)) + [99, 98, 97], "c": [5, 5]}
    table = paged.block_table(seqs, block_size=4, context=32, bytes_per_token=10)
    frame = table.to_frame()
    assert table.logical_blocks == 3 + 3 + 1 and table.tokens == 21
    assert table.physical_blocks == 6  # block 0 of a and b is stored once
    assert frame.query("sequence == 'b'")["shared"].tolist() == [True, False, False]
    assert frame.query("sequence == 'b'")["copy_on_write"].tolist() == [False, True, False]  # parted at token 6
    assert table.waste_contiguous == pytest.approx(1 - 21 / 96)
    assert table.waste_paged == pytest.approx(1 - 21 / 28)
    again = paged.block_table({**seqs, "d": list(range(8)) + [7]}, block_size=4, context=32, bytes_per_token=10)
    d = again.to_frame().query("sequence == 'd'")
    assert d["shared"].tolist() == [True, True, False] and not d["copy_on_write"].any()  # a's blocks, no copy
    alone = paged.block_table({"a": list(range(10))}, block_size=1, context=10, bytes_per_token=10)
    assert alone.waste_paged == 0 and alone.waste_contiguous == 0 and alone.copied_on_write == 0


def test_report_on_the_bundled_model(report):
    summary = report.summary().set_index("variant")
    assert (summary["bytes measured"] == summary["bytes formula"]).all()
    steps = report.steps()
    assert (steps["bytes_measured"] == steps["bytes_formula"]).all()
    for v in report.variants:  # a free run follows the exact text until the first teacher-forced disagreement
        first_disagreement = next((i for i, ok in enumerate(v.deltas.agrees) if not ok), None)
        assert v.first_divergence == first_disagreement
    assert summary.loc["window 16", "first divergence"] is not None
    assert report.to_json()["variants"][0]["variant"] == "fp8"
    assert set(report.sequences()) >= {"exact", "prefix prompt 1", "prefix prompt 2"}
    assert 0 < report.nbytes() < 2**20  # a few numbers per step: cheap for a server to keep


@pytest.mark.parametrize("change, message", [
    ({"window": 0}, "window must be a whole number ≥ 2"),
    ({"window": 300}, "larger than the model's context"),
    ({"groups": 4}, "do not divide the model's 6 heads: choose one of [1, 2, 3, 6]"),
    ({"block_size": 0}, "block size must be a whole number ≥ 1"),
    ({"backends": ("fp8", "int3")}, "unknown quantization backend 'int3'"),
    ({"max_new_tokens": 255}, r"needs 260 positions .* over the model's context of 256: at most 251 new tokens fit"),
    ({"prompt": ""}, "the prompt is empty"),
    ({"prompt": "   "}, "the prompt is empty"),  # the compare CLI and the app refuse it too
    ({"prompt": "ROMEO\udcff"}, "the byte 0xFF, which is not UTF-8"),  # invalid UTF-8 in argv
    ({"prefix_prompts": ("ROMEO.\ud800 a", "ROMEO.\ud800 b")}, "a lone surrogate U.D800"),  # (. : + is regex)
    ({"prefix_prompts": ("ROMEO.", "JULIET.")}, "do not start with the same token"),
    ({"prefix_prompts": ("The", "The")}, "needs a token of its own"),  # one token each
])
def test_bad_settings_say_what_to_change(bundled, change, message):
    bad = lab.LabSettings(**{**vars(lab.LabSettings()), "max_new_tokens": 4, **change})
    with pytest.raises(lab.LabError, match=message.replace("[", r"\[").replace("]", r"\]")):
        lab.run(bundled.model, bundled.tokenizer, bad)
    with pytest.raises(lab.LabError, match="block size"):
        paged.block_table({"a": [1]}, 0, 8, 1)


def documented_json_keys() -> dict[str, list[str]]:
    """The README's list of ``python -m gptviz lab --json`` keys: section ("top level", "variants", ...) -> keys."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("Its keys are stable ids", 1)[1].split("\n\n", 2)[1]
    sections = {}
    for line in block.splitlines():
        name, keys = re.sub(r"\([^)]*\)", "", line.removeprefix("* ")).split(":", 1)
        sections[name.strip().strip("`")] = re.findall(r"`(\w+)`", keys)
    return sections


def test_the_lab_fits_the_context_by_the_decoders_rule_and_checks_the_prefix_prompts(tokenizer):
    """One rule (gptviz.settings.positions): prompt + new - 1 positions; the lab asked for one fewer."""
    small = random_model(layers=2, heads=2, d_model=32, vocab=64, context=16, seed=0)
    fits = lab.LabSettings(prompt="abcd", max_new_tokens=13, window=8, sinks=2, prefix_prompts=("ab1", "ab2"))
    report = lab.run(small, tokenizer, fits)  # 4 + 13 - 1 = 16 positions: exactly the context
    assert len(report.exact_tokens) == 13
    with pytest.raises(lab.LabError, match=r"prompt \(4 tokens\) \+ max new tokens \(14\) needs 17 positions"):
        lab.run(small, tokenizer, replace(fits, max_new_tokens=14))
    long_prefix = replace(fits, prefix_prompts=("ab" + "x" * 20, "ab" + "y" * 20))  # was an IndexError mid-run
    with pytest.raises(lab.LabError, match=r"the first shared-prefix prompt is 22 tokens but the model's context is "
                                           r"16: shorten it"):
        lab.check(long_prefix, small.config, tokenizer)
    with pytest.raises(lab.LabError, match=r"second shared-prefix prompt \(6 tokens\) \+ max new tokens \(13\) "
                                           r"needs 18 positions"):
        lab.run(small, tokenizer, replace(fits, prefix_prompts=("ab1", "ab2345"), prefix_new_tokens=13))
    cut = lab.run(small, tokenizer, replace(fits, prefix_prompts=("ab1", "ab2345")))  # left to the lab: it says so
    assert cut.settings.prefix_new_tokens == 11 and [len(s) for s in cut.prefix.sequences] == [3 + 11, 6 + 11]
    assert "continues for 11 tokens, not the run's 13: that is all the model's context of 16" in lab.text.prefix(cut)


def test_cli_lab_json_has_the_reports_figures(capsys):
    from gptviz import cli

    assert cli.main(["lab", "--prompt", "ROMEO.\n", "--max-new-tokens", "6", "--window", "5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["seconds"] > 0 and data["new_tokens"] == 6 and data["settings"]["groups"] == 3
    names = [v["variant"] for v in data["variants"]]
    assert names == ["fp8", "quanto-int4", "quanto-int2", "window 5", "sinks 4 + window 5", "GQA 3 groups"]
    assert all(v["bytes_measured"] == v["bytes_formula"] for v in data["variants"])
    assert len(data["steps"]) == 6 * 6 and {p["dtype"] for p in data["precision"]} == set(lab.PRECISIONS)
    documented = documented_json_keys()  # the README's list of keys is the one the command prints
    assert documented.pop("top level") == list(data)
    for section, keys in documented.items():
        rows = data[section] if isinstance(data[section], list) else [data[section]]
        assert all(list(row) == keys for row in rows), section
    assert [row["layout"] for row in data["paged"]] == list(lab.LAYOUT_LABELS)


@pytest.mark.parametrize("args, message", [
    (["--backends", "fp8,int3"], "unknown quantization backend 'int3'"),
    (["--backends", ","], "name at least one of fp8"),  # was a silent run with no quantized cache
    (["--window", "0"], "window must be a whole number ≥ 2"),
    (["--window", "-3"], "window must be a whole number ≥ 2"),  # one bound, the library's (argparse said ≥ 0)
    (["--groups", "0"], "GQA groups must be a whole number ≥ 1"),
    (["--sinks", "-1"], "sinks must be a whole number ≥ 0"),
    (["--groups", "4"], "do not divide the model's 6 heads"),
    (["--block-size", "0"], "block size must be a whole number ≥ 1"),
    (["--prompt", "ROMEO\udcff"], "not UTF-8"),  # was a tokenizer TypeError traceback
])
def test_cli_lab_bad_settings_print_one_line(capsys, args, message):
    from gptviz import cli

    assert cli.main(["lab", "--prompt", "ROMEO.", "--max-new-tokens", "3", *args]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_lab_figures_leave_the_modes_colours_to_the_modes(report):
    """Blue, orange and green mean the app's three decoders (Mode.color); the lab's variants and blocks are others."""
    from gptviz.lab import figures
    from gptviz.modes import Mode

    drawn = set()
    for fig in (figures.drift(report), figures.cache_bytes(report), figures.precision_gap(report.precision),
                figures.block_table(report.paged(4))):
        for trace in fig.data:
            drawn |= {getattr(getattr(trace, part, None), "color", None) for part in ("line", "marker")}
            drawn |= {color for _, color in getattr(trace, "colorscale", None) or ()}
    assert len(drawn - {None}) > 4 and not drawn & {m.color for m in Mode}


def test_a_build_lock_left_by_a_dead_process_is_removed_and_a_live_build_s_is_kept(tmp_path):
    """torch waits forever for a lock whose build died (a server killed mid-build): every later start would hang."""
    import os
    import time

    from gptviz.lab import quanto

    old = tmp_path / "a" / "library" / "extensions" / "cpp" / "build" / "lock"
    new = tmp_path / "b" / "library" / "extensions" / "cpp" / "build" / "lock"
    for lock in (old, new):
        lock.parent.mkdir(parents=True)
        lock.touch()
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    removed = quanto.clear_stale_locks(roots=[str(tmp_path / "a"), str(tmp_path / "b")])
    assert removed == [old] and not old.exists() and new.exists()


def test_the_precision_chart_says_the_order_it_measured_even_when_a_gap_is_zero(model):
    ids = list(range(1, 9))
    tokens, _, _ = exact(model, ids, 6)
    study = precision.precision_study(model, ids, tokens, lab.PRECISIONS)
    said = lab.text.precision_gaps(study)
    measured = sorted(((max(r.cached_vs_recompute), r.dtype) for r in study.rows), reverse=True)
    assert said.index(measured[0][1]) < said.index(measured[-1][1])  # largest first, as measured
    zero_part = "the same logits both ways here in "
    assert "float32" not in said.partition(zero_part)[2]  # float32's gap is never 0 on these 8 tokens
    forced = replace(study, rows=[replace(r, cached_vs_recompute=[0.0] * 6) if r.dtype == "float32" else r
                                  for r in study.rows])
    assert "float32" in lab.text.precision_gaps(forced).partition(zero_part)[2]
