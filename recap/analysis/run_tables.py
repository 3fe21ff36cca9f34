"""The tables and the tidy CSV of a run's analysis (:class:`recap.analysis.scoring.RunAnalysis`)."""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import asdict
from typing import TYPE_CHECKING

from recap.analysis.clip_scores import COMPARISONS, LATENT_NAMES, RECONSTRUCTION_METRICS
from recap.analysis.documents import Block, Heading, Table
from recap.analysis.tables import (
    Group,
    SummaryRow,
    distance_ratio_items,
    group_items,
    interval_text,
    ratio_row,
    summary_rows,
    unit_text,
)
from recap.metrics import similarity as metrics
from recap.variants import tier_of

if TYPE_CHECKING:
    from recap.analysis.scoring import RunAnalysis
    from recap.generation.runs import RunManifest


def run_summaries(a: RunAnalysis, run: RunManifest) -> list[SummaryRow]:
    """The run's tables. One run holds one prompt: a variant's row is over its seeds, a tier's and
    "all" over its variants (their seeds share the wording), seed variance over clips (jackknife)."""
    labels = [v["label"] for v in run.variants]
    tiers = {v["label"]: tier_of(v) for v in run.variants}
    others = [lb for lb in labels if lb != a.config.baseline]
    conf, lat = a.config.confidence, a.latent
    rows = summary_rows("vs_baseline", group_items([asdict(p) for p in a.baseline_pairs], others, tiers, "variant_b",
                                                   seed_field="seed_b"), metrics.METRIC_NAMES, conf, latent=lat)
    rows += summary_rows("seed_variance", group_items([asdict(p) for p in a.seed_pairs], labels, tiers, "variant_a",
                                                      with_all=True, pairwise=True), metrics.METRIC_NAMES, conf,
                         latent=lat)
    rows += _wording_rows(a, others, tiers)
    # One text cosine per variant: the variant is the unit (a lone variant has no interval).
    text_groups = [dataclasses.replace(g, unit_field="variant", unit="variant")
                   for g in group_items(a.text, others, tiers, "variant")]
    rows += summary_rows("text", text_groups, ("cosine",), conf)
    by_kind = {c: [x for x in a.comparisons if x["comparison"] == c] for c in COMPARISONS}
    rows += summary_rows("reconstruction", [
        Group("comparison", c, items, "seed" if c == COMPARISONS[2] else "variant",
              "seed" if c == COMPARISONS[2] else "variant") for c, items in by_kind.items() if items],
        RECONSTRUCTION_METRICS, conf, latent=LATENT_NAMES["clip"], latent_metrics=RECONSTRUCTION_METRICS[2:])
    rows += summary_rows("clap", group_items(a.clap, labels, tiers, "variant"), ("clap_a", "clap_t"), conf)
    # Match flags summarise as rates: the mean of 0/1 values.
    flags = ("tempo_match", "key_match", "scale_match", "loudness_match")
    music = [{**m, **{k: float(m[k]) for k in flags if m.get(k) is not None}} for m in a.music]
    rows += summary_rows("music", group_items(music, labels, tiers, "variant"), flags, conf)
    if a.toy_features:
        from recap.toy.world import FEATURE_NAMES

        rows += summary_rows("toy_features", group_items(a.toy_features, labels, tiers, "variant"),
                             ("centroid_hz", *FEATURE_NAMES[1:]), conf)
    return rows


def _wording_rows(a: RunAnalysis, others: list[str], tiers: dict[str, int]) -> list[SummaryRow]:
    """How much further than a new seed each rewording moves the clip: ratio of mean (1 - cosine)."""
    base_seeds = [p for p in a.seed_pairs if p.variant_a == a.config.baseline]
    items = distance_ratio_items(a.baseline_pairs, base_seeds)
    groups = [("variant", lb, [x for x in items if x["variant"] == lb], "seed", "seed") for lb in others]
    groups += [("tier", f"tier {t}", [x for x in items if tiers[x["variant"]] == t], "variant", "variant")
               for t in sorted({tiers[lb] for lb in others})]
    rows = [ratio_row("wording_effect", kind, name, xs, field_, unit, a.config.confidence, latent=a.latent)
            for kind, name, xs, field_, unit in groups if xs]
    return [r for r in rows if r is not None]


def run_csv(a: RunAnalysis) -> bytes:
    """Tidy rows: kind, the clip(s) a value belongs to, metric, the latent a latent measure uses, value."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "variant_a", "seed_a", "variant_b", "seed_b", "metric", "latent", "value"])
    for kind, pairs in (("vs_baseline", a.baseline_pairs), ("seed_variance", a.seed_pairs)):
        for p in pairs:
            for m in metrics.METRIC_NAMES:
                w.writerow([kind, p.variant_a, p.seed_a, p.variant_b, p.seed_b, m, a.latent, repr(getattr(p, m))])
    for t in a.text:
        w.writerow(["text", a.config.baseline, "", t["variant"], "", "cosine", "", repr(t["cosine"])])
    clip_latent = LATENT_NAMES["clip"]  # the reconstruction check is always on clip latents
    for kind, items in (("reconstruction", a.reconstruction), ("clap", a.clap), ("music", a.music)):
        for item in items:
            for m, v in item.items():
                if m not in ("variant", "seed"):
                    w.writerow([kind, item["variant"], item["seed"], "", "", m,
                                clip_latent if m.startswith("latent_") else "",
                                "" if v is None else repr(v) if isinstance(v, float) else v])
    for c in a.comparisons:  # the reconstruction's yardsticks: a seed change and the closest rewording
        if c["comparison"] == COMPARISONS[1]:
            ends = [c["variant"], c["seed"], c["variant"], c["other_seed"]]
        elif c["comparison"] == COMPARISONS[2]:
            ends = [a.config.baseline, c["seed"], c["variant"], c["seed"]]
        else:
            continue
        for m in RECONSTRUCTION_METRICS:
            if c.get(m) is not None:
                w.writerow([c["comparison"], *ends, m, clip_latent if m.startswith("latent_") else "", repr(c[m])])
    return buf.getvalue().encode()

# (table, metrics to show, heading); the thesis tables in the order the thesis gives them, each
# followed by what puts it in proportion.
TABLES = [
    ("vs_baseline", ("cosine", "l2"),
     "Baseline vs variant, same seed: clip latent cosine (lower = more different) and unit L2 "
     "(higher = more different) [thesis Tables 5.1 / 5.3]"),
    ("seed_variance", ("cosine", "l2"),
     "Generation variance: same prompt, different seeds [thesis 4.3.1]. A wording effect shows only where "
     "it exceeds this"),
    ("wording_effect", ("distance_ratio",),
     "Wording effect against generation variance: mean (1 - cosine) to the baseline / mean (1 - cosine) between "
     "the baseline's seeds (> 1: the rewording moves the clip further than a new seed does)"),
    ("text", ("cosine",), "Text-embedding cosine with the baseline prompt (mean-pooled text encoder) [thesis Table 5.2]"),
    ("reconstruction", ("audio_mse", "audio_l2_raw", "latent_mse", "latent_l2_raw"),
     "Reconstruction: x vs decode(encode(x)) (waveform) and encode(x) vs encode(decode(encode(x))) (clip latent), "
     "beside the same quantities for a seed change and for the closest rewording: if the round trip is far "
     "below both, the autoencoder is not what makes clips differ [thesis 4.4.2 / Table 5.4]"),
    ("clap", ("clap_a", "clap_t"), "CLAP-A (audio vs references) and CLAP-T (audio vs its prompt) [paper 001]"),
    ("music", ("tempo_match", "key_match", "scale_match", "loudness_match"),
     "Music: share of clips matching the references (tempo +-5 BPM, key, scale, loudness +-2.5 LU) [paper 001]"),
    ("toy_features", ("centroid_hz", "loudness_variation", "flatness", "fm_depth"),
     "Toy world reference features (model-free): spectral centroid, loudness variation (0 steady, ~1 on/off), "
     "flatness (0 tone, 1 noise), pitch-modulation depth"),
]
INTERVALS = ("Intervals: a variant over its seeds (t), generation variance over clips (jackknife), a tier or "
             "'all' over variants (cluster-robust t: one run is one prompt), ratios by the delta method; "
             "no interval below 3 units ('n too small').")


def _fmt(v: float | None) -> str:
    # Six significant digits: cosines of 0.999996 must not print as 1, MSEs of 1e-8 not as 0.
    # A value that was not a number is stored as null (strict JSON) and printed as such.
    return "n/a" if v is None else f"{v:.6g}"


def report_tables(a: RunAnalysis) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, column headers, rows) of each table a run's report shows, in the thesis's order;
    every row with its interval, n, unit and method."""
    # A tier holding a single variant repeats that variant's row: leave it out.
    variants_in: dict[str, set[str]] = {}
    for c in a.clips:
        variants_in.setdefault(f"tier {tier_of(c)}", set()).add(c["variant"])
    redundant = {b for b, labels in variants_in.items() if len(labels) == 1}
    headers = ["metric", "group", "mean", "std", "variance", "n", f"{a.config.confidence:.0%} CI", "interval over"]
    out = []
    for table, names, heading in TABLES:
        rows = [r for m in names for r in a.table(table, m) if r.group_kind != "tier" or r.group not in redundant]
        if rows:
            out.append((heading, headers, [[f"{r.latent} {r.metric}" if r.latent else r.metric, r.group, _fmt(r.mean),
                                            _fmt(r.std), _fmt(r.variance), str(r.n), interval_text(r, _fmt),
                                            unit_text(r)] for r in rows]))
    return out


def run_document(a: RunAnalysis) -> list[Block]:
    """The run's tables as a document for ``summary.md`` / ``summary.tex``."""
    blocks: list[Block] = [
        Heading(f"Run {a.run_id}", 1),
        f"Model `{a.model.get('name', '?')}` · {len(a.clips)} clips · baseline `{a.config.baseline}` · pair scores "
        f"on the {a.latent}.",
        INTERVALS,
    ]
    blocks += [f"Note: {n}" for n in a.notes]
    for heading, headers, rows in report_tables(a):
        blocks += [Heading(heading), Table(headers, rows, heading)]
    return blocks
