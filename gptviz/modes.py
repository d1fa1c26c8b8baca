"""The three ways of decoding: each mode's name, label and colour, said once.

``Mode`` is a ``str`` enum, so ``Mode.CACHED == "cached"``: traces, JSON, URLs and
command-line flags keep using the plain names.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """A decoder: ``Mode("cached") is Mode.CACHED`` and ``Mode.CACHED == "cached"``.

    >>> Mode("recompute_last").label, Mode.RECOMPUTE_LAST.logits_to_keep
    ('recompute, last-position logits only', 1)
    """

    CACHED = "cached"  # KV cache: only the new token goes in
    RECOMPUTE = "recompute"  # the whole sequence again, logits for every position
    RECOMPUTE_LAST = "recompute_last"  # the whole sequence again, logits for the last position only

    @property
    def label(self) -> str:
        """How the app and plots name this mode."""
        return _LABELS[self]

    @property
    def color(self) -> str:
        """This mode's colour in every figure (mid-tones that read on light and dark themes)."""
        return _COLORS[self]

    @property
    def suffix(self) -> str:
        """Ending of this mode's agreement columns in a comparison table ("max_abs_dlogit" + suffix)."""
        return _SUFFIXES[self]

    @property
    def logits_to_keep(self) -> int:
        """What a recompute pass asks the model for: 0 = every position, 1 = the last one."""
        return 1 if self is Mode.RECOMPUTE_LAST else 0


_LABELS = {
    Mode.CACHED: "KV cache (new token only)",
    Mode.RECOMPUTE: "recompute (whole sequence)",
    Mode.RECOMPUTE_LAST: "recompute, last-position logits only",
}
_SUFFIXES = {Mode.CACHED: "_cached", Mode.RECOMPUTE: "", Mode.RECOMPUTE_LAST: "_last"}
_COLORS = {Mode.CACHED: "#3B82F6", Mode.RECOMPUTE: "#F97316", Mode.RECOMPUTE_LAST: "#22A06B"}

MODES: tuple[str, ...] = tuple(Mode)  # every mode, cached first (it chooses the tokens the others replay)
MODE_LABELS = {m.value: m.label for m in Mode}  # for callers that index by the plain name


def parse_modes(text: str) -> tuple[Mode, ...]:
    """'recompute,cached' -> (Mode.CACHED, Mode.RECOMPUTE): known names, each once, cached first.

    >>> parse_modes("recompute_last, cached")
    (<Mode.CACHED: 'cached'>, <Mode.RECOMPUTE_LAST: 'recompute_last'>)
    """
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODES]
    if unknown or not names:
        raise ValueError(f"modes are a comma-separated subset of {','.join(MODES)}, got {text!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"each mode at most once, got {text!r}")
    return tuple(Mode(m) for m in MODES if m in names)
