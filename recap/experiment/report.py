"""Tables and charts of an experiment folder, rebuilt from its unit files alone.

Writes, next to ``units/``: ``pairs.csv`` (one row per variant clip: its scores against the
baseline of the same prompt and seed), ``clips.csv`` (one row per clip, with reconstruction
scores when asked for), ``summary.csv`` and ``summary.md`` (the thesis tables: mean, std,
variance and n, plus a bootstrap interval of the mean; by rewording tier (the thesis's batches), by
category, by complexity)
and two plotly charts under ``charts/``. Rows follow the prompt file's order, then the
variants', then the seeds', so the same units always give the same files.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from recap.metrics import similarity as metrics
from recap.experiment.runner import (
    PAIR_METRICS,
    load_prompts,
    plan_variants,
    read_config_json,
    read_unit,
    recaption_path,
    unit_dir,
)
from recap.paths import atomic_write_bytes, inside
from recap.generation.runs import read_json
from recap.variants import tier_of

log = logging.getLogger(__name__)

LATENT_METRICS = ("cosine", "l2", "l2_raw", "mse")
RECONSTRUCTION_METRICS = ("latent_mse", "latent_l2_raw", "latent_l2", "latent_cosine", "audio_mse")
KEY_COLUMNS = ("prompt_id", "category", "complexity", "variant", "tier", "method", "seed")
PAIR_COLUMNS = KEY_COLUMNS + PAIR_METRICS + ("prompt",)
CLIP_COLUMNS = KEY_COLUMNS + ("audio", "latent") + RECONSTRUCTION_METRICS
TITLES = {
    "text_cosine": "Text cosine (↓)", "cosine": "Latent cosine (↓)", "l2": "Unit L2 (↑)", "l2_raw": "Raw L2 (↑)",
    "mse": "MSE (↑)", "latent_mse": "Latent MSE", "latent_l2_raw": "Latent raw L2", "latent_l2": "Latent unit L2",
    "latent_cosine": "Latent cosine", "audio_mse": "Waveform MSE",
}


@dataclass(frozen=True)
class TableRow:
    """One line of a summary table: a metric over one group of one rewording tier ("set").

    ``set`` names the tier as "<method>, tier <k>" (e.g. "synonym, tier 1"; "token, tier 0"
    is a learned token in the baseline prompt); ``group`` is "all", a category or a complexity.
    """

    table: str
    group: str
    set: str
    metric: str
    mean: float
    std: float
    variance: float
    n: int
    ci_low: float
    ci_high: float


@dataclass
class ExperimentReport:
    """Everything read and summarised from one experiment folder.

    Attributes:
        units_expected: Units the plan has for the prompts started so far; ``units_found`` exist.
        missing: Names (``<prompt-id>/<label>__seed<k>``) of planned units not written yet.
        pairs: One dict per variant unit (PAIR_COLUMNS).
        clips: One dict per unit (CLIP_COLUMNS).
        rows: The summary tables.
        correlations: Per tier and over all: n, Pearson r and Spearman rho (with p-values)
            between text cosine and latent cosine — does a bigger rewording move the audio more?
        notes: Things a reader must know (random weights, unfinished work).
    """

    out_dir: Path
    name: str
    model: dict[str, Any]
    seeds: list[int]
    prompts: int
    units_expected: int
    units_found: int
    missing: list[str]
    pairs: list[dict[str, Any]]
    clips: list[dict[str, Any]]
    rows: list[TableRow]
    correlations: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.95

    def table(self, name: str) -> list[TableRow]:
        return [r for r in self.rows if r.table == name]


def set_name(method: str, tier: int) -> str:
    return f"{method}, tier {tier}"


def _set_order(name: str) -> tuple[int, int, str]:
    method, tier = name.rsplit(", tier ", 1)
    return (method == "token", int(tier), method)


def collect_units(out_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], int, list[str], list[str]]:
    """Reads the setup and every finished unit, in plan order.

    Returns:
        (config.json, unit records, units expected, missing unit names, prompts not started).
    """
    setup = read_config_json(out_dir)
    if setup is None:
        raise ValueError(f"{out_dir} is not an experiment folder (no config.json)")
    cfg = setup["config"]
    rows = load_prompts(out_dir / "prompts.csv")
    placeholders = [t["placeholder"] for t in setup.get("tokens", [])]
    units, missing, not_started, expected = [], [], [], 0
    for row in rows:
        try:
            cached = read_json(recaption_path(out_dir, row.id))
            if not isinstance(cached, dict) or not isinstance(cached.get("variants"), list):
                raise ValueError("not a recaption cache")
        except (OSError, ValueError):
            not_started.append(row.id)
            continue
        variants = plan_variants(row.prompt, cached["variants"], placeholders, cfg["tokens"]["templates"])
        if len(variants) == 1:
            continue  # nothing to compare with: the run skips such prompts
        for v in variants:
            for seed in setup["seeds"]:
                expected += 1
                record = read_unit(out_dir, row.id, v.label, seed)
                if record is None:
                    missing.append(f"{row.id}/{v.label}__seed{seed}")
                else:
                    units.append(record)
    return setup, units, expected, missing, not_started


def _summaries(table: str, records: Sequence[dict[str, Any]], group_of: str | None, names: Iterable[str],
               confidence: float, n_boot: int) -> list[TableRow]:
    out = []
    sets = sorted({r["set"] for r in records}, key=_set_order)
    groups = ["all"] if group_of is None else list(dict.fromkeys(r[group_of] for r in records))
    for metric in names:
        for s in sets:
            for g in groups:
                values = [float(r[metric]) for r in records if r["set"] == s and r.get(metric) is not None
                          and (group_of is None or r[group_of] == g)]
                if values:
                    m = metrics.summarize(values, confidence, n_boot)
                    out.append(TableRow(table, g, s, metric, m.mean, m.std, m.variance, m.n, m.ci_low, m.ci_high))
    return out


def _seed_pairs(out_dir: Path, units: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Same prompt and variant, different seeds: how much the audio moves with the noise alone."""
    from safetensors.torch import load_file

    by_prompt: dict[str, dict[tuple[str, int], Any]] = {}
    info = {}
    for u in units:
        try:  # a unit record names its latent file; one that leads out of its folder is not read
            path = inside(unit_dir(out_dir, u["prompt_id"]), str(u["latent"]))
        except ValueError:
            log.warning("unit %s/%s names a latent outside its folder; skipped", u.get("prompt_id"), u.get("variant"))
            continue
        if path.is_file():
            by_prompt.setdefault(u["prompt_id"], {})[(u["variant"], u["seed"])] = load_file(str(path))["z"]
            info[(u["prompt_id"], u["variant"])] = u
    out = []
    for pid, latents in by_prompt.items():
        for p in metrics.seed_pairs(latents):
            u = info[(pid, p.variant_a)]
            out.append({"set": set_name(u["method"], tier_of(u)), "category": u["category"],
                        **{m: getattr(p, m) for m in names}})
    return out


def _correlations(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    from scipy import stats

    out = []
    sets = sorted({p["set"] for p in pairs}, key=_set_order)
    for s in sets + ["all"]:
        xy = [(p["text_cosine"], p["cosine"]) for p in pairs if (s == "all" or p["set"] == s)
              and p.get("text_cosine") is not None and p.get("cosine") is not None]
        row: dict[str, Any] = {"set": s, "n": len(xy), "pearson": None, "pearson_p": None,
                               "spearman": None, "spearman_p": None}
        x, y = np.array([a for a, _ in xy]), np.array([b for _, b in xy])
        # Undefined for fewer than 3 points or a constant series; left empty rather than NaN.
        if len(xy) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            r, rp = stats.pearsonr(x, y)
            rho, sp = stats.spearmanr(x, y)
            row.update(pearson=float(r), pearson_p=float(rp), spearman=float(rho), spearman_p=float(sp))
        out.append(row)
    return out


def build_report(out_dir: str | Path, write: bool = True) -> ExperimentReport:
    """Reads an experiment folder and (re)writes its tables and charts.

    Works on a finished or an unfinished experiment (the summary says how many units are in)
    and needs no model: everything comes from the unit files.

    Raises:
        ValueError: ``out_dir`` is not an experiment folder.
    """
    out_dir = Path(out_dir)
    setup, units, expected, missing, not_started = collect_units(out_dir)
    cfg = setup["config"]
    wanted = [m for m in PAIR_METRICS if m in cfg["metrics"]]
    conf, n_boot = float(cfg["confidence"]), int(cfg["n_boot"])
    for u in units:
        u["tier"] = tier_of(u)
        u["set"] = set_name(u["method"], u["tier"])
    pairs = [{**{c: u.get(c) for c in PAIR_COLUMNS}, "set": u["set"]} for u in units if u["variant"] != "baseline"]
    clips = [{**{c: u.get(c) for c in KEY_COLUMNS + ("audio", "latent")}, **(u.get("reconstruction") or {}),
              "set": u["set"]} for u in units]
    rows = _summaries("by_tier", pairs, None, wanted, conf, n_boot)
    rows += _summaries("by_category", pairs, "category", wanted, conf, n_boot)
    rows += _summaries("by_complexity", pairs, "complexity", wanted, conf, n_boot)
    latent = [m for m in LATENT_METRICS if m in wanted]
    seed_records = _seed_pairs(out_dir, units, latent) if len(setup["seeds"]) > 1 and latent else []
    rows += _summaries("seed_variance", seed_records, None, latent, conf, n_boot)
    if "reconstruction" in cfg["metrics"]:
        rows += _summaries("reconstruction", clips, None, RECONSTRUCTION_METRICS, conf, n_boot)
    model = setup.get("model", {})
    notes = []
    if model.get("random_weights"):
        notes.append(f"{model.get('name')} has random weights: its audio is noise, so these numbers only exercise "
                     "the pipeline and say nothing about wording.")
    if missing or not_started:
        notes.append(f"Unfinished: {len(missing)} planned unit(s) missing and {len(not_started)} prompt(s) not "
                     "started; rerun `recap experiment run` with the same config to complete it.")
    report = ExperimentReport(
        out_dir=out_dir, name=cfg["name"], model=model, seeds=list(setup["seeds"]), prompts=setup["prompts"]["selected"],
        units_expected=expected, units_found=len(units), missing=missing, pairs=pairs, clips=clips, rows=rows,
        correlations=_correlations(pairs) if "text_cosine" in wanted and "cosine" in wanted else [],
        notes=notes, confidence=conf,
    )
    if write:
        _write(out_dir / "pairs.csv", _csv(PAIR_COLUMNS, pairs))
        _write(out_dir / "clips.csv", _csv(CLIP_COLUMNS, clips))
        _write(out_dir / "summary.csv", _csv(tuple(f.name for f in fields(TableRow)), [asdict(r) for r in rows]))
        _write(out_dir / "summary.md", markdown(report).encode())
        write_charts(report, out_dir / "charts", seed_records)
        log.info("wrote the tables of %s (%d of %d units)", out_dir, len(units), expected)
    return report


def _write(path: Path, data: bytes) -> None:
    # Unchanged files are left alone, so a report on a finished experiment touches nothing.
    if not (path.is_file() and path.read_bytes() == data):
        atomic_write_bytes(path, data)


def _csv(columns: Sequence[str], records: Iterable[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in records:
        w.writerow(["" if r.get(c) is None else repr(r[c]) if isinstance(r[c], float) else r[c] for c in columns])
    return buf.getvalue().encode()


def fmt(x: float | None) -> str:
    """Four significant digits, as a table cell."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.4g}"


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def table_cells(r: TableRow, with_group: bool = False) -> list[str]:
    """A row as the thesis's columns plus the interval: metric, tier, (group), mean, std, variance, n, CI."""
    cells = [TITLES.get(r.metric, r.metric), r.set] + ([r.group] if with_group else [])
    return cells + [fmt(r.mean), fmt(r.std), fmt(r.variance), str(r.n), f"[{fmt(r.ci_low)}, {fmt(r.ci_high)}]"]


def markdown(report: ExperimentReport) -> str:
    """The tables as Markdown, in the thesis's layout (Tables 5.1-5.4) plus intervals and correlations."""
    ci = f"{report.confidence:.0%} CI"
    head = ["Metric", "Batch", "Mean", "Std. deviation", "Variance", "n", ci]
    lines = [f"# {report.name}", "",
             f"Model `{report.model.get('name')}` · {report.prompts} prompts · seeds "
             f"{', '.join(map(str, report.seeds))} · {report.units_found} of {report.units_expected} units.", "",
             "Scores compare each clip with the baseline clip of the same prompt and seed. Cosine: lower is "
             "more different (↓); L2 and MSE: higher is more different (↑). Intervals: percentile bootstrap "
             "of the mean.", ""]
    sections = [
        ("Audio vs baseline, by rewording tier (thesis Tables 5.1 and 5.3: its batches)", "by_tier", [m for m in LATENT_METRICS]),
        ("Text prompt vs baseline, by rewording tier (thesis Table 5.2)", "by_tier", ["text_cosine"]),
        ("Generation variance: same prompt and wording, different seeds", "seed_variance", list(LATENT_METRICS)),
        ("Reconstruction through the VAE (thesis Table 5.4)", "reconstruction", list(RECONSTRUCTION_METRICS)),
    ]
    for title, table, names in sections:
        rows = [r for r in report.table(table) if r.metric in names]
        if rows:
            lines += [f"## {title}", ""] + _md_table(head, (table_cells(r) for r in rows)) + [""]
    if report.correlations:
        lines += ["## Does a bigger rewording move the audio more?", "",
                  "Correlation between text cosine and latent cosine over variant clips.", ""]
        lines += _md_table(["Batch", "n", "Pearson r", "p", "Spearman ρ", "p"], (
            [c["set"], str(c["n"]), fmt(c["pearson"]), fmt(c["pearson_p"]), fmt(c["spearman"]), fmt(c["spearman_p"])]
            for c in report.correlations)) + [""]
    for title, table, label in (("By category", "by_category", "Category"), ("By complexity", "by_complexity", "Complexity")):
        rows = report.table(table)
        if rows:
            lines += [f"## {title}", ""]
            lines += _md_table(head[:2] + [label] + head[2:], (table_cells(r, True) for r in rows)) + [""]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


def write_charts(report: ExperimentReport, folder: Path, seed_records: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """``distributions.html`` (each score per rewording tier, with seed variance beside it) and
    ``text_vs_audio.html`` (text cosine against latent cosine, one point per variant clip).

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
    sets = sorted({p["set"] for p in report.pairs}, key=_set_order)
    paths = []
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=[TITLES[m] for m in names])
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
    for k, s in enumerate(sets):
        pts = [p for p in report.pairs if p["set"] == s and p.get("text_cosine") is not None and p.get("cosine") is not None]
        if pts:
            scatter.add_trace(go.Scatter(
                x=[p["text_cosine"] for p in pts], y=[p["cosine"] for p in pts], mode="markers", name=s,
                marker={"color": palette[k % len(palette)], "opacity": 0.7},
                text=[f"{p['prompt_id']} {p['variant']} seed {p['seed']}<br>{p['prompt']}" for p in pts],
                hoverinfo="text+x+y"))
    overall = next((c for c in report.correlations if c["set"] == "all"), None)
    subtitle = (f" (Pearson r = {fmt(overall['pearson'])}, Spearman ρ = {fmt(overall['spearman'])}, n = {overall['n']})"
                if overall and overall["pearson"] is not None else "")
    scatter.update_layout(title=f"Text distance vs audio distance{subtitle}", height=560,
                          xaxis_title="text cosine to the baseline prompt", yaxis_title="latent cosine to the baseline clip")
    paths.append(_write_figure(scatter, folder / "text_vs_audio.html", "text-vs-audio"))
    return paths


def _write_figure(fig: Any, path: Path, div_id: str) -> Path:
    # A fixed div id keeps the file the same when the data are the same.
    _write(path, fig.to_html(include_plotlyjs="plotly.min.js", full_html=True, div_id=div_id).encode())
    return path
