"""Experiment statistics on unit records: the wording effect, the reconstruction comparisons and
the text-vs-audio correlation, each on its independent unit (DESIGN.md, "Statistics")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from recap.analysis.clip_scores import COMPARISONS, LATENT_NAMES, RECONSTRUCTION_METRICS
from recap.analysis.tables import SummaryRow, ratio_row
from recap.metrics.uncertainty import clustered_correlation

CLIP_LATENT = LATENT_NAMES["clip"]  # experiments score clip latents only
CORRELATION_BOOT_MIN = 100  # clustered_correlation's floor: fewer resamples cannot carry an interval


def set_name(method: str, tier: int) -> str:
    """A rewording tier as the tables name it: "<method>, tier <k>" ("token, tier 0": a token in the baseline)."""
    return f"{method}, tier {tier}"


def set_order(name: str) -> tuple[int, int, str]:
    """Sort key of set names: rewordings before tokens, then by tier; other names ("all clips") last."""
    if ", tier " not in name:
        return (2, 0, name)
    method, tier = name.rsplit(", tier ", 1)
    return (int(method == "token"), int(tier), method)


def wording_effect(pairs: Sequence[dict[str, Any]], seed_records: Sequence[dict[str, Any]],
                    confidence: float) -> list[SummaryRow]:
    """Per tier: how much further than a new seed a rewording moves the clip, with a cluster interval over prompts.

    Per variant clip, the numerator is its distance (1 - clip latent cosine) to the baseline clip
    of the same prompt and seed, the denominator the mean distance of that baseline clip to the
    baseline clips of the prompt's other seeds.
    """
    others: dict[tuple[str, int], list[float]] = {}
    for r in seed_records:
        if r["variant"] == "baseline" and r.get("cosine") is not None:
            for s in (r["seed_a"], r["seed_b"]):
                others.setdefault((r["prompt_id"], s), []).append(1.0 - r["cosine"])
    items = [{"set": p["set"], "prompt_id": p["prompt_id"], "wording": 1.0 - p["cosine"],
              "seed_change": float(np.mean(others[(p["prompt_id"], p["seed"])]))}
             for p in pairs if p.get("cosine") is not None and (p["prompt_id"], p["seed"]) in others]
    rows = [ratio_row("wording_effect", "all", "all", [x for x in items if x["set"] == s], "prompt_id", "prompt",
                      confidence, set=s, latent=CLIP_LATENT)
            for s in sorted({x["set"] for x in items}, key=set_order)]
    return [r for r in rows if r is not None]


def comparisons(units: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reconstruction table's records: each clip's round trip, its seed change, the baseline's closest rewording."""
    out = []
    for u in units:
        rec = u.get("reconstruction") or {}
        if not rec:
            continue
        key = {"prompt_id": u["prompt_id"], "set": "all clips"}
        out.append({**key, "comparison": COMPARISONS[0], **{m: rec.get(m) for m in RECONSTRUCTION_METRICS}})
        for name, value in ((COMPARISONS[1], rec.get("seed_change")), (COMPARISONS[2], rec.get("closest_rewording"))):
            if value:
                out.append({**key, "comparison": name, **{m: value.get(m) for m in RECONSTRUCTION_METRICS}})
    return out


def text_audio_correlations(pairs: Sequence[dict[str, Any]], *, confidence: float = 0.95, n_boot: int = 2000,
                            seed: int = 0) -> list[dict[str, Any]]:
    """Text cosine against clip latent cosine, per rewording tier and over all, one point per variant.

    Every seed of a variant shares its text cosine, so a variant is one point: its text cosine
    against the mean over its seeds of the latent cosine. Variants of one prompt share it, so the
    interval is a cluster bootstrap over prompts
    (:func:`~recap.metrics.uncertainty.clustered_correlation`); no per-clip p-values.

    Args:
        pairs: pairs.csv records (prompt_id, variant, set, text_cosine, cosine).
        n_boot: Cluster-bootstrap resamples (at least 100).

    Returns:
        Per set and "all": variants, prompts, and for pearson and spearman r with low/high (None
        where undefined: fewer than 3 variants, a constant series, or fewer than 3 prompts for the interval).
    """
    points: dict[tuple[str, str], dict[str, Any]] = {}
    for p in pairs:
        if p.get("text_cosine") is not None and p.get("cosine") is not None:
            pt = points.setdefault((p["prompt_id"], p["variant"]), {"set": p["set"], "text": p["text_cosine"], "y": []})
            pt["y"].append(float(p["cosine"]))
    out = []
    sets = sorted({pt["set"] for pt in points.values()}, key=set_order)
    for s in sets + ["all"]:
        chosen = [(k[0], pt) for k, pt in points.items() if s == "all" or pt["set"] == s]
        row: dict[str, Any] = {"set": s, "variants": len(chosen), "prompts": len({pid for pid, _ in chosen}),
                               "latent": CLIP_LATENT}
        for method in ("pearson", "spearman"):
            row.update({method: None, f"{method}_low": None, f"{method}_high": None})
            if len(chosen) >= 3:
                c = clustered_correlation([pt["text"] for _, pt in chosen], [float(np.mean(pt["y"])) for _, pt in chosen],
                                          [pid for pid, _ in chosen], method=method, confidence=confidence,
                                          n_boot=max(n_boot, CORRELATION_BOOT_MIN), seed=seed)
                if not math.isnan(c.r):  # undefined for a constant series: left empty rather than NaN
                    row.update({method: c.r, f"{method}_low": c.low, f"{method}_high": c.high})
        out.append(row)
    return out


# ----------------------------------------------------------------------------- names and cells
LATENT_METRICS = ("cosine", "l2", "l2_raw", "mse")
CLIP_LATENT = LATENT_NAMES["clip"]  # experiments score clip latents only
# Latent measures get the latent's name in front ("Clip latent cosine"): see :func:`title`.
TITLES = {
    "text_cosine": "Text cosine (↓)", "cosine": "cosine (↓)", "l2": "unit L2 (↑)", "l2_raw": "raw L2 (↑)",
    "mse": "MSE (↑)", "latent_mse": "MSE", "latent_l2_raw": "raw L2", "latent_l2": "unit L2",
    "latent_cosine": "cosine", "audio_mse": "Waveform MSE", "audio_l2_raw": "Waveform raw L2",
    "distance_ratio": "(1 − cos) vs baseline ÷ (1 − cos) of a new seed",
}


def title(metric: str, latent: str = "") -> str:
    """A metric's table heading, naming the latent of a latent measure ("Clip latent cosine (↓)")."""
    base = TITLES.get(metric, metric)
    return f"{latent[:1].upper()}{latent[1:]} {base}" if latent and metric != "distance_ratio" else base


def fmt(x: float | None) -> str:
    """Four significant digits, as a table cell."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.4g}"
