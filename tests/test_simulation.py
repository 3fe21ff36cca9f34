"""The tables' statistics on synthetic data with a known truth, through the functions the reports use.

DESIGN.md, "Statistics": every method is checked by simulation: false-positive rate about 5 %,
coverage about 95 %. Each check runs the real table builders (the run tables of
``recap analyze``, the experiment report's pooled tables and its text-vs-audio correlation) and
beside them the method they replaced, so a check that could not fail shows up as the old method
passing too. Fixed seeds; a few seconds in all.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from recap.analysis.tables import group_items, summary_rows
from recap.experiment.report import _summaries as experiment_rows
from recap.experiment.stats import text_audio_correlations
from recap.metrics.uncertainty import percentile_bootstrap


def _null_pairs(rng: np.random.Generator, prompts: int = 12, variants: int = 4, seeds: int = 4) -> list[dict]:
    """pairs.csv records of an experiment where text cosine and latent cosine are unrelated.

    Both measures carry a prompt effect (a prompt's rewordings are alike in text and in audio) and
    every seed of a variant repeats its text cosine, as in a real experiment.
    """
    text_p, audio_p = rng.normal(0.8, 0.05, prompts), rng.normal(0.6, 0.1, prompts)
    out = []
    for p in range(prompts):
        for v in range(variants):
            text = text_p[p] + rng.normal(0, 0.03)
            variant_audio = audio_p[p] + rng.normal(0, 0.05)
            for s in range(seeds):
                out.append({"prompt_id": str(p), "variant": f"reword-{v}", "seed": s, "set": "synonym, tier 1",
                            "text_cosine": text, "cosine": variant_audio + rng.normal(0, 0.05)})
    return out


def test_report_correlation_has_five_percent_false_positives_on_null_data():
    rng = np.random.default_rng(21)
    sims = 200
    clustered = naive = 0
    for e in range(sims):
        pairs = _null_pairs(rng)
        row = next(c for c in text_audio_correlations(pairs, n_boot=1000, seed=e) if c["set"] == "all")
        assert (row["variants"], row["prompts"]) == (48, 12)
        clustered += not (row["pearson_low"] <= 0.0 <= row["pearson_high"])
        # the test the report used to print: one point per clip, each seed repeating its variant's text cosine
        naive += stats.pearsonr([p["text_cosine"] for p in pairs], [p["cosine"] for p in pairs])[1] < 0.05
    rate = clustered / sims
    print(f"false-positive rate: clustered {rate:.3f}, per-clip {naive / sims:.3f}")
    assert 0.02 <= rate <= 0.10
    assert naive / sims >= 0.25


def test_run_table_intervals_cover_at_four_seeds():
    """A variant's row in `recap analyze` (t over 4 seeds) covers ~95 %; the percentile bootstrap did not."""
    rng = np.random.default_rng(22)
    sims = 1000
    hits = boot = 0
    for i in range(sims):
        values = rng.normal(0.7, 0.05, size=4)
        items = [{"variant_b": "reword-1", "seed_b": s, "cosine": float(v)} for s, v in enumerate(values)]
        row = summary_rows("vs_baseline", group_items(items, ["reword-1"], {"reword-1": 1}, "variant_b",
                                                      seed_field="seed_b"), ("cosine",))[0]
        assert (row.group, row.n, row.unit) == ("reword-1", 4, "seed")
        hits += row.ci_low <= 0.7 <= row.ci_high
        lo, hi = percentile_bootstrap(values, n_boot=400, seed=i)
        boot += lo <= 0.7 <= hi
    print(f"coverage at 4 seeds: t {hits / sims:.3f}, percentile bootstrap {boot / sims:.3f}")
    assert 0.90 <= hits / sims <= 0.99
    assert boot / sims < 0.88


def test_seed_variance_rows_cover_at_four_clips():
    """Generation variance of one variant: 6 seed pairs of 4 clips, jackknife over the clips."""
    rng = np.random.default_rng(23)
    sims = 1000
    hits = naive = 0
    for i in range(sims):
        z = rng.normal(size=(4, 16))
        d = ((z[:, None] - z[None]) ** 2).mean(-1) / 2  # every pair's expected distance is 1
        items = [{"variant_a": "baseline", "seed_a": a, "seed_b": b, "mse": float(d[a, b])}
                 for a in range(4) for b in range(a + 1, 4)]
        row = summary_rows("seed_variance", group_items(items, ["baseline"], {"baseline": 0}, "variant_a",
                                                        pairwise=True), ("mse",))[0]
        assert (row.n, row.unit, row.values) == (4, "clip", 6)
        hits += row.ci_low <= 1.0 <= row.ci_high
        lo, hi = percentile_bootstrap([x["mse"] for x in items], n_boot=400, seed=i)  # pairs as if independent
        naive += lo <= 1.0 <= hi
    print(f"coverage of seed variance: jackknife {hits / sims:.3f}, pairs bootstrap {naive / sims:.3f}")
    assert 0.90 <= hits / sims <= 0.99
    assert naive / sims < 0.85


def test_experiment_pooled_rows_cover_with_prompt_effects():
    """A by-tier row pools 4 variants x 4 seeds of each of 8 prompts: the interval is over prompts."""
    rng = np.random.default_rng(24)
    sims = 500
    hits = pooled = 0
    for i in range(sims):
        records = []
        for p, effect in enumerate(rng.normal(0, 0.1, size=8)):
            for v in range(4):
                wording = effect + rng.normal(0, 0.03)
                records += [{"prompt_id": str(p), "set": "synonym, tier 1", "cosine": 0.6 + wording + rng.normal(0, 0.03)}
                            for _ in range(4)]
        row = experiment_rows("by_tier", records, None, ["cosine"], 0.95)[0]
        assert (row.n, row.unit, row.values) == (8, "prompt", 128)
        hits += row.ci_low <= 0.6 <= row.ci_high
        lo, hi = percentile_bootstrap([r["cosine"] for r in records], n_boot=400, seed=i)  # 128 clips as if independent
        pooled += lo <= 0.6 <= hi
    print(f"coverage of pooled rows: over prompts {hits / sims:.3f}, clips bootstrap {pooled / sims:.3f}")
    assert 0.90 <= hits / sims <= 0.99
    assert pooled / sims < 0.80
