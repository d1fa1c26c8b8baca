"""Broken model directories: every one is refused by load() with a message that names the problem.

Each case copies a real saved random GPT-2 (conftest's ``saved_model_dir``), breaks one thing
the way a user's download or hand edit would, and checks the message. None may load as a
silently random model, and nothing in a model directory is ever unpickled or executed.
"""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptviz import ModelLoadError, load
from gptviz.models import WEIGHTS, WEIGHTS_INDEX


@pytest.fixture
def model_dir(saved_model_dir, tmp_path):
    """A private, loadable copy of the saved tiny GPT-2 (2 layers, d_model 32, 64 positions)."""
    path = tmp_path / "model"
    shutil.copytree(saved_model_dir, path)
    return path


def edit_config(**changes):
    def edit(path):
        config = json.loads((path / "config.json").read_text())
        config.update(changes)
        (path / "config.json").write_text(json.dumps(config))
    return edit


def edit_tensors(change):
    def edit(path):
        tensors = load_file(path / WEIGHTS)
        change(tensors)
        save_file(tensors, path / WEIGHTS, metadata={"format": "pt"})
    return edit


def write_weights(data: bytes):
    return lambda path: (path / WEIGHTS).write_bytes(data)


def truncate(path):
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])


def rename_weights(path):
    (path / WEIGHTS).rename(path / "weights.safetensors")


def sharded(index: str):
    def edit(path):
        (path / WEIGHTS).rename(path / "model-00001-of-00001.safetensors")
        (path / WEIGHTS_INDEX).write_text(index)
    return edit


def remove_tokenizer(path):
    for name in os.listdir(path):
        if name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            (path / name).unlink()


def shrink_vocab(path):
    """A consistent model with a vocabulary smaller than its tokenizer's."""
    edit_config(vocab_size=50)(path)
    edit_tensors(lambda t: t.update({"transformer.wte.weight": t["transformer.wte.weight"][:50].contiguous()}))(path)


BROKEN = {
    # holes 1: weights that are not this GPT-2's, refused by name instead of loading random values
    "empty-safetensors": (lambda p: save_file({}, p / WEIGHTS), r"holds no GPT-2 weights .*holds no tensors"),
    "only-unknown-tensors": (lambda p: save_file({"foo": torch.zeros(2)}, p / WEIGHTS),
                             r"holds no GPT-2 weights .*1 unknown tensor\(s\): foo"),
    "one-tensor-missing": (edit_tensors(lambda t: t.pop("transformer.h.0.attn.c_attn.weight")),
                           r"missing 1 of the model's weights \(transformer\.h\.0\.attn\.c_attn\.weight\)"),
    "embedding-missing": (edit_tensors(lambda t: t.pop("transformer.wte.weight")),
                          r"missing 2 .*\(lm_head\.weight, transformer\.wte\.weight\)"),
    "extra-tensor": (edit_tensors(lambda t: t.update({"transformer.h.9.x": torch.zeros(2)})),
                     r"1 tensor\(s\) this GPT-2 has no place for \(transformer\.h\.9\.x\)"),
    # files safetensors cannot read
    "random-bytes": (write_weights(os.urandom(4096)), r"model\.safetensors cannot be read as safetensors"),
    "zero-bytes": (write_weights(b""), r"cannot be read as safetensors \(.*header too small"),
    "absurd-header-length": (write_weights((2**62).to_bytes(8, "little") + b"{}"), r"header too large"),
    "header-not-json": (write_weights((8).to_bytes(8, "little") + b"not json"), r"cannot be read as safetensors"),
    "truncated": (truncate, r"cannot be read as safetensors .*missing, corrupt or truncated"),
    "weights-misnamed": (rename_weights, r"has no model\.safetensors .*name the weights file model\.safetensors"),
    "index-not-json": (sharded("{oops"), r"model\.safetensors\.index\.json is not a valid safetensors index"),
    "index-missing-shard": (sharded(json.dumps({"weight_map": {"transformer.wte.weight": "gone.safetensors"}})),
                            r"gone\.safetensors cannot be read as safetensors"),
    # config.json that does not match the weights, or that no GPT-2 can run
    "n_positions-0": (edit_config(n_positions=0), r"does not match its weights: it says n_positions=0 but the "
                                                  r"weights hold 64 \(wpe\.weight is \[64, 32\]\)"),
    "n_positions-negative": (edit_config(n_positions=-1), r"n_positions=-1 but the weights hold 64"),
    "n_positions-larger": (edit_config(n_positions=128), r"says n_positions=128 but the weights hold 64"),
    "vocab-larger": (edit_config(vocab_size=500), r"vocab_size=500 but the weights hold"),
    "n_embd-larger": (edit_config(n_embd=64), r"n_embd=64 but the weights hold 32"),
    "n_layer-more": (edit_config(n_layer=3), r"it says n_layer=3 but the weights hold 2 \(blocks h\.0, h\.1\)"),
    "n_layer-fewer": (edit_config(n_layer=1), r"n_layer=1 but the weights hold 2"),
    "n_layer-0": (edit_config(n_layer=0), r"n_layer=0 but the weights hold 2"),
    "n_head-0": (edit_config(n_head=0), r"n_head=0, but a GPT-2 needs a whole number ≥ 1"),
    "n_head-not-dividing": (edit_config(n_head=3), r"n_embd=32 and n_head=3, but n_embd must be a multiple"),
    "n_positions-string": (edit_config(n_positions="64"),
                           r"config\.json of .* is invalid \(.*'n_positions' expected int, got str"),
    "n_layer-float": (edit_config(n_layer=2.5), r"is invalid \(.*'n_layer' expected int, got float"),
    "n_layer-bool": (edit_config(n_layer=True), r"is invalid \(.*'n_layer' expected int, got bool"),
    "config-not-json": (lambda p: (p / "config.json").write_text("{not json"), r"config\.json is not valid JSON"),
    "config-a-list": (lambda p: (p / "config.json").write_text("[1, 2]"), r"config\.json names no model_type"),
    "config-no-model-type": (lambda p: (p / "config.json").write_text('{"n_layer": 2}'),
                             r"config\.json names no model_type \(a GPT-2's says"),
    "config-other-architecture": (edit_config(model_type="llama"), r"'llama' models are not supported.*GPT-2"),
    "config-unknown-architecture": (edit_config(model_type="gpt5"), r"'gpt5' models are not supported"),
    # the tokenizer must fit the model: transformers silently builds an empty one from nothing
    "no-tokenizer": (remove_tokenizer, r"has no usable tokenizer \(it encodes nothing\)"),
    "tokenizer-larger-than-vocab": (shrink_vocab, r"the tokenizer in .* has \d+ tokens but the model's vocabulary "
                                                 r"holds 50"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_model_directory_is_refused_with_its_reason(model_dir, case):
    breaks, message = BROKEN[case]
    breaks(model_dir)
    with pytest.raises(ModelLoadError, match=message):
        load(str(model_dir))


def test_genuine_zero_position_model_says_it_cannot_run(tmp_path):
    """A checkpoint whose weights agree with n_positions: 0 (the context check once said 'at most -1 tokens')."""
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_positions=0, n_layer=1, n_head=2, n_embd=16, vocab_size=64)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"n_positions=0, but a GPT-2 needs a whole number ≥ 1 there: this "
                                             r"checkpoint cannot run"):
        load(str(tmp_path))


def test_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(ModelLoadError, match=r"symbolic link loop"):
        load(str(tmp_path / "a"))


def test_dangling_symlink_is_refused(tmp_path):
    (tmp_path / "model").symlink_to(tmp_path / "deleted")
    with pytest.raises(ModelLoadError, match=r"no such directory"):
        load(str(tmp_path / "model"))


def test_symlink_to_a_real_model_still_loads(model_dir, tmp_path):
    (tmp_path / "link").symlink_to(model_dir)
    assert load(str(tmp_path / "link")).name == str(model_dir.resolve())


class _Tripwire:
    """Unpickling this writes a marker file: proof that a pickle was executed."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_nothing_is_unpickled(model_dir, tmp_path):
    """A booby-trapped pytorch_model.bin beside good safetensors is never read; alone it is refused."""
    marker = tmp_path / "unpickled"
    _Tripwire.marker = marker
    torch.save({"transformer.wte.weight": _Tripwire()}, model_dir / "pytorch_model.bin")
    load(str(model_dir))
    assert not marker.exists()
    (model_dir / WEIGHTS).unlink()
    with pytest.raises(ModelLoadError, match=r"pickled \.bin weights are refused"):
        load(str(model_dir))
    assert not marker.exists()


def test_no_remote_code_runs(model_dir, tmp_path):
    """config.json and tokenizer_config.json pointing at a custom module: it is never imported."""
    marker = tmp_path / "executed"
    (model_dir / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                       "from transformers import GPT2Config as EvilConfig\n"
                                       "from transformers import GPT2LMHeadModel as EvilModel\n")
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel",
                "AutoTokenizer": ["evil.EvilConfig", None]}
    edit_config(auto_map=auto_map)(model_dir)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (model_dir / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "auto_map": auto_map}))
    try:
        lm = load(str(model_dir))
        assert type(lm.model).__module__.startswith("transformers.")  # the library's own GPT-2 class
    except ModelLoadError as exc:  # refusing is fine too, as long as it says why
        assert "remote code" in str(exc) or "trust_remote_code" in str(exc)
    assert not marker.exists()
    edit_config(model_type="evil")(model_dir)  # a custom architecture is refused before anything imports it
    with pytest.raises(ModelLoadError, match=r"'evil' models are not supported"):
        load(str(model_dir))
    assert not marker.exists()
