import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

import pytest  # noqa: E402
import torch  # noqa: E402

from gptviz import models  # noqa: E402


class CharTokenizer:
    """A stand-in tokenizer for tiny random models: one token per character."""

    def __init__(self, vocab: int = 64):
        self.vocab = vocab

    def __call__(self, text: str) -> dict:
        return {"input_ids": [ord(c) % self.vocab for c in text]}

    def decode(self, ids) -> str:
        return "".join(chr(48 + int(i) % 64) for i in ids)


@pytest.fixture(scope="session")
def tiny_model():
    return models.random_model(layers=2, heads=2, d_model=32, vocab=64, context=64, seed=0)


@pytest.fixture(scope="session")
def tiny_model64():
    return models.random_model(layers=2, heads=2, d_model=32, vocab=64, context=64, seed=0, dtype="float64")


@pytest.fixture(scope="session")
def tokenizer():
    return CharTokenizer(64)


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield
