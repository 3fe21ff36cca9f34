"""MUSHRA studies (ITU-R BS.1534-3): building the trials, each rater's order, post-screening, results.

One trial per seed of a run: the rater hears the labelled reference and, unlabelled and in an
order of their own, every condition, the hidden reference (the reference again) and the low-pass
anchors (:mod:`recap.study.anchors`), and rates each 0-100. Stimuli are stored per trial
(:class:`Stimulus`); an answer stores its scores by real condition and the order it was shown in.

Post-screening (BS.1534-3, 4.1.2): a rater who rates the hidden reference below 90 in more than
15 % of the trials they answered is excluded. Results are given with the rule and without it,
and say how many raters each rule excluded. Means carry a cluster-robust t interval over raters
(:func:`recap.metrics.uncertainty.cluster_interval`): the rater is the independent unit.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from recap.limits import LIMITS
from recap.metrics.uncertainty import cluster_interval
from recap.study.anchors import HIDDEN_REFERENCE, lowpass, plan_anchors
from recap.study.items import StudyConfig, StudyError, StudyItem, _Copies, loudness_match, read_run

HIDDEN_REFERENCE_MIN = 90  # BS.1534-3: a hidden reference rated below this ...
MAX_SHARE_BELOW = 0.15  # ... in more than this share of a rater's trials excludes the rater
SCREEN_RULE = "hidden reference below 90 in more than 15 % of trials"
MAX_SCORE = 100


@dataclass(frozen=True)
class Stimulus:
    """One rated clip of a MUSHRA trial (``index`` is its place in the stored, unshuffled list)."""

    item_id: int
    index: int
    condition: str  # a variant label, "hidden reference" or "anchor 3.5 kHz" / "anchor 7 kHz"
    label: str  # the exact clip: "run/label@seedK" (anchors add their cutoff)
    clip: str  # the listening copy, relative to the study folder


def build(config: StudyConfig, run_dirs: Sequence[Path], folder: Path
          ) -> tuple[list[StudyItem], list[Stimulus], list[str], list[dict]]:
    """Trials, stimuli, notes (skipped anchors) and listening-copy records of a MUSHRA study.

    Raises:
        StudyError: a run without the reference or a condition, no seed common to all of them,
            or more than ``LIMITS.study_items`` trials (refused before any file is written).
    """
    runs = [read_run(d) for d in run_dirs]
    if not runs:
        raise StudyError("a study needs at least one run")
    ref, conditions = config.reference_variant, list(config.conditions)
    # 1. Plan: one trial per (run, seed) that has the reference and every condition
    planned = []
    for run in runs:
        missing = [v for v in [ref, *conditions] if v not in run.prompts]
        if missing:
            raise StudyError(f"run {run.run_id} has no variant {missing[0]!r}; have: {sorted(run.prompts)}")
        seeds = set.intersection(*({s for (v, s) in run.clips if v == label} for label in [ref, *conditions]))
        planned += [(run, seed) for seed in sorted(seeds)]
    if not planned:
        raise StudyError("the reference and the conditions have no seed in common")
    if len(planned) > LIMITS.study_items:
        raise StudyError(f"this study would have {len(planned)} trials; at most {LIMITS.study_items} are accepted")
    # 2. Write: the reference matched in loudness, the anchors filtered from that copy (same gain, as
    #    BS.1534 makes them from the reference), the conditions matched like every listening copy
    copies = _Copies(folder, config.target_lufs)
    items, stimuli, notes = [], [], []
    for run, seed in planned:
        source = str(run.clips[ref, seed])
        audio, sr = copies.read(source)
        matched, _ = loudness_match(audio, sr, config.target_lufs)
        ref_clip = copies.write(source, matched, sr, match=False)
        item_id = len(items)
        label = f"{run.run_id}/{ref}@seed{seed}"
        items.append(StudyItem(item_id, "test", "", ref, ref, label, ref_clip,
                               config.prompt or run.baseline_prompt or run.prompts[ref]))
        entries = [(c, f"{run.run_id}/{c}@seed{seed}", copies.write(str(run.clips[c, seed]))) for c in conditions]
        entries.append((HIDDEN_REFERENCE, label, ref_clip))
        plan = plan_anchors(sr)
        notes += [n for n in plan.skipped if n not in notes]
        for name, cutoff in plan.anchors:
            clip = copies.write(f"{source}#lowpass{cutoff:.0f}", lowpass(matched, sr, cutoff), sr, match=False)
            entries.append((name, f"{label} lowpass {cutoff:.0f} Hz", clip))
        stimuli += [Stimulus(item_id, k, c, lab, clip) for k, (c, lab, clip) in enumerate(entries)]
    return items, stimuli, notes, copies.log


def stimulus_order(seed: int, slot: int, n: int) -> list[int]:
    """The order a rater hears a trial's ``n`` stimuli in: drawn from their seed and the slot."""
    order = list(range(n))
    random.Random(f"{seed}:mushra:{slot}").shuffle(order)  # str seeds hash the same on every run
    return order


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MushraRow:
    """One condition's scores: mean with a 95% interval over raters (nan below 3), median, spread."""

    condition: str
    n: int
    raters: int
    mean: float
    low: float
    high: float
    median: float
    std: float
    screened: bool  # True: post-screened raters left out


@dataclass(frozen=True)
class Screening:
    """One rater's hidden-reference record."""

    rater: str
    trials: int
    below: int  # trials with the hidden reference rated below HIDDEN_REFERENCE_MIN
    excluded: bool


def screen(answers: Sequence[dict]) -> list[Screening]:
    """BS.1534's post-screening of every rater from their first showings (see the module docstring)."""
    by_rater: dict[str, list[int]] = defaultdict(list)
    for a in answers:
        if a.get("repeat", 0) == 0 and a.get("scores") and HIDDEN_REFERENCE in a["scores"]:
            by_rater[a["rater"]].append(a["scores"][HIDDEN_REFERENCE])
    out = []
    for rater, scores in by_rater.items():
        below = sum(s < HIDDEN_REFERENCE_MIN for s in scores)
        out.append(Screening(rater, len(scores), below, below > MAX_SHARE_BELOW * len(scores)))
    return out


def condition_order(stimuli: Sequence[Stimulus]) -> list[str]:
    """Conditions as the study lists them: the tested ones, the hidden reference, the anchors."""
    return list(dict.fromkeys(s.condition for s in stimuli))


def summarize(answers: Sequence[dict], order: Sequence[str], excluded: set[str], screened: bool) -> list[MushraRow]:
    """Per-condition rows over first showings of raters not in ``excluded``."""
    rows = []
    for condition in order:
        pairs = [(a["scores"][condition], a["rater"]) for a in answers
                 if a.get("repeat", 0) == 0 and a["rater"] not in excluded and condition in (a.get("scores") or {})]
        if not pairs:
            rows.append(MushraRow(condition, 0, 0, math.nan, math.nan, math.nan, math.nan, math.nan, screened))
            continue
        values = np.asarray([v for v, _ in pairs], dtype=float)
        iv = cluster_interval(values, [r for _, r in pairs], unit="rater")
        low, high = (math.nan, math.nan) if iv.low is None else (iv.low, iv.high)
        rows.append(MushraRow(condition, len(values), iv.n, iv.estimate, low, high, float(np.median(values)),
                              float(values.std(ddof=1)) if len(values) > 1 else math.nan, screened))
    return rows


def scores_by_condition(answers: Sequence[dict], order: Sequence[str], excluded: set[str]) -> dict[str, list[float]]:
    """Every first-showing score per condition (for boxplots)."""
    out: dict[str, list[float]] = {c: [] for c in order}
    for a in answers:
        if a.get("repeat", 0) == 0 and a["rater"] not in excluded:
            for condition, value in (a.get("scores") or {}).items():
                out.setdefault(condition, []).append(float(value))
    return out
