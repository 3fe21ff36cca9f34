"""What one prompt of a comparison is: a label, its text, how it was made and its rewording tier.

Rewording produces variants, generation renders them, analysis and experiments group by them, so
the vocabulary lives here, below all of them. The *tier* is the thesis's "batch" of rewordings
(Table 4.1: batch 1 swaps a few words, batch 2 rewords most of it); recap calls it a tier because
"batch" also means the clips of one denoising call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# How a variant was made.
METHODS = ("baseline", "manual", "synonym", "llm", "multi-turn", "token")
# How a rewording is asked for ("auto": the LLM when an endpoint is set, else synonyms).
REWORDING_METHODS = ("auto", "llm", "synonym", "multi-turn")
# How far a rewording goes; "custom" follows the user's instruction (LLM only).
DISTANCES = ("light", "strong", "custom")
SYNONYM_DISTANCES = ("light", "strong")

TIER_BASELINE, TIER_LIGHT, TIER_STRONG, TIER_CUSTOM, TIER_MANUAL, TIER_TOKEN = range(6)
TIER_OF_DISTANCE = {"light": TIER_LIGHT, "strong": TIER_STRONG, "custom": TIER_CUSTOM}
TIER_NAMES = {
    TIER_BASELINE: "baseline", TIER_LIGHT: "light rewording", TIER_STRONG: "strong rewording",
    TIER_CUSTOM: "custom rewording", TIER_MANUAL: "written by hand", TIER_TOKEN: "learned token",
}
TIER_HELP = "tier: " + " · ".join(f"{k} {name}" for k, name in TIER_NAMES.items()) + " (tiers 1 and 2 are the thesis's batches)"
# Experiments and hand-made tables may number further tiers of their own.
MAX_TIER = 99


@dataclass
class Variant:
    """One prompt of the comparison.

    Attributes:
        label: Unique, file-name safe name ("baseline", "reword-1a", "ti").
        prompt: The text (may contain learned-token placeholders).
        method: How it was made: one of :data:`METHODS`.
        tier: Rewording tier, :data:`TIER_NAMES` (0 baseline, 1 light, 2 strong rewording, ...).
    """

    label: str
    prompt: str
    method: str = "manual"
    tier: int = TIER_BASELINE


def tier_of(record: Mapping[str, Any]) -> int:
    """The tier of a variant record (a manifest's or a unit's dict); records written before the
    rename call it "batch"."""
    return int(record.get("tier", record.get("batch", TIER_BASELINE)))
