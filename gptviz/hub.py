"""Fetch a GPT-2 from the Hugging Face Hub (or the mirror HF_ENDPOINT names) into the local Hub cache.

Every request is huggingface_hub's own, so whatever configures it configures gptviz: HF_ENDPOINT
(a mirror), HTTPS_PROXY / HTTP_PROXY / NO_PROXY (read by its HTTP client), HF_TOKEN, HF_HOME /
HF_HUB_CACHE (where the files go) and HF_HUB_OFFLINE=1 (no request at all, cached copies only).
Only the files a GPT-2 needs are fetched, never pickled ``*.bin`` weights.

A copy counts as complete once its weights are in the cache: they are fetched last, and each file is
checked against the checksum the Hub lists before the next one starts (a file that fails is deleted).
A transfer that breaks leaves only huggingface_hub's ``*.incomplete`` file, which it deletes itself
and never reads as a finished one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import RepoSibling
from huggingface_hub.utils.sha import git_hash, sha_fileobj

from gptviz import display
from gptviz.checkpoint import WEIGHTS

# What a GPT-2 checkpoint needs, in download order: weights last (see the module docstring).
FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
         "merges.txt", "special_tokens_map.json", "added_tokens.json", WEIGHTS)
REVISION = "main"  # GPT-2's weights never change; a pinned commit would only break mirrors that lack it

Progress = Callable[[int, int, str], None]  # (bytes done, bytes in all, file being fetched); may run on any thread
NETWORK_ERRORS = (OSError, httpx2.HTTPError)  # huggingface_hub's HTTP errors are OSErrors; httpx's transport ones


class HubError(Exception):
    """The Hub's copy of a model cannot be used; the message says what happened and what to do."""


def endpoint() -> str:
    """Where requests go: HF_ENDPOINT if set, else the public Hub."""
    return constants.ENDPOINT


def cached(repo_id: str) -> Path | None:
    """The directory of a complete cached copy of ``repo_id`` (no network), else None.

    Complete: the weights, config.json and a tokenizer (tokenizer.json, or vocab.json + merges.txt),
    so a copy another tool left without a tokenizer gets its missing files downloaded.
    """
    def has(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, name, revision=REVISION), str)

    if has(WEIGHTS) and has("config.json") and (has("tokenizer.json") or has("vocab.json") and has("merges.txt")):
        return Path(try_to_load_from_cache(repo_id, WEIGHTS, revision=REVISION)).parent
    return None


def fetch(repo_id: str, timeout: float, on_progress: Progress | None = None) -> Path:
    """A complete local copy of ``repo_id``: from the cache, else downloaded, with ``on_progress`` told the bytes.

    Raises HubError within about ``timeout`` s when the endpoint does not answer, at once when
    HF_HUB_OFFLINE is set and nothing is cached, and when a download breaks or arrives corrupt.
    """
    folder = cached(repo_id)
    if folder is not None:
        return folder
    if constants.is_offline_mode():
        raise HubError("HF_HUB_OFFLINE is set and no copy is cached: unset HF_HUB_OFFLINE to download it")
    files = _listing(repo_id, timeout)
    _download(repo_id, files, timeout, on_progress or (lambda done, total, name: None))
    # Whatever the repo lacks (a tokenizer, say) the checkpoint checks name when the folder is loaded.
    return Path(try_to_load_from_cache(repo_id, WEIGHTS, revision=REVISION)).parent


def _listing(repo_id: str, timeout: float) -> list[RepoSibling]:
    """The files to fetch, with sizes and checksums, from one request that gives up after ``timeout`` s."""
    try:
        info = HfApi().model_info(repo_id, revision=REVISION, files_metadata=True, timeout=timeout)
    except HfHubHTTPError as exc:  # an answer: no such repo there (404), a token needed (401), a server error
        raise HubError(f"{endpoint()} refused '{repo_id}' ({_why(exc)}): check that HF_ENDPOINT (a mirror) holds "
                       "it, or HF_TOKEN, then retry") from exc
    except NETWORK_ERRORS as exc:
        raise HubError(f"cannot reach {endpoint()} ({_why(exc)}): check your connection, HF_ENDPOINT "
                       "(a mirror) or HTTPS_PROXY, then retry") from exc
    except (ValueError, KeyError, TypeError) as exc:  # an answer, but not a Hub's (a proxy's login page?)
        raise HubError(f"{endpoint()} did not answer like a Hugging Face Hub ({_why(exc)}): check HF_ENDPOINT") from exc
    by_name = {s.rfilename: s for s in info.siblings or []}
    if WEIGHTS not in by_name:
        raise HubError(f"'{repo_id}' on {endpoint()} has no {WEIGHTS} (pickled weights are refused for safety)")
    return [by_name[name] for name in FILES if name in by_name]


def _download(repo_id: str, files: list[RepoSibling], timeout: float, on_progress: Progress) -> None:
    """Download what the cache lacks, one file at a time, each checked before the next."""
    missing = [f for f in files if not isinstance(try_to_load_from_cache(repo_id, f.rfilename, revision=REVISION),
                                                  str)]
    total, done = sum(f.size or 0 for f in missing), 0
    for file in missing:
        # base/name bound now: the counter reports this file's bytes on top of the files before it
        counter = _Counter(lambda n, base=done, name=file.rfilename: on_progress(base + n, total, name))
        counter(0)
        try:
            path = hf_hub_download(repo_id, file.rfilename, revision=REVISION, etag_timeout=timeout,
                                   tqdm_class=counter.bar)
        except NETWORK_ERRORS as exc:
            raise HubError(f"the download of {file.rfilename} from {endpoint()} broke off at "
                           f"{display.download(done + counter.bytes, total)} ({_why(exc)}). Nothing half-written "
                           "was kept: retry, or check your connection and HF_ENDPOINT (a mirror)") from exc
        _verify(Path(path), file)
        done += counter.bytes


def _verify(path: Path, file: RepoSibling) -> None:
    """The file's bytes against the checksum the Hub lists (sha256 for LFS files, git's sha1 for the rest)."""
    with path.open("rb") as f:
        actual = sha_fileobj(f).hex() if file.lfs is not None else git_hash(f.read())
    expected = file.lfs.sha256 if file.lfs is not None else file.blob_id
    if expected and actual != expected:
        blob = path.resolve()
        path.unlink()  # the snapshot's link, then the bytes it pointed to: nothing corrupt stays cached
        blob.unlink(missing_ok=True)
        raise HubError(f"{file.rfilename} from {endpoint()} is corrupt: its checksum is {actual[:12]}…, its listing "
                       f"says {expected[:12]}…. It was deleted: retry; if it happens again, check the mirror "
                       "(HF_ENDPOINT)")


class _Counter:
    """Bytes written for one file, counted through huggingface_hub's ``tqdm_class`` hook (plain HTTP and Xet)."""

    def __init__(self, report: Callable[[int], None]):
        self.bytes, self.report = 0, report
        counter = self

        class Bar:  # what hf_hub_download calls on a progress bar; it draws nothing
            def __init__(self, *args, **kwargs):
                pass

            def update(self, n=1):  # bytes written (negative when a resume restarts from zero)
                counter(counter.bytes + int(n or 0))

            def update_transfer(self, n=1):  # bytes on the wire (Xet deduplicates): written bytes are what count
                pass

            def set_postfix_str(self, *args, **kwargs):
                pass

            set_transfer_postfix_str = set_postfix_str

            def close(self):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        self.bar = Bar

    def __call__(self, n_bytes: int) -> None:
        self.bytes = n_bytes
        self.report(n_bytes)


def _why(exc: BaseException) -> str:
    """An exception as one short line: its class and the first line of its message."""
    text = str(exc).strip().split("\n")[0][:200]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
