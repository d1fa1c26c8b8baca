"""What the lab's numbers mean, in words that quote this run's measurements (markdown)."""

from __future__ import annotations


def variants(report) -> str:
    by_kind = {v.variant.kind: v for v in report.variants}
    lines = []
    if "window" in by_kind:
        w = by_kind["window"]
        parted = "never parts from the exact text" if w.first_divergence is None else \
            f"first picks another token at step {w.first_divergence}"
        lines.append(f"**Sliding window ({w.variant.window} tokens):** exact while the whole text fits in the "
                     f"window, then old tokens fall out and the logits drift (max |Δlogit| "
                     f"{max(w.deltas.max_abs):.2g}); left to choose its own tokens it {parted}. Its bytes stop "
                     f"growing at {w.variant.window - 1} stored tokens. (The prompt is read in one pass with full "
                     "attention, as GPT-2's config has no window; the window applies from the first new token.)")
    if "sinks" in by_kind:
        s = by_kind["sinks"]
        lines.append(f"**Attention sinks ({s.variant.sinks} + window):** keeping the first tokens too (StreamingLLM) "
                     f"gives max |Δlogit| {max(s.deltas.max_abs):.2g}. GPT-2 adds *learned absolute positions* to "
                     "its input, so a kept key already carries its position and needs no change; a rotary model "
                     "(Llama, Mistral) rotates keys by position and must re-rotate the keys it keeps.")
    if "gqa" in by_kind:
        g = by_kind["gqa"]
        lines.append(f"**GQA what-if ({g.variant.groups} K/V groups):** mean-pooling K/V heads without retraining "
                     f"keeps {100 * sum(g.deltas.agrees) / len(g.deltas.agrees):.0f}% of the argmax choices; real "
                     "GQA models are trained (or uptrained) that way, which is how they stay accurate.")
    return "\n\n".join(lines)


def precision(report) -> str:
    if report.precision.skipped:
        return f"The precision study was skipped: {report.precision.skipped}"
    gaps = {r.dtype: max(r.cached_vs_recompute) for r in report.precision.rows}
    listed = ", ".join(f"{name} {gap:.1e}" for name, gap in gaps.items())
    return ("The cached and the recompute decoders do the same arithmetic on paper. In practice a cached step "
            "multiplies one row by the weights while a recompute step multiplies the whole sequence at once, and "
            "matmul kernels of different shapes add the same products in a different order; every format rounds "
            f"each partial sum, so the two answers differ by about that format's rounding: {listed} (largest "
            "|Δlogit| over the run). Only the order of additions changed, so float64 is tiny but not always zero.")


def precision_gaps(study) -> str:
    """What the gap chart shows on this machine, largest first: the order is measured, not assumed (a 16-bit
    format can even give 0, when both decoders round to the same values)."""
    gaps = sorted(((max(r.cached_vs_recompute), r.dtype) for r in study.rows if r.cached_vs_recompute), reverse=True)
    order = " above ".join(f"{dtype} ({gap:.1e})" for gap, dtype in gaps)
    zero = [dtype for gap, dtype in gaps if gap == 0]
    note = (f"; the same logits both ways here in {', '.join(zero)}: every partial sum rounded to the same value"
            if zero else "")
    return f"the gap between cached and recomputed logits, largest first: {order}{note}."


def prefix(report) -> str:
    p = report.prefix
    total = p.shared_tokens * 2 + sum(p.own_tokens)
    faster = p.reused_seconds < p.fresh_seconds
    verdict = ("faster" if faster else "not faster here: on a model this small, the fixed cost of each forward "
               "call and of copying the cache outweighs the tokens saved; the saving grows with the model and the "
               "length of the shared prefix (a long system prompt)")
    s = report.settings
    cut = (f", not the run's {s.max_new_tokens}: that is all the model's context of {report.context} leaves beside "
           "the longer prompt" if s.prefix_new_tokens < s.max_new_tokens else "")
    return (f"Reusing the prefix skips {p.shared_tokens} of the {total} prompt tokens the two fresh prefills read "
            f"({p.prefix_bytes:,} B of KV held once instead of twice). Measured prefill: "
            f"{p.reused_seconds * 1e3:.1f} ms reused vs {p.fresh_seconds * 1e3:.1f} ms fresh, {verdict}. Each prompt "
            f"then continues for {s.prefix_new_tokens} tokens{cut}; the logits agree with fresh prefills to "
            f"{max(p.max_abs):.1e}: the same sums in a different order, as above.")
