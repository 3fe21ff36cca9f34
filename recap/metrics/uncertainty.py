"""Uncertainty on the independent unit: intervals and correlations that do not pseudo-replicate.

Every interval here resamples (or averages over) the unit that is independent in the design:

- one variant's clips differ by seed, so its mean has a Student-t interval over seeds
  (:func:`t_interval`; it covers at n = 3-8 where a percentile bootstrap does not);
- a pooled table (a batch, a category, a complexity level) holds several prompts, each with
  several variants and seeds that share the prompt, and a listening study's answers share their
  rater: the interval is cluster-robust over prompts or raters (:func:`cluster_interval`,
  :func:`clustered_share` for answer shares);
- generation variance is a mean over the k(k-1)/2 pairs of k seeds, which share clips: the
  interval is a leave-one-clip-out jackknife (:func:`pairwise_interval`), so its n is k, not
  the number of pairs;
- a correlation between a text measure and a latent measure uses one point per variant (the
  unit that carries the text measure) and a cluster bootstrap over prompts
  (:func:`clustered_correlation`).

Below :data:`MIN_N` independent units no interval is given, and the result says so.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sstats

MIN_N = 3
"""Fewest independent units an interval is given for: with two, a t interval spans most of the scale."""

Correlation = Literal["pearson", "spearman"]
_R_MAX = 1.0 - 1e-9  # keeps Fisher z finite for |r| = 1


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval and the unit the interval is over.

    Attributes:
        estimate: The point estimate (a mean, or a mean of unit means).
        low, high: Bounds of the interval; None below :data:`MIN_N` units.
        n: Number of independent units (seeds, clips, prompts, raters).
        unit: What those units are.
        method: How the interval was made.
        confidence: Nominal coverage.
    """

    estimate: float
    low: float | None
    high: float | None
    n: int
    unit: str
    method: str
    confidence: float = 0.95

    @property
    def note(self) -> str:
        """Why there is no interval, or "" when there is one."""
        return "" if self.low is not None else f"no interval: {self.n} {self.unit}(s), fewer than {MIN_N}"


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{what}: no values")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: non-finite values {x[~np.isfinite(x)][:3].tolist()}")
    return x


def _check_confidence(confidence: float) -> None:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")


def _t_half(sd: float, n: int, confidence: float) -> float:
    return float(sstats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def t_interval(values: Sequence[float], *, unit: str, confidence: float = 0.95) -> Interval:
    """Mean of independent values with a Student-t interval (none below :data:`MIN_N` values)."""
    _check_confidence(confidence)
    x = _finite(values, "t_interval")
    mean = float(x.mean())
    if x.size < MIN_N:
        return Interval(mean, None, None, int(x.size), unit, "t", confidence)
    half = _t_half(float(x.std(ddof=1)), x.size, confidence)
    return Interval(mean, mean - half, mean + half, int(x.size), unit, "t", confidence)


def cluster_interval(values: Sequence[float], clusters: Sequence[Hashable], *, unit: str,
                     confidence: float = 0.95) -> Interval:
    """Mean of all values with a cluster-robust t interval over clusters (prompts, raters).

    Values that share a cluster are not independent (variants and seeds of one prompt share its
    wording effect; one rater's answers share the rater), so the standard error is built from
    the clusters' sums (the ratio estimator's variance, scaled by k/(k-1)) and the t quantile has
    k - 1 degrees of freedom. With one value per cluster this is :func:`t_interval`.
    """
    _check_confidence(confidence)
    x = _finite(values, "cluster_interval")
    if x.size != len(clusters):
        raise ValueError(f"{x.size} values but {len(clusters)} cluster labels")
    labels: dict[Hashable, int] = {}
    member = np.asarray([labels.setdefault(c, len(labels)) for c in clusters])
    k = len(labels)
    mean = float(x.mean())
    if k < MIN_N:
        return Interval(mean, None, None, k, unit, "cluster-robust t", confidence)
    resid = np.bincount(member, weights=x - mean, minlength=k)
    se = math.sqrt(k / (k - 1) * float((resid**2).sum())) / x.size
    half = float(sstats.t.ppf(0.5 + confidence / 2, k - 1)) * se
    return Interval(mean, mean - half, mean + half, k, unit, "cluster-robust t", confidence)


def wilson_interval(k: int, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials, as proportions (nan if n == 0).

    ``n`` may be an effective sample size (:func:`clustered_share`), so it need not be whole.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return math.nan, math.nan
    z = float(sstats.norm.ppf(0.5 + confidence / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def clustered_share(hits: Sequence[bool], clusters: Sequence[Hashable], *, unit: str,
                    confidence: float = 0.95) -> Interval:
    """Share of ``hits`` with a Wilson interval on the effective sample size given the clusters.

    A rater who answers several items of one condition is one source of variation, not several:
    the design effect (cluster-robust variance of the share over the binomial one, at least 1)
    shrinks n to n / deff before the Wilson interval (Kish). Independent answers keep plain
    Wilson; fewer than :data:`MIN_N` clusters give no interval.
    """
    h = np.asarray(hits, dtype=np.float64)
    if h.size == 0:
        raise ValueError("clustered_share: no answers")
    if h.size != len(clusters):
        raise ValueError(f"{h.size} answers but {len(clusters)} cluster labels")
    labels: dict[Hashable, int] = {}
    member = np.asarray([labels.setdefault(c, len(labels)) for c in clusters])
    k = len(labels)
    p = float(h.mean())
    if k < MIN_N:
        return Interval(p, None, None, k, unit, "Wilson, design effect", confidence)
    deff = 1.0
    if 0.0 < p < 1.0:
        resid = np.bincount(member, weights=h - p, minlength=k)
        var_cluster = k / (k - 1) * float((resid**2).sum()) / h.size**2
        # against the same estimator with every answer its own cluster, so independent answers give 1
        deff = max(1.0, var_cluster / (p * (1 - p) / (h.size - 1)))
    n_eff = h.size / deff
    low, high = wilson_interval(p * n_eff, n_eff, confidence)
    return Interval(p, low, high, k, unit, "Wilson, design effect", confidence)


def pairwise_interval(matrix: np.ndarray, *, unit: str = "clip", confidence: float = 0.95) -> Interval:
    """Mean of the off-diagonal pairs of a symmetric k × k matrix, with a jackknife interval over its k items.

    The k(k-1)/2 pairs share items, so they are not independent; leaving one item out at a time
    (the jackknife of a U-statistic) gives a standard error with k - 1 degrees of freedom.
    """
    _check_confidence(confidence)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"pairwise_interval needs a square matrix; got shape {m.shape}")
    k = m.shape[0]
    if k < 2:
        raise ValueError("pairwise_interval needs at least 2 items")
    iu = np.triu_indices(k, 1)
    if not np.all(np.isfinite(m[iu])):
        raise ValueError("pairwise_interval: non-finite pair values")
    est = float(m[iu].mean())
    if k < MIN_N:
        return Interval(est, None, None, k, unit, "jackknife-t", confidence)
    leave_out = np.empty(k)
    for i in range(k):
        keep = np.delete(np.arange(k), i)
        sub = m[np.ix_(keep, keep)]
        leave_out[i] = sub[np.triu_indices(k - 1, 1)].mean()
    se = math.sqrt((k - 1) / k * float(((leave_out - leave_out.mean()) ** 2).sum()))
    half = float(sstats.t.ppf(0.5 + confidence / 2, k - 1)) * se
    return Interval(est, est - half, est + half, k, unit, "jackknife-t", confidence)


@dataclass(frozen=True)
class ClusteredCorrelation:
    """A correlation on one point per unit, with a cluster-bootstrap interval.

    Attributes:
        method: "pearson" or "spearman".
        r: The correlation over all points (nan when one side is constant).
        low, high: Interval of r from the cluster bootstrap (Fisher z, t with clusters - 1 degrees of
            freedom); None below :data:`MIN_N` clusters.
        p_value: Two-sided p-value for r = 0 from the same z and standard error (the test that
            matches the interval); None without an interval.
        points: Number of points (e.g. variants).
        clusters: Number of clusters (e.g. prompts) the interval resamples.
    """

    method: str
    r: float
    low: float | None
    high: float | None
    p_value: float | None
    points: int
    clusters: int
    confidence: float = 0.95


def _weighted_ranks(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of ``v`` in each resample, where ``w[b, i]`` copies of point i were drawn (ties share a rank)."""
    uniq, inv = np.unique(v, return_inverse=True)
    onehot = np.zeros((v.size, uniq.size))
    onehot[np.arange(v.size), inv] = 1.0
    wu = w @ onehot  # copies of each distinct value per resample
    below = np.cumsum(wu, axis=1) - wu
    return (below + (wu + 1.0) / 2.0)[:, inv]


def _weighted_corr(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of (x, y) in each row of weights ``w`` (a resample as copy counts); nan where degenerate."""
    sw = w.sum(axis=1, keepdims=True)
    dx = x - (w * x).sum(axis=1, keepdims=True) / sw
    dy = y - (w * y).sum(axis=1, keepdims=True) / sw
    cov = (w * dx * dy).sum(axis=1)
    var = (w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var)
    return np.where(var > 1e-24 * np.maximum(1.0, cov * cov), r, np.nan)


def _corr_resampled(x: np.ndarray, y: np.ndarray, w: np.ndarray, method: Correlation) -> np.ndarray:
    if method == "spearman":
        return _weighted_corr(_weighted_ranks(x, w), _weighted_ranks(y, w), w)
    return _weighted_corr(np.broadcast_to(x, w.shape), np.broadcast_to(y, w.shape), w)


def clustered_correlation(x: Sequence[float], y: Sequence[float], clusters: Sequence[Hashable], *,
                          method: Correlation = "spearman", confidence: float = 0.95, n_boot: int = 2000,
                          seed: int = 0) -> ClusteredCorrelation:
    """Correlation of ``x`` and ``y`` (one point per unit) with a bootstrap over ``clusters``.

    Points in one cluster (the variants of one prompt) share the prompt, so the bootstrap draws
    whole clusters with replacement and recomputes r on their points. A resample is held as copy
    counts per point, so all resamples are computed at once.
    """
    _check_confidence(confidence)
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman'; got {method!r}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100; got {n_boot}")
    xa, ya = _finite(x, "clustered_correlation x"), _finite(y, "clustered_correlation y")
    if xa.size != ya.size or xa.size != len(clusters):
        raise ValueError(f"x, y and clusters differ in length: {xa.size}, {ya.size}, {len(clusters)}")
    r = float(_corr_resampled(xa, ya, np.ones((1, xa.size)), method)[0])
    labels: dict[Hashable, int] = {}
    member = np.asarray([labels.setdefault(c, len(labels)) for c in clusters])
    k = len(labels)
    if k < MIN_N or math.isnan(r):
        return ClusteredCorrelation(method, r, None, None, None, int(xa.size), k, confidence)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, k, size=(n_boot, k))
    counts = np.zeros((n_boot, k))
    np.add.at(counts, (np.arange(n_boot)[:, None], picks), 1.0)
    d = _corr_resampled(xa, ya, counts[:, member], method)
    d = d[~np.isnan(d)]
    if d.size < n_boot // 2:  # most resamples were degenerate: the data cannot carry an interval
        return ClusteredCorrelation(method, r, None, None, None, int(xa.size), k, confidence)
    # Fisher z of the resampled r, its spread widened by k/(k-1) (a bootstrap over k clusters
    # underestimates the variance by that factor), and t quantiles with k - 1 degrees of freedom:
    # on null data with 5-20 prompts this keeps false positives at 2.5-5.5 % where the percentile
    # interval gives 6-10 % (tests/test_uncertainty.py).
    z = np.arctanh(np.clip(d, -_R_MAX, _R_MAX))
    se = float(z.std(ddof=1)) * math.sqrt(k / (k - 1))
    z0 = math.atanh(min(max(r, -_R_MAX), _R_MAX))
    if se == 0.0:
        return ClusteredCorrelation(method, r, None, None, None, int(xa.size), k, confidence)
    tq = float(sstats.t.ppf(0.5 + confidence / 2, k - 1))
    lo, hi = math.tanh(z0 - tq * se), math.tanh(z0 + tq * se)
    p = float(2.0 * sstats.t.sf(abs(z0) / se, k - 1))
    return ClusteredCorrelation(method, r, lo, hi, p, int(xa.size), k, confidence)


def paired_ratio_interval(numerators: Sequence[float], denominators: Sequence[float], *, unit: str,
                          confidence: float = 0.95) -> Interval:
    """Ratio of two means over the same units, with a delta-method (Fieller-free) t interval.

    Used for "how much further than a new seed does this rewording move the clip": per unit, the
    rewording's distance to the baseline (numerator) and the baseline's distance to another seed
    (denominator). A ratio above 1 means the wording moves the clip more than a new seed does.
    """
    _check_confidence(confidence)
    a, b = _finite(numerators, "ratio numerators"), _finite(denominators, "ratio denominators")
    if a.size != b.size:
        raise ValueError(f"{a.size} numerators but {b.size} denominators")
    mb = float(b.mean())
    if mb <= 0:
        raise ValueError("the denominators' mean must be positive (a distance between different seeds)")
    est = float(a.mean()) / mb
    n = int(a.size)
    if n < MIN_N:
        return Interval(est, None, None, n, unit, "delta-t", confidence)
    # Linearise the ratio per unit: (a_i - est * b_i) / mean(b) has mean 0 and the ratio's variance.
    lin = (a - est * b) / mb
    half = _t_half(float(lin.std(ddof=1)), n, confidence)
    return Interval(est, est - half, est + half, n, unit, "delta-t", confidence)


def cluster_ratio_interval(numerators: Sequence[float], denominators: Sequence[float],
                           clusters: Sequence[Hashable], *, unit: str, confidence: float = 0.95) -> Interval:
    """Ratio of two means over paired values, with a cluster-robust delta-method t interval.

    :func:`paired_ratio_interval` when the pairs are not independent: each pair is linearised as
    there, ``(a_i - est * b_i) / mean(b)``, and the linearised values are summed per cluster (the
    prompts of an experiment, the variants of a run) before the t interval with clusters - 1
    degrees of freedom. With one pair per cluster this is :func:`paired_ratio_interval`.
    """
    _check_confidence(confidence)
    a, b = _finite(numerators, "ratio numerators"), _finite(denominators, "ratio denominators")
    if a.size != b.size or a.size != len(clusters):
        raise ValueError(f"numerators, denominators and clusters differ in length: {a.size}, {b.size}, {len(clusters)}")
    mb = float(b.mean())
    if mb <= 0:
        raise ValueError("the denominators' mean must be positive (a distance between different seeds)")
    est = float(a.mean()) / mb
    labels: dict[Hashable, int] = {}
    member = np.asarray([labels.setdefault(c, len(labels)) for c in clusters])
    k = len(labels)
    if k < MIN_N:
        return Interval(est, None, None, k, unit, "cluster delta-t", confidence)
    lin = np.bincount(member, weights=(a - est * b) / mb, minlength=k)
    se = math.sqrt(k / (k - 1) * float((lin**2).sum())) / a.size
    half = float(sstats.t.ppf(0.5 + confidence / 2, k - 1)) * se
    return Interval(est, est - half, est + half, k, unit, "cluster delta-t", confidence)


def percentile_bootstrap(values: Sequence[float], *, confidence: float = 0.95, n_boot: int = 2000,
                         seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of a mean: the method the tables used before, kept as the control.

    Not used by any table: at n = 4 seeds it covers about 81 % instead of 95 % (it ignores the
    t quantile and shrinks the spread by sqrt((n-1)/n)). The simulations in
    ``tests/test_uncertainty.py`` and ``tests/test_simulation.py`` compare the methods above with it.
    """
    _check_confidence(confidence)
    x = _finite(values, "percentile_bootstrap")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
