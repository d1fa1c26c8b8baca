"""How things are shown, in one place: token notation, byte units, speed-up wording, and the
presentation styles (a student's screen or a teacher's projector) as plain data.

Every table, chart and CLI line that shows a token goes through ``token()``; every page picks
its byte unit with ``byte_unit()``; every chart is sized by a ``Style``. No Streamlit here.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

# ---- tokens ---------------------------------------------------------------------------------------

WHITESPACE = {"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "↵"}  # visible stand-ins, one character each
EMPTY_TOKEN = "∅"  # a token that decodes to no text (e.g. half of a multi-byte character)
NOTATION = "⏎ is a line break, ␣ a space, ⇥ a tab"  # the legend a page shows under a table


def token(text: str, limit: int | None = None) -> str:
    """One token's text made visible: whitespace as ⏎ ␣ ⇥, other control characters escaped, ∅ if empty."""
    shown = "".join(WHITESPACE.get(c) or (repr(c)[1:-1] if not c.isprintable() else c) for c in text)
    shown = shown or EMPTY_TOKEN
    return shown if limit is None or len(shown) <= limit else shown[: limit - 1] + "…"


# ---- bytes ----------------------------------------------------------------------------------------

BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")  # one family (binary, 1024) on every page


def byte_unit(largest: float) -> tuple[str, int]:
    """The unit a page uses for all its byte figures, chosen by the largest one: (name, bytes per unit)."""
    power = 0
    while power + 1 < len(BYTE_UNITS) and largest >= 1024 ** (power + 1):
        power += 1
    return BYTE_UNITS[power], 1024**power


def unit(name: str) -> tuple[str, int]:
    """A unit by name, for figures that must share one whatever their size: ``unit("MiB") == ("MiB", 2**20)``."""
    return name, 1024 ** BYTE_UNITS.index(name)


def in_unit(n_bytes: float, unit: tuple[str, int]) -> str:
    name, size = unit
    return f"{n_bytes:,.0f} B" if size == 1 else f"{n_bytes / size:,.1f} {name}"


WHAT_IF_UNIT = unit("MiB")  # the KV what-if chart and its table: every GPT-2 size on one scale, side by side


def size(n_bytes: float) -> str:
    """One byte figure on its own, in the unit its size calls for: ``size(3 * 2**20) == "3.0 MiB"``."""
    return in_unit(n_bytes, byte_unit(n_bytes))


def download(done: float, total: float) -> str:
    """A download's progress in the unit its total needs: '12.3 MiB of 474.7 MiB'."""
    unit = byte_unit(total)
    return f"{in_unit(done, unit)} of {in_unit(total, unit)}"


# ---- speed-up -------------------------------------------------------------------------------------

NO_GAIN = "no gain"  # short enough for a metric; the page says why (no_gain_reason)
SMALL_GAIN = 1.5  # a measured speed-up below this is called small: the fixed cost of each call still dominates


def is_gain(ratio: float) -> bool:
    """Whether a measured speed-up is one: ≤ 1 is not a (negative) speed-up but no gain."""
    return ratio > 1.0


def threads(count: int | None) -> str:
    """The torch threads a run's decoders used, as a clause: ", with 1 torch thread" ("" when not recorded)."""
    return "" if count is None else f", with {count} torch thread{'' if count == 1 else 's'}"


def speedup(ratio: float) -> str:
    """A measured speed-up as a reader should take it (``is_gain``), short enough for a metric."""
    return f"{ratio:.1f}×" if is_gain(ratio) else NO_GAIN


def speedup_note(ratio: float, parameters: int, tokens: int) -> str | None:
    """What to say under a measured speed-up: why there is none, why it is small, or nothing (None)."""
    if not is_gain(ratio):
        return no_gain_reason(parameters, tokens)
    if ratio < SMALL_GAIN:
        return (f"Only {ratio:.1f}× here: this model is small and the text short, so the fixed cost of each call "
                "dominates the work the cache saves. Longer outputs or a bigger model show the gap.")
    return None


def no_gain_reason(parameters: int, tokens: int) -> str:
    """Why a small run shows no gain: the fixed cost of each call outweighs the arithmetic saved."""
    return (f"No measurable gain at this size: a {parameters / 1e6:.1f} M-parameter model over {tokens} tokens "
            "does so little arithmetic per step that the fixed cost of each call (Python, PyTorch dispatch, "
            "one pass per layer) dominates, and that cost is the same with or without the cache. Longer outputs "
            "or a bigger model show the gap.")


# ---- presentation styles --------------------------------------------------------------------------

EXPORT_SIZE = (1280, 720)  # px, the PNG a chart's camera button saves: one 16:9 slide
# A font every browser has: an exported PNG is drawn without the page's web fonts, and a legend laid out
# with one font and drawn with a wider one runs its entries into each other and off the edge.
CHART_FONT = "Arial, Helvetica, 'Liberation Sans', sans-serif"


@dataclass(frozen=True)
class Style:
    """Sizes and choices for one audience; charts and pages read them, nothing else hard-codes them."""

    name: str
    font: int  # px: chart text (axis titles, legends, hover labels)
    ticks: int  # px: tick labels, including the token labels of attention maps
    title: int  # px: chart titles
    title_chars: int  # characters per chart-title line before it wraps (a 390 px phone fits ~40 at 17 px)
    page_font: int  # px: the page's body text
    toolbar: bool  # show plotly's toolbar (zoom, PNG export)
    panes_side_by_side: bool  # Attention: cache and recompute panes next to each other (else stacked)
    pane_height: int  # px: height of the Attention panes figure when side by side (fits a 720 px screen)
    open_at: float  # step sliders open this far through the run (0 = the prompt pass, 1 = the last step)
    intro_open: bool  # each page's introduction shown (else folded away: the teacher says it)

    def open_step(self, steps: int) -> int:
        """The step a page opens at: past the prompt pass (step 0), where the cache has nothing to save yet."""
        if steps <= 1:
            return 0
        return min(steps - 1, max(1, round(self.open_at * (steps - 1))))

    def wrap(self, title: str) -> str:
        """A chart title broken into lines (plotly's <br>) that fit this style's width."""
        return "<br>".join(textwrap.wrap(title, self.title_chars)) or title


NORMAL = Style("normal", font=13, ticks=11, title=16, title_chars=44, page_font=16, toolbar=True,
               panes_side_by_side=False, pane_height=0, open_at=0.5, intro_open=True)
PRESENTER = Style("presenter", font=18, ticks=15, title=22, title_chars=60, page_font=20, toolbar=False,
                  panes_side_by_side=True, pane_height=560, open_at=0.5, intro_open=False)


def style(presenting: bool) -> Style:
    return PRESENTER if presenting else NORMAL


def log_dtick(values) -> int:
    """Decades between labelled ticks of a log axis: one label per decade, or fewer when many decades."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return 1
    decades = math.log10(max(positive)) - math.log10(min(positive))
    return 1 if decades <= 6 else 2 if decades <= 12 else 3
