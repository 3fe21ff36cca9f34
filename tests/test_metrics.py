"""Latent / text metrics, pairings and summaries (recap.metrics.similarity)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recap.metrics import similarity as metrics
from recap.metrics.similarity import (
    PairScores,
    baseline_pairs,
    cosine,
    l2_raw,
    l2_unit,
    mse,
    pair_scores,
    pairwise_matrix,
    seed_pairs,
    text_cosine_matrix,
)
from recap.analysis.tables import summarize

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=64)


def vectors(n: int = 8):
    return arrays(np.float64, n, elements=finite)


def nonzero(v: np.ndarray) -> bool:
    return float(np.linalg.norm(v)) > 1e-6


# ---------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(vectors(), vectors())
def test_cosine_is_bounded_and_symmetric(a, b):
    assume(nonzero(a) and nonzero(b))
    c = cosine(a, b)
    assert -1.0 <= c <= 1.0
    assert c == pytest.approx(cosine(b, a), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(vectors())
def test_cosine_of_a_vector_with_itself_is_one(a):
    assume(nonzero(a))
    assert cosine(a, a) == pytest.approx(1.0, abs=1e-12)
    assert l2_unit(a, a) == pytest.approx(0.0, abs=1e-7)


@settings(max_examples=60, deadline=None)
@given(vectors(), vectors())
def test_unit_l2_equals_sqrt_two_minus_two_cosine(a, b):
    assume(nonzero(a) and nonzero(b))
    expected = math.sqrt(max(0.0, 2.0 - 2.0 * cosine(a, b)))
    # sqrt(2 - 2cos) loses precision as cos -> 1 (about sqrt(eps) ~ 1.5e-8 absolute)
    assert l2_unit(a, b) == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= l2_unit(a, b) <= 2.0 + 1e-12
    assert l2_unit(a, b) == pytest.approx(l2_unit(b, a), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(vectors(), vectors(), st.floats(1e-3, 1e3), st.floats(1e-3, 1e3))
def test_cosine_and_unit_l2_ignore_scale(a, b, s, t):
    assume(nonzero(a) and nonzero(b))
    assert cosine(s * a, t * b) == pytest.approx(cosine(a, b), abs=1e-9)
    assert l2_unit(s * a, t * b) == pytest.approx(l2_unit(a, b), abs=1e-7)


@settings(max_examples=60, deadline=None)
@given(vectors(5), vectors(5))
def test_mse_is_squared_raw_l2_over_n(a, b):
    assert mse(a, b) == pytest.approx(l2_raw(a, b) ** 2 / a.size, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(vectors(6), vectors(6))
def test_pair_scores_agree_with_single_metrics(a, b):
    assume(nonzero(a) and nonzero(b))
    s = pair_scores(a, b)
    assert s.cosine == pytest.approx(cosine(a, b), abs=1e-12)
    assert s.l2 == pytest.approx(l2_unit(a, b), abs=1e-12)
    assert s.l2_raw == pytest.approx(l2_raw(a, b), rel=1e-12)
    assert s.mse == pytest.approx(mse(a, b), rel=1e-12)


# ---------------------------------------------------------------- worked examples


def test_hand_computed_example():
    a = np.array([1.0, 2.0, 2.0])  # |a| = sqrt(1 + 4 + 4) = 3
    b = np.array([2.0, 0.0, 1.0])  # |b| = sqrt(4 + 0 + 1) = sqrt(5)
    # a.b = 1*2 + 2*0 + 2*1 = 4  ->  cos = 4 / (3 * sqrt(5)) = 0.596285...
    assert cosine(a, b) == pytest.approx(4 / (3 * math.sqrt(5)))
    assert cosine(a, b) == pytest.approx(0.5962847939999439)
    # unit L2 = sqrt(2 - 2 * 0.596285) = sqrt(0.807430) = 0.898571...
    assert l2_unit(a, b) == pytest.approx(0.8985713, abs=1e-7)
    # a - b = (-1, 2, 1): raw L2 = sqrt(1 + 4 + 1) = sqrt(6) = 2.449490...
    assert l2_raw(a, b) == pytest.approx(math.sqrt(6))
    # MSE = (1 + 4 + 1) / 3 = 2
    assert mse(a, b) == pytest.approx(2.0)


def test_hand_computed_orthogonal_and_opposite():
    x = np.array([3.0, 0.0, 0.0])
    y = np.array([0.0, 0.0, 5.0])
    # x.y = 0 -> cos = 0; unit vectors (1,0,0), (0,0,1): distance sqrt(1 + 1) = sqrt(2)
    assert cosine(x, y) == 0.0
    assert l2_unit(x, y) == pytest.approx(math.sqrt(2))
    # x vs -x/3 = (-1, 0, 0): cos = -1, unit L2 = |(1,0,0) - (-1,0,0)| = 2, raw L2 = |(4,0,0)| = 4
    assert cosine(x, -x / 3) == -1.0
    assert l2_unit(x, -x / 3) == pytest.approx(2.0)
    assert l2_raw(x, -x / 3) == pytest.approx(4.0)
    # MSE = 16 / 3
    assert mse(x, -x / 3) == pytest.approx(16 / 3)


def test_latents_of_any_shape_and_type_are_flattened():
    a = torch.tensor([[1.0, 2.0], [2.0, 0.0]])
    b = np.array([1.0, 2.0, 2.0, 0.0])
    assert cosine(a, b) == pytest.approx(1.0)
    assert pair_scores(a, b) == PairScores(cosine=1.0, l2=0.0, l2_raw=0.0, mse=0.0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="differ in size: 3 vs 4"):
        cosine(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="zero norm"):
        cosine(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        l2_raw(np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(ValueError, match="unknown metric 'dot'"):
        pairwise_matrix([np.ones(2)], "dot")


# ---------------------------------------------------------------- matrices and pairings


def test_pairwise_matrix_matches_pair_metrics():
    rng = np.random.default_rng(0)
    zs = [rng.normal(size=(2, 5)) for _ in range(4)]
    for name, fn in (("cosine", cosine), ("l2", l2_unit), ("l2_raw", l2_raw), ("mse", mse)):
        m = pairwise_matrix(zs, name)
        assert m.shape == (4, 4)
        np.testing.assert_allclose(m, m.T)
        for i in range(4):
            for j in range(4):
                expected = fn(zs[i], zs[j]) if i != j else (1.0 if name == "cosine" else 0.0)
                assert m[i, j] == pytest.approx(expected, abs=1e-12)


def test_text_cosine_matrix_of_embeddings():
    # rows: (1,0), (1,1), (0,2): cos(r0, r1) = 1/sqrt(2), cos(r0, r2) = 0, cos(r1, r2) = 2/(sqrt(2)*2)
    m = text_cosine_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]))
    assert m[0, 1] == pytest.approx(1 / math.sqrt(2))
    assert m[0, 2] == pytest.approx(0.0)
    assert m[1, 2] == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        text_cosine_matrix(np.ones(3))


def _run_latents():
    rng = np.random.default_rng(1)
    return {(label, seed): rng.normal(size=6) for label in ("baseline", "reword-1", "reword-2") for seed in (0, 1, 2)}


def test_baseline_pairs_compare_same_seed_only():
    latents = _run_latents()
    pairs = baseline_pairs(latents)
    assert [(p.variant_b, p.seed_b) for p in pairs] == [
        (label, seed) for label in ("reword-1", "reword-2") for seed in (0, 1, 2)
    ]
    for p in pairs:
        assert p.variant_a == "baseline" and p.seed_a == p.seed_b
        assert p.cosine == pytest.approx(cosine(latents[("baseline", p.seed_a)], latents[(p.variant_b, p.seed_b)]))


def test_baseline_pairs_skip_seeds_the_baseline_lacks_and_need_a_baseline():
    latents = _run_latents()
    del latents[("baseline", 2)]
    assert {p.seed_b for p in baseline_pairs(latents)} == {0, 1}
    with pytest.raises(ValueError, match="no clips of baseline variant 'base'"):
        baseline_pairs(latents, baseline="base")


def test_seed_pairs_measure_generation_variance_within_each_variant():
    latents = _run_latents()
    pairs = seed_pairs(latents)
    # 3 variants x C(3, 2) seed pairs
    assert len(pairs) == 9
    for p in pairs:
        assert p.variant_a == p.variant_b and p.seed_a < p.seed_b
        assert p.l2 == pytest.approx(l2_unit(latents[(p.variant_a, p.seed_a)], latents[(p.variant_b, p.seed_b)]))


# ---------------------------------------------------------------- summaries


def test_summary_hand_computed():
    # values 1, 2, 3, 4: mean 2.5; deviations -1.5 -0.5 0.5 1.5 -> squares sum 5 -> variance 5/4
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.mean, s.variance, s.n) == (2.5, 1.25, 4)
    assert s.std == pytest.approx(math.sqrt(1.25))
    # Changed with the interval's definition (percentile bootstrap -> Student t over the values): the
    # bootstrap could not leave [1, 4]; the t interval is 2.5 -+ t(0.975, 3) * s / 2, with s = sqrt(5/3):
    # 3.182446 * 1.290994 / 2 = 2.054260.
    assert (s.ci_low, s.ci_high) == pytest.approx((0.445740, 4.554260), abs=1e-6)
    assert (s.unit, s.method) == ("value", "t")


def test_summary_interval_is_reproducible_and_narrows_with_more_data():
    rng = np.random.default_rng(3)
    small, large = rng.normal(size=10), rng.normal(size=1000)
    assert summarize(small) == summarize(small)
    s_small, s_large = summarize(small), summarize(large)
    assert s_large.ci_high - s_large.ci_low < s_small.ci_high - s_small.ci_low
    # the interval of a mean of N(0,1) data of size 1000 is about +-1.96/sqrt(1000)
    assert s_large.ci_high - s_large.ci_low == pytest.approx(2 * 1.96 / math.sqrt(1000), rel=0.2)


def test_summary_of_one_value_and_of_none():
    s = summarize([0.7])
    # Changed: one value used to get a zero-width "interval" [0.7, 0.7]; below 3 units there is none.
    assert (s.mean, s.std, s.variance, s.n, s.ci_low, s.ci_high) == (0.7, 0.0, 0.0, 1, None, None)
    with pytest.raises(ValueError, match="zero values"):
        summarize([])
    with pytest.raises(ValueError, match="confidence"):
        summarize([1.0, 2.0], confidence=1.5)


def test_metric_names_are_the_documented_ones():
    assert metrics.METRIC_NAMES == ("cosine", "l2", "l2_raw", "mse")


def test_summary_clusters_values_that_share_a_unit():
    # two prompts' values, 0 and 1 for one prompt, 2 and 3 for another, 4 and 5 for a third:
    # three clusters, so n = 3 (not 6) and the interval is cluster-robust
    s = summarize([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], unit="prompt", clusters=["a", "a", "b", "b", "c", "c"])
    assert (s.values, s.n, s.unit, s.method) == (6, 3, "prompt", "cluster-robust t")
    # cluster sums of residuals -4, 0, 4: se = sqrt(3/2 * 32) / 6 = 1.154701; t(0.975, 2) = 4.302653
    assert (s.ci_low, s.ci_high) == pytest.approx((2.5 - 4.968276, 2.5 + 4.968276), abs=1e-5)
