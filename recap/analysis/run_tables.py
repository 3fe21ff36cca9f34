"""The tables and the tidy CSV of a run's analysis (:class:`recap.analysis.scoring.RunAnalysis`)."""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import asdict
from typing import TYPE_CHECKING

from recap.analysis.clip_scores import COMPARISONS, LATENT_NAMES, RECONSTRUCTION_METRICS
from recap.analysis.tables import Group, SummaryRow, distance_ratio_items, group_items, ratio_row, summary_rows
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
