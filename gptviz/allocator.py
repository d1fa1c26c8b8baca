"""The C allocator under a long-lived decoding process (a Streamlit server): free memory handed back to the
operating system after every pass, and one pass's threads sharing their heaps.

torch takes a CPU tensor's memory from the C library's malloc. glibc's keeps freed blocks in its heaps for
reuse, and raises its mmap threshold to the largest block freed so far (up to 32 MiB), so the recompute
mode's (t, vocab) logits (28 MB at 140 GPT-2 tokens) and a pass's (steps, vocab) logits buffers come from
heaps that then keep their high-water mark; each decoder of a pass is a thread (gptviz/lockstep.py), which
glibc gives a heap of its own. On a GPT-2-small-shape 128-token session that held over 200 MB freed but not
returned after the first pass (glibc's mallinfo2: 164 MB in use, 214 MB free in its heaps), under the next one.

The mmap threshold is left as it is. Fixed at 8 MiB, it took that session's server peak RSS from 1.48 to
1.38 GB, but every recompute step then maps and faults in fresh pages for its logits inside the timed section:
20-50 ms per 28 MB on a busy 2-core machine (3-10 ms reused from a heap), against ~0.1 s for a whole recompute
step of 128 GPT-2 tokens (README, Performance), which would skew the speed-ups shown.

Elsewhere than glibc (macOS, musl) every function here does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable

ARENA_MAX = 2  # glibc heaps shared by all threads: the decoders of a pass never run at once (lockstep), so
# sharing costs them no waiting, and a block one decoder frees is reused by whichever runs next
_M_ARENA_MAX = -8  # mallopt's parameter number (glibc's malloc.h)

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
    """Cap the number of malloc heaps, once per process. Returns whether glibc took it."""
    global _done
    libc = _glibc()
    if libc is None:
        return False
    with _tuned:
        if not _done:
            _done = bool(libc.mallopt(_M_ARENA_MAX, ARENA_MAX))
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
