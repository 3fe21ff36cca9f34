"""The charts of an experiment report: score distributions per tier, and text vs audio distance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recap.experiment.layout import write_if_changed
from recap.experiment.stats import CLIP_LATENT, LATENT_METRICS, fmt, set_order, title
from recap.paths import atomic_write_bytes

if TYPE_CHECKING:
    from recap.experiment.report import ExperimentReport


def write_charts(report: ExperimentReport, folder: Path, seed_records: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """``distributions.html`` (each score per rewording tier, with seed variance beside it) and
    ``text_vs_audio.html`` (text cosine against clip latent cosine, one point per variant: the mean
    over its seeds, the unit the correlation is computed on).

    The charts load ``plotly.min.js`` from their own folder (written once), so they work offline.
    """
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs
    from plotly.subplots import make_subplots

    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / "plotly.min.js"
    if not bundle.is_file():
        atomic_write_bytes(bundle, get_plotlyjs().encode())
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
    paths.append(_write_figure(fig, folder / "distributions.html", "distributions"))
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
    paths.append(_write_figure(scatter, folder / "text_vs_audio.html", "text-vs-audio"))
    return paths


def _write_figure(fig: Any, path: Path, div_id: str) -> Path:
    # A fixed div id keeps the file the same when the data are the same.
    write_if_changed(path, fig.to_html(include_plotlyjs="plotly.min.js", full_html=True, div_id=div_id).encode())
    return path
