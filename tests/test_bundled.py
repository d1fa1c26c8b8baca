"""The bundled Shakespeare GPT-2: loads offline, has really learned, decodes identically in both modes."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gptviz import DecodeSettings, load, run
from gptviz.models import BUNDLED_DIR

PASSAGE = (Path(__file__).parent / "data" / "hamlet_passage.txt").read_text()  # held out of training


@pytest.fixture(scope="module")
def bundled():
    return load("bundled")


def nats_per_token(model, ids: list[int]) -> float:
    x = torch.tensor(ids)[None]  # (1, t)
    with torch.no_grad():
        return model(x, labels=x).loss.item()


def test_bundled_is_a_tied_gpt2_within_size(bundled):
    assert type(bundled.model).__name__ == "GPT2LMHeadModel"
    assert bundled.model.lm_head.weight is bundled.model.transformer.wte.weight
    assert bundled.info["context"] >= 256
    assert (BUNDLED_DIR / "model.safetensors").stat().st_size <= 20 * 10**6


def test_tokenizer_round_trips(bundled):
    text = "HAMLET. To be, or not to be,--that is the question:--\n  Ay, there's the rub; 1601 ☃"
    assert bundled.tokenizer.decode(bundled.tokenizer(text)["input_ids"]) == text


def test_held_out_hamlet_loss_far_below_a_random_model(bundled):
    ids = bundled.tokenizer(PASSAGE)["input_ids"][: bundled.info["context"]]
    trained = nats_per_token(bundled.model, ids)
    untrained = GPT2LMHeadModel(GPT2Config.from_pretrained(BUNDLED_DIR)).eval()  # same shape, random weights
    random_loss = nats_per_token(untrained, ids)
    assert random_loss > 0.95 * math.log(bundled.info["vocab"])  # a random model is a near-uniform guess
    assert trained < 0.7 * random_loss, (trained, random_loss)
    chars = len(bundled.tokenizer.decode(ids))
    assert trained * len(ids) / chars < 2.0  # nats per character on unseen Hamlet


def test_metrics_file_records_training():
    metrics = json.loads((BUNDLED_DIR / "metrics.json").read_text())
    for key in ("val_nats_per_char", "train_loss_nats_per_token", "tokens_seen", "train_wall_seconds", "machine"):
        assert key in metrics
    assert "Hamlet" in metrics["validation"]


def test_cached_and_recompute_agree_on_bundled(bundled):
    result = run(bundled.model, bundled.tokenizer, "ROMEO.\n", DecodeSettings(max_new_tokens=24))
    summary = result.summary().recompute
    assert summary.same_tokens and summary.max_abs_dlogit <= 1e-4
    assert summary.max_slice_delta <= 1e-5 and summary.max_attn_row_delta <= 1e-5
