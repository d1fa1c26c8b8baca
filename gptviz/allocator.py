"""The C allocator under a long-lived decoding process (a Streamlit server): big blocks straight from the
operating system and back, and free memory handed back after every pass.

torch takes a CPU tensor's memory from the C library's malloc. glibc's keeps freed blocks in its heaps for
reuse, and raises its mmap threshold to the largest block freed so far (up to 32 MiB), so the recompute
mode's (t, vocab) logits (28 MB at 140 GPT-2 tokens) and a pass's (steps, vocab) logits buffers come from
heaps that then keep their high-water mark; each decoder of a pass is a thread (gptviz/lockstep.py), with
a heap of its own. On a GPT-2-small-shape 128-token session that held over 200 MB freed but not returned
(glibc's mallinfo2: 164 MB in use, 214 MB free in its heaps after the first pass), on top of each next pass.

Elsewhere than glibc (macOS, musl) every function here does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable

MMAP_THRESHOLD = 8 * 2**20  # bytes: blocks this big or bigger get pages of their own, unmapped when freed; this
# is above every per-layer tensor of a GPT-2-small step (a recompute MLP activation at 1,024 tokens is 12.6 MB,
# rarely: a step at 1,024 tokens takes seconds), so the timed steps seldom pay for fresh pages
ARENA_MAX = 2  # glibc heaps shared by all threads: the decoders of a pass never run at once (lockstep), so
# sharing costs them no waiting, and a freed block is reused by whichever decoder runs next
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt parameter numbers (glibc's malloc.h)

_tuned = threading.Lock()
_done = False


@functools.cache
def _glibc():
    """The process's C library when it is glibc (it has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    return libc


def tune() -> bool:
    """Set the mmap threshold and the arena count, once per process. Returns whether glibc took them."""
    global _done
    libc = _glibc()
    if libc is None:
        return False
    with _tuned:
        if not _done:
            _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(libc.mallopt(_M_ARENA_MAX, ARENA_MAX))
        return _done


def release() -> None:
    """Hand the free pages of every malloc heap back to the operating system (a pass's temporaries are gone)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def around_pass(function: Callable) -> Callable:
    """``function`` runs with the allocator tuned, and its temporaries' pages are returned once it is done."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        tune()
        try:
            return function(*args, **kwargs)
        finally:
            release()  # after ``function``'s frame is gone: its tapes and logits are freed by now
    return wrapped
