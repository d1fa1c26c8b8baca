"""The real loader, offline: saved random models, the bundled model, and clear refusals."""

import json

import pytest
import torch
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM

from gptviz import DecodeSettings, ModelLoadError, load, run
from gptviz.models import BUNDLED_DIR, canonical_hub_id, random_model


def test_saved_random_model_loads_back_through_the_real_loader(saved_model_dir):
    lm = load(str(saved_model_dir))
    assert lm.name == str(saved_model_dir.resolve())
    assert lm.model.config._attn_implementation == "gptviz"
    assert lm.info["tied_embeddings"] and lm.model.lm_head.weight is lm.model.transformer.wte.weight
    assert not lm.model.training
    ids = lm.tokenizer("To be, or not")["input_ids"]
    assert lm.tokenizer.decode(ids) == "To be, or not"  # a real round trip, not an empty tokenizer
    result = run(lm.model, lm.tokenizer, "To be, or not", DecodeSettings(max_new_tokens=6))
    assert result.summary().recompute.same_tokens and result.summary().recompute.max_abs_dlogit <= 1e-4


def test_float64_load(saved_model_dir):
    lm = load(str(saved_model_dir), dtype="float64")
    assert next(lm.model.parameters()).dtype == torch.float64


def test_bundled_model_loads_offline():
    lm = load("bundled")
    assert lm.source == "bundled" and lm.notice is None
    assert lm.info["tied_embeddings"] and lm.info["context"] >= 256
    assert (BUNDLED_DIR / "model.safetensors").stat().st_size <= 20 * 2**20


def test_hub_unreachable_fails_with_the_reason(monkeypatch):
    """Offline, the reason says so (no wall-clock bound here: on a shared machine it measures the machine)."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # what huggingface_hub read at import
    with pytest.raises(ModelLoadError, match="Hugging Face Hub.*HF_HUB_OFFLINE"):
        load("gpt2")


def test_hub_model_falls_back_to_bundled_with_notice():
    lm = load("gpt2-medium", fallback_to_bundled=True)
    assert lm.source == "gpt2-medium" and lm.name == "bundled Shakespeare GPT-2"
    assert "gpt2-medium" in lm.notice and "bundled" in lm.notice


def test_hub_ids():
    assert canonical_hub_id("gpt2") == "openai-community/gpt2"
    assert canonical_hub_id("openai-community/gpt2-xl") == "openai-community/gpt2-xl"
    assert canonical_hub_id("distilgpt2") == "distilbert/distilgpt2"
    assert canonical_hub_id("meta-llama/Llama-3") is None


@pytest.mark.parametrize("source,match", [
    ("", "no model given"),
    ("not-a-model", "unknown model 'not-a-model'"),
    ("/definitely/not/here", "no such directory"),
    ("./", "no config.json"),
])
def test_bad_sources_say_what_is_supported(source, match):
    with pytest.raises(ModelLoadError, match=match):
        load(source)


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "weights.txt"
    f.write_text("hi")
    with pytest.raises(ModelLoadError, match="is a file"):
        load(str(f))


def test_non_gpt2_architecture_is_refused(tmp_path):
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=64)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="'llama' models are not supported.*GPT-2"):
        load(str(tmp_path))


def test_pickled_weights_are_refused(tmp_path):
    GPT2Config(n_layer=1, n_head=2, n_embd=16).save_pretrained(tmp_path)
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load(str(tmp_path))


def test_corrupt_config_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="config.json is not valid JSON"):
        load(str(tmp_path))


def test_local_dirs_can_be_disabled(saved_model_dir):
    with pytest.raises(ModelLoadError, match="disabled"):
        load(str(saved_model_dir), allow_local=False)


def test_bad_dtype():
    with pytest.raises(ModelLoadError, match="dtype"):
        load("bundled", dtype="int8")


def test_random_model_shape():
    m = random_model(layers=3, heads=2, d_model=16, vocab=40, context=20)
    assert (m.config.n_layer, m.config.n_head, m.config.vocab_size) == (3, 2, 40)
    assert json.loads(m.config.to_json_string())["n_positions"] == 20
