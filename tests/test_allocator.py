"""A decode tunes glibc's malloc: big blocks get pages of their own, handed back to the system when freed."""

import subprocess
import sys
import textwrap

import pytest

from gptviz import allocator

# A fresh process (a test process's malloc has a history): one tiny decode through the library, then how many
# bytes a 12 MiB tensor maps after a 24 MiB one was freed. Untuned glibc raises its mmap threshold to the largest
# block freed, so the 12 MiB would come from a heap that keeps it: the recompute logits of a long GPT-2 run.
PROBE = textwrap.dedent("""
    import ctypes
    import torch
    from gptviz import DecodeSettings, start
    from gptviz.models import random_model

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2

    class Bytes:
        def __call__(self, text):
            return {"input_ids": [b % 64 for b in text.encode()]}

        def decode(self, ids):
            return "".join(chr(97 + int(i) % 26) for i in ids)

    start(random_model(layers=1, heads=1, d_model=8, vocab=64, context=32, seed=0), Bytes(), "the cat",
          DecodeSettings(max_new_tokens=2))
    freed = torch.empty(24 * 2**20, dtype=torch.uint8)
    del freed
    before = libc.mallinfo2().hblkhd
    block = torch.empty(12 * 2**20, dtype=torch.uint8)
    print(libc.mallinfo2().hblkhd - before)
""")


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only")
def test_a_decode_maps_big_blocks_of_their_own():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=True)
    assert int(out.stdout.split()[-1]) >= 12 * 2**20, out.stderr[-2000:]
