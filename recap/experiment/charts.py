"""The charts of an experiment report: score distributions per tier, and text vs audio distance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recap.analysis.figures import save_figure
from recap.experiment.stats import CLIP_LATENT, LATENT_METRICS, fmt, set_order, title

if TYPE_CHECKING:
    from recap.experiment.report import ExperimentReport


def write_charts(report: ExperimentReport, folder: Path, seed_records: Sequence[dict[str, Any]] = (),
                 static: bool = False) -> list[Path]:
    """``distributions.html`` (each score per rewording tier, with seed variance beside it) and
    ``text_vs_audio.html`` (text cosine against clip latent cosine, one point per variant: the mean
    over its seeds, the unit the correlation is computed on).

    The charts load ``plotly.min.js`` from their own folder (written once), so they work offline;
    with ``static`` each is also written as PNG and SVG (:func:`recap.analysis.figures.save_figure`).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [m for m in ("cosine", "l2", "text_cosine", "l2_raw", "mse") if any(p.get(m) is not None for p in report.pairs)]
    sets = sorted({p["set"] for p in report.pairs}, key=set_order)
    paths = []
    subplot_titles = [title(m, CLIP_LATENT if m in LATENT_METRICS else "") for m in names]
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=subplot_titles)
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac"]
    for col, m in enumerate(names, 1):
        groups = [(s, [p[m] for p in report.pairs if p["set"] == s and p.get(m) is not None]) for s in sets]
        groups.append(("same wording, other seed", [r[m] for r in seed_records if r.get(m) is not None]))
        for k, (s, values) in enumerate(groups):
            if values:
                fig.add_trace(go.Box(y=values, name=s, boxmean=True, legendgroup=s, showlegend=col == 1,
                                     marker_color=palette[k % len(palette)]), row=1, col=col)
    fig.update_layout(title=f"{report.name}: scores vs the baseline, per rewording tier", height=520)
    paths += save_figure(fig, folder / "distributions", static)
    scatter = go.Figure()
    points: dict[tuple[str, str], dict[str, Any]] = {}  # one per variant, as the correlation has them
    for p in report.pairs:
        if p.get("text_cosine") is not None and p.get("cosine") is not None:
            pt = points.setdefault((p["prompt_id"], p["variant"]), {**p, "y": []})
            pt["y"].append(p["cosine"])
    for k, s in enumerate(sets):
        pts = [pt for pt in points.values() if pt["set"] == s]
        if pts:
            scatter.add_trace(go.Scatter(
                x=[pt["text_cosine"] for pt in pts], y=[float(np.mean(pt["y"])) for pt in pts], mode="markers",
                name=s, marker={"color": palette[k % len(palette)], "opacity": 0.7},
                text=[f"{pt['prompt_id']} {pt['variant']} ({len(pt['y'])} seeds)<br>{pt['prompt']}" for pt in pts],
                hoverinfo="text+x+y"))
    overall = next((c for c in report.correlations if c["set"] == "all"), None)
    subtitle = ""
    if overall and overall["pearson"] is not None:
        ci = (f" [{fmt(overall['pearson_low'])}, {fmt(overall['pearson_high'])}]"
              if overall["pearson_low"] is not None else " (n too small for an interval)")
        subtitle = (f" (Pearson r = {fmt(overall['pearson'])}{ci}, Spearman ρ = {fmt(overall['spearman'])}; "
                    f"{overall['variants']} variants, {overall['prompts']} prompts)")
    scatter.update_layout(title=f"Text distance vs audio distance{subtitle}", height=560,
                          xaxis_title="text cosine to the baseline prompt",
                          yaxis_title="clip latent cosine to the baseline clip (mean over seeds)")
    paths += save_figure(scatter, folder / "text_vs_audio", static)
    return paths
