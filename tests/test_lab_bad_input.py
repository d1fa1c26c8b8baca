"""The Cache lab as a new user meets it: bad settings on the command line, a hostile pasted config.json,
the page's widgets, a machine without a C++ compiler. Each gets one message that names the fix, never a
traceback, and what was already computed stays."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from gptviz import cli, lab
from gptviz.serve import cores
from tests.conftest import TINY_SOURCE

ROOT = Path(__file__).resolve().parent.parent
LONG = " ".join(["word"] * 400)  # 400 tokens of the bundled model: past its 256-token context

CLI_CASES = {  # name -> (arguments after --prompt ROMEO. --max-new-tokens 3, what the one line must say)
    "window 0": (["--window", "0"], "the window must be a whole number ≥ 2, got 0"),
    "window 1": (["--window", "1"], "a window of 1 keeps no past at all"),
    "window negative": (["--window", "-3"], "the window must be a whole number ≥ 2, got -3"),
    "window text": (["--window", "wide"], "argument --window: invalid int value: 'wide'"),
    "window fraction": (["--window", "2.5"], "argument --window: invalid int value: '2.5'"),
    "window past the context": (["--window", "99999"], "larger than the model's context (256): use at most 256"),
    "sinks negative": (["--sinks", "-1"], "sinks must be a whole number ≥ 0, got -1"),
    "sinks text": (["--sinks", "x"], "argument --sinks: invalid int value: 'x'"),
    "sinks + window past the context": (["--sinks", "250"], "sinks + window (250 + 24) exceed the model's context"),
    "groups zero": (["--groups", "0"], "GQA groups must be a whole number ≥ 1, got 0"),
    "groups negative": (["--groups", "-2"], "GQA groups must be a whole number ≥ 1, got -2"),
    "groups not dividing": (["--groups", "4"], "4 groups do not divide the model's 6 heads: choose one of [1, 2, 3,"),
    "groups above the heads": (["--groups", "12"], "12 groups do not divide the model's 6 heads"),
    "groups text": (["--groups", "half"], "argument --groups: invalid int value: 'half'"),
    "block size zero": (["--block-size", "0"], "the block size must be a whole number ≥ 1, got 0"),
    "block size negative": (["--block-size", "-16"], "the block size must be a whole number ≥ 1, got -16"),
    "block size text": (["--block-size", "big"], "argument --block-size: invalid int value: 'big'"),
    "backend unknown": (["--backends", "fp8,int3"], "unknown quantization backend 'int3': choose from fp8, quanto-"),
    "backend upper case": (["--backends", "FP8"], "unknown quantization backend 'FP8'"),
    "backend int8": (["--backends", "quanto-int8"], "unknown quantization backend 'quanto-int8'"),
    "backends empty": (["--backends", ","], "name at least one of fp8, quanto-int4, quanto-int2"),
    "residual zero": (["--residual-length", "0"], "the residual length must be a whole number ≥ 1, got 0"),
    "residual negative": (["--residual-length", "-4"], "the residual length must be a whole number ≥ 1, got -4"),
    "residual text": (["--residual-length", "some"], "argument --residual-length: invalid int value: 'some'"),
    "prefix prompt too long": (["--prefix-prompts", LONG, LONG + " more"],
                               "the first shared-prefix prompt is 401 tokens but the model's context is 256"),
    "prefix prompt empty": (["--prefix-prompts", "", "ROMEO."], "needs two non-empty prompts"),
    "prefix prompts blank": (["--prefix-prompts", " ", "ROMEO."], "needs two non-empty prompts"),
    "prefix prompts without a common start": (["--prefix-prompts", "ROMEO.", "JULIET."],
                                              "do not start with the same token"),
    "prefix prompts one token each": (["--prefix-prompts", "The", "The"], "needs a token of its own"),
    "prefix prompt not UTF-8": (["--prefix-prompts", "ROMEO. a\udcff", "ROMEO. b"], "the byte 0xFF, which is not"),
    "prefix prompts only one": (["--prefix-prompts", "ROMEO."], "argument --prefix-prompts: expected 2 arguments"),
    "threads beyond the cores": (["--threads", "999"], f"at most {cores()}, the CPU cores this process may use"),
    "threads zero": (["--threads", "0"], "argument --threads: must be ≥ 1, got 0"),
    "new tokens zero": (["--max-new-tokens", "0"], "argument --max-new-tokens: must be ≥ 1, got 0"),
    "new tokens past the context": (["--max-new-tokens", "100000"], "needs 100004 positions (the last new"),
    "prompt empty": (["--prompt", ""], "the prompt is empty"),
    "prompt past the context": (["--prompt", LONG], "the prompt is 401 tokens but the model's context is 256"),
    "dtype float16": (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    "model unknown": (["--model", "gpt-5-ultra"], "unknown model 'gpt-5-ultra'"),
    "model a file": (["--model", "/etc/passwd"], "is a file"),
    "option unknown": (["--windows", "4"], "unrecognized arguments: --windows 4"),
}


@pytest.mark.parametrize("case", CLI_CASES, ids=list(CLI_CASES))
def test_cli_lab_bad_settings_print_one_line_that_names_the_fix(case, capsys):
    extra, message = CLI_CASES[case]
    assert cli.main(["lab", "--prompt", "ROMEO.", "--max-new-tokens", "3", *extra]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert message in err, err
    assert err.startswith("gptviz: error: ") and err.count("\n") == 1 and not out


GOOD = lab.KNOWN_CONFIGS["meta-llama/Meta-Llama-3-8B"]
GPT2 = lab.KNOWN_CONFIGS["openai-community/gpt2"]
CONFIG_CASES = {  # name -> (pasted text, what the message must say)
    "empty": ("   ", "the pasted config.json is empty"),
    "not JSON": ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)"),
    "truncated": (json.dumps(GOOD)[:-1], "not valid JSON"),
    "a list": ("[1, 2]", "holds one JSON object ({...}), got list"),
    "a string": ('"llama"', "got str"),
    "nested 100k deep": ("[" * 100_000 + "]" * 100_000, "its brackets nest thousands deep"),
    "5000-digit number": ('{"num_hidden_layers": ' + "9" * 5000 + "}", "a number thousands of digits long"),
    "2 MB": (json.dumps({**GOOD, "pad": "x" * 2_000_000}), "2,000,"),
    "no model_type": (json.dumps({"num_hidden_layers": 2}), 'the config has no "model_type"'),
    "unknown model_type": (json.dumps({**GOOD, "model_type": "gpt-5"}), "unknown model_type 'gpt-5'"),
    "model_type a number": (json.dumps({**GOOD, "model_type": 7}), "unknown model_type 7"),
    "no layers": (json.dumps({k: v for k, v in GOOD.items() if k != "num_hidden_layers"}),
                  "the config has no num_hidden_layers"),
    "gpt2 no n_layer": (json.dumps({k: v for k, v in GPT2.items() if k != "n_layer"}),
                        "the config has no n_layer / num_hidden_layers"),
    "zero heads": (json.dumps({**GOOD, "num_attention_heads": 0}), "num_attention_heads must be a whole number from 1"),
    "gpt2 zero heads": (json.dumps({**GPT2, "n_head": 0}), "n_head must be a whole number from 1"),
    "layers a string": (json.dumps({**GOOD, "num_hidden_layers": "32"}), "got '32'"),
    "layers NaN": ('{"model_type": "llama", "num_hidden_layers": NaN, "num_attention_heads": 32, "hidden_size": 4096}',
                   "num_hidden_layers must be a whole number from 1 to 1,048,576, got nan"),
    "layers Infinity": ('{"model_type": "gpt2", "n_layer": Infinity, "n_head": 12, "n_embd": 768}', "got inf"),
    "layers negative": (json.dumps({**GOOD, "num_hidden_layers": -3}), "got -3"),
    "layers fractional": (json.dumps({**GOOD, "num_hidden_layers": 31.5}), "got 31.5"),
    "layers true": (json.dumps({**GOOD, "num_hidden_layers": True}), "got True"),
    "layers 10**30": (json.dumps({**GOOD, "num_hidden_layers": 10**30}), "from 1 to 1,048,576"),
    "more K/V heads than query heads": (json.dumps({**GOOD, "num_key_value_heads": 64}),
                                        "num_key_value_heads (64) must divide num_attention_heads (32)"),
    "K/V heads not dividing": (json.dumps({**GOOD, "num_key_value_heads": 5}), "(5) must divide"),
    "hidden size not divisible": (json.dumps({**GOOD, "hidden_size": 4097}),
                                  "hidden_size (4097) is not a multiple of the 32 attention heads"),
    "head_dim zero": (json.dumps({**GOOD, "head_dim": 0}), "head_dim must be a whole number from 1"),
    "window negative": (json.dumps({**GOOD, "sliding_window": -5}), "sliding_window must be a whole number from 1"),
    "layer_types wrong length": (json.dumps({**GOOD, "layer_types": ["full_attention"] * 3}),
                                 "layer_types must list one of full_attention, sliding_attention for each of the 32"),
    "layer_types unknown": (json.dumps({**GOOD, "layer_types": ["x"] * 32}), "layer_types must list"),
    "sliding layers without a window": (json.dumps({**GOOD, "layer_types": ["sliding_attention"] * 32}),
                                        "sliding_attention layers but the config gives no sliding_window"),
    "dtype unknown": (json.dumps({**GOOD, "torch_dtype": "float12"}), "unknown number format 'float12'"),
    "rope garbage": (json.dumps({**GOOD, "rope_scaling": "x"}), "not a usable config.json"),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_a_hostile_config_json_gets_one_message(case):
    text, message = CONFIG_CASES[case]
    with pytest.raises(lab.LabError) as caught:
        lab.kv_size(lab.parse_config(text), 1000)
    assert message in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_the_calculator_still_sizes_good_configs_after_the_checks():
    """The checks refuse only bad files: null optional fields and GPT-2's own names still size."""
    assert lab.kv_size(lab.parse_config(json.dumps({**GOOD, "num_key_value_heads": None})), 10).kv_heads == 32
    assert lab.kv_size(lab.parse_config(json.dumps(GPT2)), 10).total == 2 * 12 * 768 * 4 * 10


@pytest.fixture
def lab_page(monkeypatch, tiny_gpt2):
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update({"model": TINY_SOURCE, "new": "8"})
    at.run()
    at.switch_page("views/cache_lab.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
    return at


PAGE_CASES = [  # (widget key, value, what the message must say); the tiny model: 2 heads, context 256
    ("lab_window", 1, "a window of 1 keeps no past at all"),
    ("lab_window", 0, "the window must be a whole number ≥ 2"),
    ("lab_window", 257, "larger than the model's context (256)"),
    ("lab_sinks", 240, "sinks + window (240 + 24) exceed the model's context (256)"),
    ("lab_groups", 3, "3 groups do not divide the model's 2 heads: choose one of [1, 2]"),
    ("lab_groups", 1024, "1024 groups do not divide"),
    ("lab_block", 0, "the block size must be a whole number ≥ 1"),
]


def test_the_pages_bad_settings_and_configs_each_get_a_message_and_keep_the_results(lab_page):
    at = lab_page
    good = at.dataframe[0].value
    for key, value, message in PAGE_CASES:
        widget = at.slider(key=key) if key == "lab_block" else at.number_input(key=key)
        before = widget.value
        widget.set_value(value).run()
        assert not at.exception, (key, value)
        assert message in at.error[0].value, (key, value, at.error[0].value)
        assert at.dataframe[0].value.equals(good)  # the last good lab result stays on screen
        widget.set_value(before).run()
        assert not at.error
    for name, (text, message) in CONFIG_CASES.items():
        if len(text) > 100_000 or not text.strip():
            continue  # megabytes per AppTest rerun (the library check above covers it); blank = the chosen config
        at.text_area(key="lab_json").set_value(text).run()
        assert not at.exception, name
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith("**Cannot size this config:**"), (name, errors)
        assert message in errors[0], (name, errors)
        assert at.dataframe[0].value.equals(good), name


def test_no_compiler_leaves_int4_int2_out_and_runs_the_rest(tmp_path):
    """For real: a PATH holding only python (no c++, no ninja), so optimum-quanto's JIT build cannot run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(bin_dir / "python"), "-m", "gptviz", "lab", "--prompt", "ROMEO.", "--max-new-tokens",
                           "3", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    data = json.loads(done.stdout)
    assert set(data["missing_backends"]) == {"quanto-int4", "quanto-int2"}
    reason = data["missing_backends"]["quanto-int4"]
    assert "Ninja is required" in reason and "C++ compiler (c++), ninja on the PATH" in reason
    assert [v["variant"] for v in data["variants"]] == ["fp8", "window 24", "sinks 4 + window 24", "GQA 3 groups"]
