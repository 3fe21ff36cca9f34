"""ABX studies: is X clip A or clip B? Building the trials, each rater's X, results.

One trial per seed of each pair: A and B are the pair's two clips (sides shown in an order drawn
per rater, as in A/B studies), X is one of them, drawn per rater and trial and stored with the
answer. An answer is right when the side the rater names is the side X was.

Results per pair: the share of right answers with a Wilson interval on the raters' effective
sample size (:func:`recap.metrics.uncertainty.clustered_share`: raters are the unit), and a
binomial test against chance (0.5) pooled per rater: each rater's answers to the pair give one
binomial test (k right of n, one-sided), and the pair's test counts the raters who were right
more often than not against those who were wrong more often (a sign test over raters; ties
left out), so a rater who answered many trials weighs as one.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from scipy import stats as sstats

from recap.limits import LIMITS
from recap.metrics.uncertainty import clustered_share
from recap.study.items import StudyConfig, StudyError, StudyItem, _Copies, _pair_combos, read_run

QUESTION = "Is X the same clip as A or as B?"


def build(config: StudyConfig, run_dirs: Sequence[Path], folder: Path) -> tuple[list[StudyItem], list[dict]]:
    """Trials and listening-copy records of an ABX study (one trial per pair and common seed)."""
    runs = [read_run(d) for d in run_dirs]
    if not runs:
        raise StudyError("a study needs at least one run")
    planned = []
    for pair in config.pairs:
        left, right, combos = _pair_combos(pair, runs)
        before = len(planned)
        for (ra, la), (rb, lb) in combos:
            seeds = sorted({s for (v, s) in ra.clips if v == la} & {s for (v, s) in rb.clips if v == lb})
            planned += [(left, right, ra, la, rb, lb, s) for s in seeds]
        if len(planned) == before:
            raise StudyError(f"pair {pair!r}: the two sides have no seed in common")
        if len(planned) > LIMITS.study_items:
            raise StudyError(f"this study would have more than {LIMITS.study_items} trials; choose fewer pairs or runs")
    copies = _Copies(folder, config.target_lufs)
    items = []
    for left, right, ra, la, rb, lb, seed in planned:
        items.append(StudyItem(
            len(items), "test", QUESTION, f"{left}:{right}", left, f"{ra.run_id}/{la}@seed{seed}",
            copies.write(str(ra.clips[la, seed])), config.prompt or ra.baseline_prompt or ra.prompts[la],
            right, f"{rb.run_id}/{lb}@seed{seed}", copies.write(str(rb.clips[lb, seed]))))
    return items, copies.log


def x_side(seed: int, slot: int) -> str:
    """Which real side ("a" or "b") X is for a rater (``seed``) at ``slot``."""
    return "b" if random.Random(f"{seed}:abx:{slot}").random() < 0.5 else "a"


@dataclass(frozen=True)
class AbxRater:
    rater: str
    correct: int
    n: int
    p_value: float  # one-sided binomial test of k right of n against 0.5


@dataclass(frozen=True)
class AbxRow:
    """One pair: share right with its 95% interval over raters (nan below 3), and the tests."""

    condition: str
    n: int
    correct: int
    raters: int
    share: float
    low: float
    high: float
    p_raters: float | None  # sign test over raters (right more often vs wrong more often), one-sided
    per_rater: list[AbxRater]


def summarize(answers: Sequence[dict], condition_of: dict[int, str], excluded: set[str]) -> list[AbxRow]:
    """Per-pair rows over first showings of raters not in ``excluded``."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for a in answers:
        if a.get("repeat", 0) == 0 and a["rater"] not in excluded and a.get("correct") is not None:
            groups[condition_of[a["item_id"]]].append(a)
    rows = []
    for condition, rows_ in groups.items():
        hits = [bool(a["correct"]) for a in rows_]
        iv = clustered_share(hits, [a["rater"] for a in rows_], unit="rater")
        per: dict[str, list[bool]] = defaultdict(list)
        for a, hit in zip(rows_, hits):
            per[a["rater"]].append(hit)
        raters = [AbxRater(r, sum(h), len(h), float(sstats.binomtest(sum(h), len(h), 0.5, alternative="greater").pvalue))
                  for r, h in per.items()]
        above = sum(r.correct * 2 > r.n for r in raters)
        below = sum(r.correct * 2 < r.n for r in raters)
        p = float(sstats.binomtest(above, above + below, 0.5, alternative="greater").pvalue) if above + below else None
        low, high = (math.nan, math.nan) if iv.low is None else (100 * iv.low, 100 * iv.high)
        rows.append(AbxRow(condition, len(hits), sum(hits), iv.n, 100 * iv.estimate, low, high, p, raters))
    return rows
