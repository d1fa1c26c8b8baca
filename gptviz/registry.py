"""Every model gptviz knows by name, said once: Hub ids, GPT-2 family shapes, what the app offers.

models.load, the sidebar, the hosting policy's default allow-list, the what-if calculator and
the benchmark all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gptviz.cost import Shape

BUNDLED = "bundled"  # the small offline GPT-2 shipped in assets/
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "bundled-gpt2"
BUNDLED_NAME = "bundled Shakespeare GPT-2"  # how the app names it once loaded


@dataclass(frozen=True)
class HubModel:
    name: str  # the short id a user types ("gpt2")
    repo_id: str  # its Hugging Face Hub repository
    shape: Shape  # architecture, for the what-if calculator and the benchmark
    in_menu: bool  # offered in the app's model menu (the large ones take minutes to download)
    hosted: bool  # on a hosted server's default allow-list


def _gpt2(layers: int, heads: int, d_model: int) -> Shape:
    return Shape(layers=layers, heads=heads, d_model=d_model, vocab=50257, context=1024)


HUB = {m.name: m for m in (
    HubModel("gpt2", "openai-community/gpt2", _gpt2(12, 12, 768), in_menu=True, hosted=True),
    HubModel("distilgpt2", "distilbert/distilgpt2", _gpt2(6, 12, 768), in_menu=True, hosted=True),
    HubModel("gpt2-medium", "openai-community/gpt2-medium", _gpt2(24, 16, 1024), in_menu=True, hosted=False),
    HubModel("gpt2-large", "openai-community/gpt2-large", _gpt2(36, 20, 1280), in_menu=False, hosted=False),
    HubModel("gpt2-xl", "openai-community/gpt2-xl", _gpt2(48, 25, 1600), in_menu=False, hosted=False),
)}
HUB_MODELS = tuple(HUB)  # short ids, smallest first within each family
MENU = (BUNDLED, *(m.name for m in HUB.values() if m.in_menu))  # the sidebar's choices, before the policy
HOSTED_DEFAULT = (BUNDLED, *(m.name for m in HUB.values() if m.hosted))  # GPTVIZ_ALLOWED_MODELS default
SHAPES = {m.name: m.shape for m in HUB.values()}  # the public GPT-2 family, for "what if" questions
GPT2_SMALL = HUB["gpt2"].shape  # the benchmark's default shape


def canonical_hub_id(source: str) -> str | None:
    """'gpt2' or 'openai-community/gpt2' -> the Hub repo id; None if not a known GPT-2 id.

    >>> canonical_hub_id("distilgpt2"), canonical_hub_id("openai-community/gpt2"), canonical_hub_id("evil/gpt2")
    ('distilbert/distilgpt2', 'openai-community/gpt2', None)
    """
    for model in HUB.values():
        if source in (model.name, model.repo_id):
            return model.repo_id
    return None
