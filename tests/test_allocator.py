"""A decode hands the free pages of glibc's malloc heaps back to the system once a pass is done."""

import subprocess
import sys
import textwrap

import pytest

from gptviz import allocator

# A fresh process (a test process's malloc has a history). It frees 1,000 blocks of 100 KB, each between two
# blocks still held, so none of the freed memory is at a heap's top where glibc would trim it by itself: what a
# recompute pass leaves behind. Then one tiny decode through the library, and how much resident memory it gave back.
PROBE = textwrap.dedent("""
    import torch
    from gptviz import DecodeSettings, start
    from gptviz.models import random_model

    def resident():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

    class Bytes:
        def __call__(self, text):
            return {"input_ids": [b % 64 for b in text.encode()]}

        def decode(self, ids):
            return "".join(chr(97 + int(i) % 26) for i in ids)

    model, tokenizer = random_model(layers=1, heads=1, d_model=8, vocab=64, context=32, seed=0), Bytes()
    start(model, tokenizer, "the cat", DecodeSettings(max_new_tokens=2))  # its own first allocations made
    blocks = [torch.ones(100_000, dtype=torch.uint8) for _ in range(2001)]  # each written: resident
    del blocks[1::2]  # 1,000 holes of 100 KB, each between two live blocks
    before = resident()
    start(model, tokenizer, "the cat", DecodeSettings(max_new_tokens=2))
    print(before - resident())
""")


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only")
def test_a_pass_hands_freed_heap_pages_back():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=True)
    assert int(out.stdout.split()[-1]) > 50_000_000, out.stderr[-2000:]  # of the 100 MB freed
