"""Summary tables with intervals over the independent unit: one row type for runs and experiments.

A table row (:class:`SummaryRow`) is a metric summarised over a group of measured values: the
thesis's columns (mean, std, variance) plus an interval of the mean, the number of independent
units it is over and what they are (DESIGN.md, "Statistics"):

- one variant of a run: its seeds (Student t);
- generation variance of one variant: its clips (jackknife over the k clips of k(k-1)/2 seed pairs);
- pooled groups: clusters (cluster-robust t): the variants of a run's one prompt, the prompts of
  an experiment;
- the wording effect: a ratio of mean distances with a (cluster) delta-method t interval.

Below MIN_N units no interval is given and the row says "n too small".
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recap.metrics.similarity import METRIC_NAMES, PairRecord
from recap.metrics.uncertainty import (
    cluster_interval,
    cluster_ratio_interval,
    paired_ratio_interval,
    pairwise_interval,
    t_interval,
)

TOO_SMALL = "n too small"
"""What a table prints instead of an interval below MIN_N units."""


@dataclass(frozen=True)
class Summary:
    """The thesis tables' columns (mean, std, variance) plus an interval over the independent unit.

    ``std`` and ``variance`` are population statistics of the values (ddof=0, numpy's default),
    so ``variance == std**2`` as in the thesis tables. ``ci_low``/``ci_high`` bound the mean
    (see :mod:`recap.metrics.uncertainty`); both are None below ``MIN_N`` units ("n too small").

    Attributes:
        values: How many values were averaged (seeds, clips, seed pairs).
        n: How many independent units the interval is over (seeds, clips, variants, prompts).
        unit: What those units are; ``method``: how the interval was made.
    """

    mean: float
    std: float
    variance: float
    values: int
    n: int
    unit: str
    method: str
    ci_low: float | None
    ci_high: float | None
    confidence: float = 0.95


def summarize(values: Iterable[float], confidence: float = 0.95, *, unit: str = "value",
              clusters: Sequence[Hashable] | None = None) -> Summary:
    """Mean, std, variance and an interval of the mean over the independent unit.

    Args:
        values: The observations (e.g. one cosine per seed of a variant).
        confidence: Interval coverage in (0, 1).
        unit: What one independent unit is (named in the table row).
        clusters: The unit each value belongs to, when several values share one (the variants and
            seeds of one prompt); None when every value is its own unit.

    Returns:
        A Student-t interval when every value is its own unit, else a cluster-robust t interval
        over the clusters; none below :data:`~recap.metrics.uncertainty.MIN_N` units.

    Raises:
        ValueError: for no values, non-finite values or a bad confidence.
    """
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("cannot summarise zero values")
    if clusters is None or len(set(clusters)) == x.size:
        iv = t_interval(x, unit=unit, confidence=confidence)
    else:
        iv = cluster_interval(x, clusters, unit=unit, confidence=confidence)
    var = float(x.var())
    return Summary(float(x.mean()), math.sqrt(var), var, int(x.size), iv.n, iv.unit, iv.method, iv.low, iv.high,
                   confidence)


def summarize_pairs(matrix: np.ndarray, confidence: float = 0.95, unit: str = "clip") -> Summary:
    """Summary of the k(k-1)/2 off-diagonal pairs of a symmetric k x k matrix (seed pairs of k clips).

    The pairs share clips, so the interval is the jackknife over the k clips (n = k, not the pairs).
    """
    m = np.asarray(matrix, dtype=np.float64)
    pairs = m[np.triu_indices(m.shape[0], 1)]
    iv = pairwise_interval(m, unit=unit, confidence=confidence)
    var = float(pairs.var())
    return Summary(float(pairs.mean()), math.sqrt(var), var, int(pairs.size), iv.n, iv.unit, iv.method, iv.low,
                   iv.high, confidence)


@dataclass(frozen=True)
class SummaryRow:
    """One line of a table (a run's or an experiment's): a metric summarised over a group of values.

    Attributes:
        table: vs_baseline, seed_variance, text, reconstruction, wording_effect, clap, ... (runs);
            by_tier, by_category, by_complexity, seed_variance, ... (experiments).
        group_kind: variant, tier or all (a run); all, category or complexity (an experiment);
            comparison (the reconstruction table).
        group: The group's name.
        metric: What is summarised (cosine, l2, latent_mse, distance_ratio, ...).
        mean, std, variance: Of the values (population std/variance, as the thesis tables);
            ``mean`` is the ratio itself and std/variance are None in the wording_effect table.
        n: Independent units the interval is over; ``unit`` names them, ``method`` the interval.
        ci_low, ci_high: The interval of the mean; None below MIN_N units ("n too small").
        values: How many values were averaged.
        set: An experiment's rewording tier ("synonym, tier 1"); "" in a run.
        latent: "clip latent" (encode(saved wav)) or "sampler latent" for latent measures; "" otherwise.
    """

    table: str
    group_kind: str
    group: str
    metric: str
    mean: float
    std: float | None
    variance: float | None
    n: int
    ci_low: float | None
    ci_high: float | None
    unit: str
    method: str
    values: int
    set: str = ""
    latent: str = ""


def make_row(table: str, group_kind: str, group: str, metric: str, s: Summary, *, set: str = "",
             latent: str = "") -> SummaryRow:
    """A table row from a :class:`Summary`."""
    return SummaryRow(table, group_kind, group, metric, s.mean, s.std, s.variance, s.n, s.ci_low, s.ci_high, s.unit,
                      s.method, s.values, set, latent)


@dataclass(frozen=True)
class Group:
    """The items of one table row group and the independent unit its interval is over.

    Attributes:
        kind, name: The row's group_kind and group.
        items: Records (dicts) of one measured value each.
        unit_field: The record field naming the item's independent unit (seed, variant, prompt_id).
        unit: The unit's name in the table.
        pairwise: Items are seed pairs of one variant: the interval is the jackknife over its clips.
    """

    kind: str
    name: str
    items: list[Mapping[str, Any]]
    unit_field: str
    unit: str
    pairwise: bool = False


def group_items(
    items: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    tiers: Mapping[str, int],
    label_field: str,
    with_all: bool = False,
    seed_field: str = "seed",
    pairwise: bool = False,
) -> list[Group]:
    """Groups a run's measurement records per variant, then per rewording tier (the thesis's batches).

    A variant's values differ by seed, so its interval is over seeds (or, for seed pairs, the
    jackknife over its clips). A tier or "all" pools variants of the run's one prompt; seeds of
    one variant share its wording, so those intervals are cluster-robust over variants.

    Args:
        items: records (dicts) holding a variant label under ``label_field``.
        labels: variants to report, in display order.
        tiers: rewording tier of each variant (:data:`recap.variants.TIER_NAMES`).
        label_field: key of the variant label in each record.
        with_all: add one group with every item.
        seed_field: key of the seed (the unit of a variant's own row).
        pairwise: the items are seed pairs (``seed_a``/``seed_b``) of one variant.

    Returns:
        Non-empty groups: each variant, then "tier k" for each tier, then "all".
    """
    per_variant = ("seed_a", "clip") if pairwise else (seed_field, "seed")
    groups = [Group("variant", lb, [x for x in items if x[label_field] == lb], *per_variant, pairwise=pairwise)
              for lb in labels]
    for t in sorted({tiers[lb] for lb in labels}):
        groups.append(Group("tier", f"tier {t}", [x for x in items if x[label_field] in labels
                                                   and tiers[x[label_field]] == t], label_field, "variant"))
    if with_all:
        groups.append(Group("all", "all", list(items), label_field, "variant"))
    return [g for g in groups if g.items]


def _pair_matrix(items: Sequence[Mapping[str, Any]], metric: str) -> np.ndarray | None:
    """The seeds x seeds matrix of one variant's seed pairs; None when a pair is missing or None."""
    seeds = sorted({x["seed_a"] for x in items} | {x["seed_b"] for x in items})
    index = {s: i for i, s in enumerate(seeds)}
    m = np.full((len(seeds), len(seeds)), np.nan)
    np.fill_diagonal(m, 0.0)
    for x in items:
        if x.get(metric) is None:
            return None
        m[index[x["seed_a"]], index[x["seed_b"]]] = m[index[x["seed_b"]], index[x["seed_a"]]] = float(x[metric])
    return None if np.isnan(m).any() else m


def summary_rows(
    table: str,
    groups: Sequence[Group],
    names: Sequence[str],
    confidence: float = 0.95,
    latent: str = "",
    latent_metrics: Sequence[str] = METRIC_NAMES,
) -> list[SummaryRow]:
    """Summarises each metric in ``names`` over each group (None values are left out).

    Args:
        latent: The latent the latent measures use ("clip latent"), written on their rows.
        latent_metrics: Which of ``names`` are latent measures.

    Returns:
        Rows ordered by metric, then group; groups without values for a metric are skipped.
    """
    rows = []
    for metric in names:
        for g in groups:
            kept = [x for x in g.items if x.get(metric) is not None]
            if not kept:
                continue
            matrix = _pair_matrix(kept, metric) if g.pairwise else None
            if matrix is not None and matrix.shape[0] >= 2:
                s = summarize_pairs(matrix, confidence, g.unit)
            else:
                s = summarize([float(x[metric]) for x in kept], confidence, unit=g.unit,
                              clusters=[x[g.unit_field] for x in kept])
            rows.append(make_row(table, g.kind, g.name, metric, s, latent=latent if metric in latent_metrics else ""))
    return rows


def distance_ratio_items(pairs: Sequence[PairRecord], seed_pairs_of_baseline: Sequence[PairRecord]) -> list[dict[str, Any]]:
    """Per variant clip: its distance to the baseline and the baseline's distance to a new seed.

    Distance is 1 - cosine. The numerator is the rewording's distance to the baseline clip of the
    same seed; the denominator is the mean distance between that baseline clip and the baseline
    clips of the other seeds (generation variance at that seed). Their ratio of means answers
    "how much further than a new seed does this rewording move the clip" (> 1: further).

    Args:
        pairs: Baseline vs variant, same seed (:func:`baseline_pairs`).
        seed_pairs_of_baseline: The baseline's own seed pairs (:func:`seed_pairs`).

    Returns:
        One dict per pair whose seed has another baseline seed: variant, seed, wording, seed_change.
    """
    others: dict[int, list[float]] = {}
    for p in seed_pairs_of_baseline:
        for s in (p.seed_a, p.seed_b):
            others.setdefault(s, []).append(1.0 - p.cosine)
    return [{"variant": p.variant_b, "seed": p.seed_b, "wording": 1.0 - p.cosine,
             "seed_change": float(np.mean(others[p.seed_b]))} for p in pairs if p.seed_b in others]


def ratio_row(table: str, group_kind: str, group: str, items: Sequence[Mapping[str, Any]], unit_field: str,
              unit: str, confidence: float = 0.95, *, set: str = "", latent: str = "") -> SummaryRow | None:
    """A wording_effect row: mean(wording) / mean(seed_change) with a (cluster) delta-t interval.

    Seeds of one variant are paired units (:func:`~recap.metrics.paired_ratio_interval`);
    pooled items are clustered by ``unit_field`` (variant or prompt). None when the seed change
    is zero on average (identical clips: no generation variance to compare with).
    """
    a = [float(x["wording"]) for x in items]
    b = [float(x["seed_change"]) for x in items]
    if not a or float(np.mean(b)) <= 0:
        return None
    clusters = [x[unit_field] for x in items]
    if len(dict.fromkeys(clusters)) == len(a):
        iv = paired_ratio_interval(a, b, unit=unit, confidence=confidence)
    else:
        iv = cluster_ratio_interval(a, b, clusters, unit=unit, confidence=confidence)
    return SummaryRow(table, group_kind, group, "distance_ratio", iv.estimate, None, None, iv.n, iv.low, iv.high,
                      iv.unit, iv.method, len(a), set, latent)



ROW_COLUMNS = ("table", "group_kind", "group", "set", "metric", "latent", "mean", "std", "variance", "values", "n",
               "unit", "method", "ci_low", "ci_high")
"""CSV columns of a table row: empty ci cells below MIN_N units, with n and unit saying why."""


def interval_text(row: SummaryRow, fmt: Any) -> str:
    """``[low, high]`` with ``fmt`` for each bound, or "n too small" below MIN_N units."""
    if row.ci_low is None or row.ci_high is None:
        return TOO_SMALL
    return f"[{fmt(row.ci_low)}, {fmt(row.ci_high)}]"


def unit_text(row: SummaryRow) -> str:
    """What the interval is over, as a table cell: ``4 seeds, t``."""
    return f"{row.n} {row.unit}{'' if row.n == 1 else 's'}, {row.method}"
