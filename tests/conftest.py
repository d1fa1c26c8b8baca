import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

import pytest  # noqa: E402
import torch  # noqa: E402

import gptviz  # noqa: E402
from gptviz import models  # noqa: E402

TINY_SOURCE = "gpt2"  # in app tests this Hub id loads a tiny random GPT-2 (the Hub is offline in tests anyway)


class CharTokenizer:
    """The one stand-in tokenizer for tiny random models: a token per byte, shown as a printable character."""

    def __init__(self, vocab: int = 64):
        self.vocab = vocab

    def __call__(self, text: str) -> dict:
        return {"input_ids": [b % self.vocab for b in text.encode()]}

    def decode(self, ids) -> str:
        return "".join(chr(33 + int(i) % 94) for i in ids)


class LocalJob:
    """The job a task sees when called directly in this process (gptviz/serve/tasks.py)."""

    progress = None

    def report(self, progress):
        self.progress = progress

    def checkpoint(self):
        pass


def tiny_loaded(source: str, dtype: str = "float32") -> gptviz.LoadedModel:
    model = models.random_model(layers=2, heads=2, d_model=32, vocab=256, context=256, seed=0, dtype=dtype)
    return models.loaded_model(model, CharTokenizer(256), source, "tiny random GPT-2 (test)", dtype)


@pytest.fixture
def tiny_gpt2(monkeypatch):
    """Patch the app's boundary, gptviz.load: TINY_SOURCE loads a tiny random GPT-2, all else loads for real."""
    import streamlit as st

    real = gptviz.load

    def load(source, dtype="float32", **kwargs):
        return tiny_loaded(source, dtype) if source == TINY_SOURCE else real(source, dtype, **kwargs)

    monkeypatch.setattr(gptviz, "load", load)
    st.cache_resource.clear()  # the app's loader caches by (source, dtype) across tests
    yield TINY_SOURCE
    from gptviz import serve
    from views._wait import server

    try:
        server().close()  # a refinement still running stops at its next step, not after pytest closed its output
    except serve.Unavailable:
        pass  # the test's server was a Redis that never answered: nothing ran
    st.cache_resource.clear()


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


@pytest.fixture(autouse=True)
def _own_app_server():
    """Each test's app sessions get a fresh decode queue and result store: no run shared across tests."""
    wait = sys.modules.get("views._wait")  # imported by the first AppTest run
    if wait is not None:
        wait.server.clear()
    yield


def build_tokenizer(text: str, vocab: int = 300):
    """A real byte-level BPE tokenizer (the tokenizers library), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory):
    """A random GPT-2 + tokenizer saved with save_pretrained (safetensors), as a user's local dir."""
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 20
    tokenizer = build_tokenizer(text)
    model = models.random_model(layers=2, heads=2, d_model=32, vocab=len(tokenizer), context=64, seed=1)
    path = tmp_path_factory.mktemp("saved") / "tiny-gpt2"
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


class RedisProcess:
    """A real redis-server on a free port of 127.0.0.1, in its own temp dir, nothing saved to disk."""

    def __init__(self, tmp):
        import shutil
        import socket
        import subprocess
        import time

        import redis

        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (Debian: apt-get install redis-server); .ci/run installs it")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except Exception:
            self.process.kill()


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory):
    """One redis-server for the whole session (each test flushes it: see redis_url)."""
    process = RedisProcess(tmp_path_factory.mktemp("redis"))
    yield process
    process.stop()


@pytest.fixture
def redis_url(redis_process):
    redis_process.flush()
    return redis_process.url
