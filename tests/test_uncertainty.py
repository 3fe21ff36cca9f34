"""Intervals and correlations on the independent unit: coverage and false positives on data with a known truth.

Each check runs on simulated data with fixed seeds and compares against the naive method it
replaces, so a check that could not fail (too few simulations, a truth the method is built on)
shows up as a naive method passing too.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from recap.metrics.uncertainty import (
    MIN_N,
    cluster_interval,
    clustered_share,
    clustered_correlation,
    cluster_ratio_interval,
    paired_ratio_interval,
    pairwise_interval,
    percentile_bootstrap,
    t_interval,
    wilson_interval,
)


def _covers(low: float | None, high: float | None, truth: float) -> bool:
    assert low is not None and high is not None
    return low <= truth <= high


def test_t_interval_covers_at_four_seeds_where_the_percentile_bootstrap_does_not():
    rng = np.random.default_rng(11)
    sims = 1500
    t_hits = boot_hits = 0
    for i in range(sims):
        v = rng.normal(0.7, 0.05, size=4)
        t = t_interval(v, unit="seed")
        t_hits += _covers(t.low, t.high, 0.7)
        lo, hi = percentile_bootstrap(v, n_boot=300, seed=i)
        boot_hits += lo <= 0.7 <= hi
    assert 0.93 <= t_hits / sims <= 0.97
    assert boot_hits / sims < 0.88  # the control: the percentile bootstrap at n = 4 undercovers


def test_no_interval_below_three_units():
    r = t_interval([0.5, 0.6], unit="seed")
    assert r.low is None and r.high is None and r.n == 2
    assert "fewer than 3" in r.note
    assert t_interval([0.5, 0.6, 0.7], unit="seed").low is not None
    assert MIN_N == 3


def test_pairwise_interval_counts_clips_not_pairs():
    rng = np.random.default_rng(12)
    sims, k = 800, 6
    jack = naive = 0
    for _ in range(sims):
        x = rng.normal(size=(k, 16))
        d = ((x[:, None] - x[None]) ** 2).mean(-1) / 2  # every pair's expected distance is 1
        iv = pairwise_interval(d)
        assert iv.n == k and iv.unit == "clip"
        jack += _covers(iv.low, iv.high, 1.0)
        pairs = d[np.triu_indices(k, 1)]
        tn = t_interval(pairs, unit="pair")  # the 15 pairs as if independent
        naive += _covers(tn.low, tn.high, 1.0)
    assert 0.92 <= jack / sims <= 0.99
    assert naive / sims < 0.85


def test_cluster_interval_counts_prompts():
    rng = np.random.default_rng(13)
    sims, prompts, per = 1000, 6, 8
    hits = naive = 0
    for _ in range(sims):
        effect = rng.normal(0, 0.1, size=prompts)  # a prompt effect shared by its variants and seeds
        values = (np.repeat(effect, per) + rng.normal(0, 0.05, size=prompts * per)).tolist()
        clusters = np.repeat(np.arange(prompts), per).tolist()
        iv = cluster_interval(values, clusters, unit="prompt")
        assert iv.n == prompts
        hits += _covers(iv.low, iv.high, 0.0)
        t = t_interval(values, unit="clip")
        naive += _covers(t.low, t.high, 0.0)
    assert 0.93 <= hits / sims <= 0.97
    assert naive / sims < 0.80


def _null_experiment(rng: np.random.Generator, prompts: int, variants: int, seeds: int):
    """Text and latent measures with prompt effects and no relation between them."""
    text = np.repeat(rng.normal(size=prompts), variants) + 0.5 * rng.normal(size=prompts * variants)
    per_variant = np.repeat(rng.normal(size=prompts), variants) + 0.5 * rng.normal(size=prompts * variants)
    clips = np.repeat(per_variant, seeds) + 0.5 * rng.normal(size=prompts * variants * seeds)
    return text, clips, np.repeat(np.arange(prompts), variants)


def test_clustered_correlation_keeps_false_positives_near_five_percent():
    rng = np.random.default_rng(14)
    sims, prompts, variants, seeds = 300, 12, 4, 4
    clustered = naive = 0
    for e in range(sims):
        text, clips, cl = _null_experiment(rng, prompts, variants, seeds)
        # The pseudo-replicated test: one point per clip, every seed repeating its variant's text cosine.
        naive += stats.pearsonr(np.repeat(text, seeds), clips)[1] < 0.05
        latent = clips.reshape(-1, seeds).mean(axis=1)  # one point per variant
        r = clustered_correlation(text, latent, cl, method="pearson", n_boot=400, seed=e)
        assert r.points == prompts * variants and r.clusters == prompts
        clustered += r.p_value is not None and r.p_value < 0.05
    assert clustered / sims <= 0.09
    assert naive / sims >= 0.30


def test_clustered_correlation_finds_a_real_relation():
    rng = np.random.default_rng(15)
    found = 0
    for e in range(60):
        text = np.repeat(rng.normal(size=12), 4) + 0.5 * rng.normal(size=48)
        latent = 0.7 * text + rng.normal(size=48)
        r = clustered_correlation(text, latent, np.repeat(np.arange(12), 4), n_boot=400, seed=e)
        found += r.p_value is not None and r.p_value < 0.05 and r.low is not None and r.low > 0
    assert found / 60 >= 0.75


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_clustered_correlation_point_estimate_is_scipys(method: str):
    rng = np.random.default_rng(16)
    x, y = rng.normal(size=20), rng.normal(size=20)
    x[3] = x[7]  # a tie, ranked as scipy ranks it
    want = (stats.pearsonr if method == "pearson" else stats.spearmanr)(x, y)[0]
    got = clustered_correlation(x, y, np.repeat(np.arange(5), 4), method=method)
    assert got.r == pytest.approx(want, abs=1e-12)


def test_clustered_correlation_has_no_interval_below_three_prompts():
    r = clustered_correlation([0.1, 0.2, 0.3, 0.5], [0.2, 0.1, 0.4, 0.3], ["a", "a", "b", "b"])
    assert r.low is None and r.p_value is None and r.clusters == 2


def test_paired_ratio_interval_covers_a_known_ratio():
    rng = np.random.default_rng(17)
    hits = 0
    for _ in range(1000):
        wording = rng.gamma(4, 0.05, size=6)  # mean 0.2: the rewording's distance to the baseline
        seed_change = rng.gamma(4, 0.1, size=6)  # mean 0.4: a new seed's distance
        iv = paired_ratio_interval(wording, seed_change, unit="seed")
        hits += _covers(iv.low, iv.high, 0.5)
    assert 0.92 <= hits / 1000 <= 0.97


@pytest.mark.parametrize("bad", [[float("nan"), 1.0, 2.0], [float("inf"), 1.0, 1.0], []])
def test_non_finite_or_empty_values_are_refused(bad):
    with pytest.raises(ValueError):
        t_interval(bad, unit="seed")


def test_cluster_interval_is_t_interval_with_one_value_per_cluster():
    v = [0.2, 0.5, 0.4, 0.9]
    a, b = cluster_interval(v, ["p", "q", "r", "s"], unit="prompt"), t_interval(v, unit="prompt")
    assert (a.estimate, a.low, a.high) == pytest.approx((b.estimate, b.low, b.high))


def test_clustered_share_covers_when_raters_differ():
    rng = np.random.default_rng(18)
    sims, raters, per = 1000, 8, 6
    hits = naive = 0
    for _ in range(sims):
        # each rater has an own preference rate (Beta(3, 2): mean 0.6, sd 0.2): their answers correlate
        rates = rng.beta(3, 2, size=raters)
        answers = (rng.random((raters, per)) < rates[:, None]).ravel()
        iv = clustered_share(answers.tolist(), np.repeat(np.arange(raters), per).tolist(), unit="rater")
        hits += _covers(iv.low, iv.high, 0.6)
        lo, hi = wilson_interval(int(answers.sum()), answers.size)
        naive += lo <= 0.6 <= hi
    assert hits / sims >= 0.92
    assert naive / sims < hits / sims - 0.04


def test_clustered_share_has_no_interval_below_three_raters():
    iv = clustered_share([True, False, True, True], ["r1", "r1", "r2", "r2"], unit="rater")
    assert iv.low is None and iv.n == 2


def test_t_interval_by_hand():
    # [3, 4, 5]: mean 4, s = 1, se = 1 / sqrt(3), t(0.975, 2) = 4.302653 -> 4 -+ 2.484138
    r = t_interval([3, 4, 5], unit="rater")
    assert (r.estimate, r.low, r.high) == pytest.approx((4.0, 1.515862, 6.484138), abs=1e-5)


def test_clustered_share_by_hand():
    # r1 and r2 answer a on all 4 items, r3 b on all 4: p = 8/12. Residual sums per rater 4/3, 4/3, -8/3,
    # cluster variance 3/2 * (96/9) / 144 = 1/9 against (2/9) / 11 with one answer per cluster:
    # deff = 5.5, n_eff = 12 / 5.5 = 2.181818. Wilson for p = 2/3 at that n: centre 0.560373, half 0.391183.
    hits = [True] * 8 + [False] * 4
    iv = clustered_share(hits, ["r1"] * 4 + ["r2"] * 4 + ["r3"] * 4, unit="rater")
    assert (iv.estimate, iv.n) == (pytest.approx(2 / 3), 3)
    assert (iv.low, iv.high) == pytest.approx((0.169190, 0.951556), abs=1e-5)
    # The same answers from 12 raters are independent: plain Wilson 8/12.
    plain = clustered_share(hits, [f"r{i}" for i in range(12)], unit="rater")
    assert (plain.low, plain.high) == pytest.approx(wilson_interval(8, 12))


def test_wilson_interval_by_hand():
    # 7/10: denom 1.384146, centre 0.644622, half 0.247885
    assert wilson_interval(7, 10) == pytest.approx((0.39677, 0.89220), abs=1e-4)


def test_cluster_ratio_interval_is_paired_ratio_with_one_pair_per_cluster():
    a, b = [0.2, 0.3, 0.25, 0.4], [0.5, 0.4, 0.45, 0.6]
    one = cluster_ratio_interval(a, b, ["p", "q", "r", "s"], unit="prompt")
    ref = paired_ratio_interval(a, b, unit="prompt")
    assert (one.estimate, one.low, one.high) == pytest.approx((ref.estimate, ref.low, ref.high))


def test_cluster_ratio_interval_covers_with_shared_prompt_effects():
    rng = np.random.default_rng(19)
    hits = naive = 0
    prompts, per = 8, 6
    for _ in range(1000):
        # each prompt has its own wording effect (mean 0.5 of a seed change), shared by its variants and seeds
        effect = np.repeat(rng.gamma(16, 0.5 / 16, size=prompts), per)
        seed_change = rng.gamma(4, 0.1, size=prompts * per)
        wording = effect * rng.gamma(4, 0.1, size=prompts * per)
        iv = cluster_ratio_interval(wording, seed_change, np.repeat(np.arange(prompts), per), unit="prompt")
        assert iv.n == prompts
        hits += _covers(iv.low, iv.high, 0.5)
        p = paired_ratio_interval(wording, seed_change, unit="clip")  # the 48 clips as if independent
        naive += _covers(p.low, p.high, 0.5)
    assert 0.92 <= hits / 1000 <= 0.975
    assert naive / 1000 < 0.90
