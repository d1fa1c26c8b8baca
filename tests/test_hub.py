"""Real GPT-2 from the Hub the way users reach it, against a Hub the test serves on 127.0.0.1.

FakeHub speaks the endpoints huggingface_hub reads (see huggingface_hub/hf_api.py ``model_info`` and
file_download.py ``get_hf_file_metadata`` / ``http_get``): the model listing with sizes and checksums,
and ``/{repo}/resolve/{revision}/{file}`` with ETag, X-Repo-Commit, Content-Length, X-Linked-Etag /
X-Linked-Size for the LFS weights, HEAD and GET, and Range. It serves a tiny random GPT-2 saved with
save_pretrained under the id of the registry's gpt2, and can be slow, break off, or send wrong bytes.
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.utils import close_session
from huggingface_hub.utils.sha import git_hash

import gptviz
from gptviz import display, hub
from gptviz.checkpoint import WEIGHTS
from gptviz.registry import BUNDLED_NAME, canonical_hub_id

SOURCE = "gpt2"
REPO = canonical_hub_id(SOURCE)
CHUNK = 16 * 1024  # bytes per body write and per client read: a small file arrives in many steps, as 500 MB do
ROOT = Path(__file__).resolve().parent.parent
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class FakeHub(ThreadingHTTPServer):
    """One repo's files, served as the Hub serves them; the fault switches are plain attributes."""

    daemon_threads = True

    def __init__(self, folder: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        self.files["pytorch_model.bin"] = b"pickled weights gptviz must never fetch"
        self.commit = hashlib.sha1(b"".join(self.files.values())).hexdigest()
        self.sent = dict(self.files)  # what a GET sends (differs from the listed bytes when corrupt)
        self.delay = 0.0  # seconds between body chunks
        self.drop = None  # None | "once" | "for good": the weights' GET stops half way, then resumes / 503s
        self.requests: list[tuple[str, str]] = []
        self._listed: dict[tuple[str, bytes], dict] = {}
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def sibling(self, name: str) -> dict:
        data = self.files[name]
        if (name, data) not in self._listed:  # hashed once per content (a bytes object keeps its hash)
            entry = {"rfilename": name, "size": len(data), "blobId": git_hash(data)}
            if name.endswith((".safetensors", ".bin")):  # stored with git LFS on the Hub
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            self._listed[(name, data)] = entry
        return self._listed[(name, data)]

    def fetched(self) -> set[str]:
        return {path.rsplit("/", 1)[-1] for method, path in self.requests if "/resolve/" in path}


class _Handler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        hub_, path = self.server, urlsplit(self.path).path  # absolute-form when reached through a proxy
        hub_.requests.append((self.command, path))
        if path == f"/api/models/{REPO}/revision/main":
            info = {"id": REPO, "sha": hub_.commit, "siblings": [hub_.sibling(n) for n in hub_.files]}
            return self.reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        match = re.fullmatch(rf"/{REPO}/resolve/main/(.+)", path)
        if not match or match[1] not in hub_.files:
            return self.reply(404, b"not found", {"X-Error-Code": "EntryNotFound"}, body)
        name, meta = match[1], hub_.sibling(match[1])
        headers = {"X-Repo-Commit": hub_.commit, "Accept-Ranges": "bytes", "ETag": f'"{meta["blobId"]}"'}
        if "lfs" in meta:
            sha = meta["lfs"]["sha256"]
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(meta["size"])})
        data, start = hub_.sent[name], 0
        if body and name == WEIGHTS and hub_.drop == "for good" and self.headers.get("Range"):
            return self.reply(503, b"mirror down", {}, body)
        if body and (ranged := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))):
            start = int(ranged[1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        cut = len(data) // 2 if body and name == WEIGHTS and hub_.drop and start == 0 else None
        self.reply(206 if start else 200, data[start:], headers, body, cut=cut)

    def reply(self, status: int, data: bytes, headers: dict, body: bool, cut: int | None = None) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if not body:
            return
        for at in range(0, len(data) if cut is None else cut, CHUNK):
            time.sleep(self.server.delay)
            self.wfile.write(data[at:min(at + CHUNK, len(data) if cut is None else cut)])
            self.wfile.flush()
        if cut is not None:  # the connection drops mid-body
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A tiny random GPT-2 + real byte-level BPE tokenizer, as save_pretrained writes it."""
    from conftest import build_tokenizer

    tokenizer = build_tokenizer("To be, or not to be, that is the question. " * 20)
    model = gptviz.random_model(layers=2, heads=2, d_model=64, vocab=len(tokenizer), context=64, seed=3)
    path = tmp_path_factory.mktemp("hub-repo")
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def fake_hub(repo, tmp_path, monkeypatch):
    """A fresh FakeHub that huggingface_hub talks to, and an empty Hub cache, patched the way its own tests do."""
    server = FakeHub(repo)
    _point_at(monkeypatch, server.url, tmp_path)
    yield server
    server.shutdown()
    server.server_close()


def _point_at(monkeypatch, endpoint: str, cache: Path | None = None) -> None:
    # huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE once, at import (constants.py);
    # its calls read them back from the module at call time. The subprocess test sets the real variables.
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    for name in PROXY_VARIABLES:  # a proxy set for this machine's own traffic must not carry 127.0.0.1
        monkeypatch.delenv(name, raising=False)
    close_session()  # huggingface_hub's client reads the proxy variables when it is created
    if cache is None:
        return
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)  # the client reads in CHUNK, not 10 MiB, steps


class Seen:
    """What on_progress was told, with when."""

    def __init__(self):
        self.calls: list[tuple[float, int, int, str]] = []

    def __call__(self, done: int, total: int, name: str) -> None:
        self.calls.append((time.perf_counter(), done, total, name))

    def done(self) -> list[int]:
        return [c[1] for c in self.calls]


def _blobs(cache: Path) -> list[Path]:
    return [p for p in (cache / "hub").rglob("blobs/*") if p.is_file()]


def test_download_reports_bytes_and_the_model_decodes(fake_hub, repo):
    seen = Seen()
    lm = gptviz.load(SOURCE, on_progress=seen)
    assert lm.name == REPO and lm.notice is None
    total = sum(len(fake_hub.files[n]) for n in fake_hub.fetched())
    done = seen.done()
    assert done == sorted(done) and done[-1] == total and {c[2] for c in seen.calls} == {total}
    assert len(set(done)) > 5  # the weights arrived in steps, not at once
    fetched = fake_hub.fetched()
    assert fetched >= {WEIGHTS, "config.json", "tokenizer.json"} and "pytorch_model.bin" not in fetched
    saved = gptviz.random_model(layers=2, heads=2, d_model=64, vocab=lm.info["vocab"], context=64, seed=3)
    assert torch.equal(lm.model.transformer.wte.weight, saved.transformer.wte.weight)  # the bytes made it
    result = gptviz.run(lm.model, lm.tokenizer, "To be, or", gptviz.DecodeSettings(max_new_tokens=4))
    assert result.summary().recompute.same_tokens
    fake_hub.requests.clear()
    assert gptviz.load(SOURCE).name == REPO and fake_hub.requests == []  # the cached copy: no network at all


def test_slow_download_arrives_in_steps_and_does_not_time_out(fake_hub):
    fake_hub.delay = 0.03  # ~0.7 s for the weights, longer than the 0.3 s the Hub is given to answer
    seen = Seen()
    start = time.perf_counter()
    lm = gptviz.load(SOURCE, hub_timeout=0.3, on_progress=seen)
    assert lm.name == REPO and time.perf_counter() - start > 0.3
    weights = [c for c in seen.calls if c[3] == WEIGHTS]
    assert len({c[1] for c in weights}) > 5 and weights[-1][0] - weights[0][0] > 0.3  # spread over time


def test_a_dropped_connection_resumes_with_range(fake_hub):
    fake_hub.drop = "once"
    seen = Seen()
    assert gptviz.load(SOURCE, on_progress=seen).name == REPO
    assert seen.done() == sorted(seen.done())
    assert sum(1 for m, p in fake_hub.requests if m == "GET" and p.endswith(WEIGHTS)) == 2


def test_a_download_that_breaks_off_falls_back_and_a_retry_succeeds(fake_hub, tmp_path):
    fake_hub.drop = "for good"
    lm = gptviz.load(SOURCE, fallback_to_bundled=True)
    assert lm.name == BUNDLED_NAME and lm.source == SOURCE
    assert f"download of {WEIGHTS}" in lm.notice and "broke off at" in lm.notice and "retry" in lm.notice
    assert "bundled offline model" in lm.notice
    assert not list((tmp_path / "hub").rglob("*.incomplete")) and hub.cached(REPO) is None
    fake_hub.drop = None
    assert gptviz.load(SOURCE).name == REPO


def test_corrupt_bytes_are_refused_and_deleted(fake_hub, tmp_path):
    data = bytearray(fake_hub.files[WEIGHTS])
    data[len(data) // 2] ^= 0xFF  # same length, one byte wrong: only the checksum can tell
    fake_hub.sent[WEIGHTS] = bytes(data)
    lm = gptviz.load(SOURCE, fallback_to_bundled=True)
    assert lm.name == BUNDLED_NAME and f"{WEIGHTS} from {fake_hub.url} is corrupt" in lm.notice
    assert "check the mirror" in lm.notice
    assert hub.cached(REPO) is None and not any(p.stat().st_size == len(data) for p in _blobs(tmp_path))
    fake_hub.sent[WEIGHTS] = fake_hub.files[WEIGHTS]
    assert gptviz.load(SOURCE).name == REPO


def test_a_truncated_safetensors_on_the_mirror_is_refused(fake_hub):
    fake_hub.files[WEIGHTS] = fake_hub.sent[WEIGHTS] = fake_hub.files[WEIGHTS][:1000]  # listed and sent alike
    with pytest.raises(gptviz.ModelLoadError, match="cannot be read as safetensors.*hf cache rm model/"):
        gptviz.load(SOURCE)
    lm = gptviz.load(SOURCE, fallback_to_bundled=True)  # from the cache now: refused again, never loaded
    assert lm.name == BUNDLED_NAME and "truncated" in lm.notice


def test_a_mirror_without_the_model_says_so(fake_hub):
    with pytest.raises(gptviz.ModelLoadError, match=rf"{fake_hub.url} refused 'distilbert/distilgpt2' .*404"):
        gptviz.load("distilgpt2")


def test_a_cached_copy_without_a_tokenizer_gets_the_missing_files(fake_hub, tmp_path):
    gptviz.load(SOURCE)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # as if another tool had fetched only the weights
        next((tmp_path / "hub").rglob(f"snapshots/*/{name}")).unlink()
    fake_hub.requests.clear()
    assert gptviz.load(SOURCE).name == REPO and fake_hub.fetched() == {"tokenizer.json", "tokenizer_config.json"}


def test_unreachable_endpoint_falls_back_within_seconds(monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _point_at(monkeypatch, f"http://127.0.0.1:{port}", tmp_path)
    start = time.perf_counter()
    lm = gptviz.load(SOURCE, fallback_to_bundled=True)
    assert time.perf_counter() - start < 10 and lm.name == BUNDLED_NAME
    assert f"cannot reach http://127.0.0.1:{port} (ConnectError" in lm.notice and "HF_ENDPOINT" in lm.notice


def test_an_endpoint_that_never_answers_gives_up_after_hub_timeout(monkeypatch, tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        _point_at(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path)
        start = time.perf_counter()
        with pytest.raises(gptviz.ModelLoadError, match="cannot reach .*Timeout"):
            gptviz.load(SOURCE, hub_timeout=0.5)
        assert 0.45 < time.perf_counter() - start < 8


def test_offline_uses_no_network(fake_hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    lm = gptviz.load(SOURCE, fallback_to_bundled=True)
    assert lm.name == BUNDLED_NAME and "HF_HUB_OFFLINE is set" in lm.notice and fake_hub.requests == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    gptviz.load(SOURCE)  # now cached
    fake_hub.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert gptviz.load(SOURCE).name == REPO and fake_hub.requests == []  # a cached copy, offline


def test_requests_go_through_the_proxy(fake_hub, monkeypatch):
    """HF_ENDPOINT names a host that does not resolve: only the proxy (the FakeHub) can answer for it."""
    _point_at(monkeypatch, "http://hub.invalid")
    monkeypatch.setenv("HTTP_PROXY", fake_hub.url)  # HTTPS_PROXY is the same client setting for https:// URLs
    monkeypatch.delenv("NO_PROXY", raising=False)
    close_session()
    try:
        assert gptviz.load(SOURCE).name == REPO
    finally:
        close_session()
    assert (("GET", f"/{REPO}/resolve/main/{WEIGHTS}")) in fake_hub.requests


def test_cli_downloads_through_hf_endpoint_with_progress_on_stderr(fake_hub, tmp_path):
    """The real variables, read by a fresh process: HF_ENDPOINT, HF_HOME; the report on stdout, bytes on stderr."""
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "0",
           "OMP_NUM_THREADS": "1"}
    for name in ("HF_HUB_CACHE", *PROXY_VARIABLES):
        env.pop(name, None)
    command = [sys.executable, "-m", "gptviz", "compare", "--model", SOURCE, "--prompt", "To be",
               "--max-new-tokens", "1", "--modes", "cached", "--json"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"]["name"] == REPO
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(rf"{WEIGHTS}: .* of .*KiB", proc.stderr) and "downloaded" in last, proc.stderr
    assert list((tmp_path / "home" / "hub").glob("models--*"))  # under HF_HOME, where huggingface_hub keeps it


def test_the_app_shows_the_download_then_runs_the_downloaded_model(fake_hub, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    fake_hub.delay = 0.02  # long enough for the page to draw the bytes a few times
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()  # the app's loader caches by (source, dtype) across tests
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.query_params.update({"model": SOURCE, "new": "3"})
        at.run()
        assert not at.exception and not at.warning, [e.value for e in at.exception]
        total = sum(len(fake_hub.files[n]) for n in fake_hub.fetched())
        expected = f"Downloaded {display.size(total)} from {fake_hub.url}"
        assert any(t.value.startswith(expected) for t in at.toast), [t.value for t in at.toast]
        runs = at.session_state["gptviz_runs"]
        assert runs[at.session_state["gptviz_shown"]].model_name == REPO
    finally:
        st.cache_resource.clear()


def test_the_app_falls_back_then_tries_the_hub_again_when_asked(fake_hub, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    fake_hub.drop = "for good"
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.query_params.update({"model": SOURCE, "new": "3"})
        at.run()
        assert "broke off" in at.warning[0].value and "bundled offline model" in at.warning[0].value
        fake_hub.drop = None  # the mirror is back
        at.button(key="run").click().run()
        assert at.warning, "the fallback stays until asked: a Run alone does not hit the Hub again"
        at.button(key="retry_hub").click().run()
        at.button(key="run").click().run()
        assert not at.exception and not at.warning, [w.value for w in at.warning]
        runs = at.session_state["gptviz_runs"]
        assert runs[at.session_state["gptviz_shown"]].model_name == REPO
    finally:
        st.cache_resource.clear()
