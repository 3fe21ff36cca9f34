"""Tables and charts of an experiment folder, rebuilt from its unit files alone.

Writes, next to ``units/``: ``pairs.csv`` (one row per variant clip: its clip-latent scores against
the baseline of the same prompt and seed), ``clips.csv`` (one row per clip, with reconstruction
scores when asked for), ``summary.csv``, ``summary.md`` and ``summary.tex`` (the thesis tables: mean, std, variance,
plus an interval of the mean over prompts, with its n, unit and method; by rewording tier (the
thesis's batches), by category, by complexity; generation variance; the wording effect against
generation variance; the reconstruction check beside a seed change and the closest rewording) and
two plotly charts under ``charts/``. Rows follow the prompt file's order, then the variants', then
the seeds', so the same units always give the same files.

Statistics (DESIGN.md): a pooled row holds several variants and seeds of each prompt, which share
it, so its interval is cluster-robust over prompts; the text-vs-audio correlation uses one point
per variant (its text cosine against the mean over its seeds of the latent measure) with a cluster
bootstrap over prompts.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recap.analysis.clip_scores import COMPARISONS, RECONSTRUCTION_METRICS
from recap.analysis import documents
from recap.analysis.documents import Block, Heading, Table
from recap.analysis.tables import ROW_COLUMNS, SummaryRow, interval_text, make_row, summarize
from recap.experiment.stats import (
    CLIP_LATENT,
    LATENT_METRICS,
    comparisons,
    fmt,
    set_name,
    set_order,
    text_audio_correlations,
    title,
    wording_effect,
)
from recap.metrics import similarity as metrics
from recap.experiment.config import PAIR_METRICS, load_prompts
from recap.experiment.layout import plan_variants, read_config_json, read_unit, recaption_path, unit_dir, write_if_changed
from recap.paths import inside
from recap.generation.runs import read_json
from recap.variants import tier_of

log = logging.getLogger(__name__)

KEY_COLUMNS = ("prompt_id", "category", "complexity", "variant", "tier", "method", "seed")
PAIR_COLUMNS = KEY_COLUMNS + PAIR_METRICS + ("latent", "prompt")
CLIP_COLUMNS = KEY_COLUMNS + ("audio", "latent") + RECONSTRUCTION_METRICS
@dataclass
class ExperimentReport:
    """Everything read and summarised from one experiment folder.

    Attributes:
        units_expected: Units the plan has for the prompts started so far; ``units_found`` exist.
        missing: Names (``<prompt-id>/<label>__seed<k>``) of planned units not written yet.
        pairs: One dict per variant unit (PAIR_COLUMNS).
        clips: One dict per unit (CLIP_COLUMNS).
        rows: The summary tables.
        correlations: Per tier and over all: Pearson r and Spearman rho between text cosine and
            clip latent cosine, one point per variant (mean over its seeds), each with a cluster
            bootstrap interval over prompts, and the numbers of variants and prompts — does a
            bigger rewording move the audio more?
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
    rows: list[SummaryRow]
    correlations: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.95

    def table(self, name: str) -> list[SummaryRow]:
        return [r for r in self.rows if r.table == name]


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
               confidence: float) -> list[SummaryRow]:
    """Rows per metric, rewording tier ("set") and group; intervals cluster-robust over prompts."""
    out = []
    sets = sorted({r["set"] for r in records}, key=set_order)
    groups = ["all"] if group_of is None else list(dict.fromkeys(r[group_of] for r in records))
    for metric in names:
        for s in sets:
            for g in groups:
                kept = [r for r in records if r["set"] == s and r.get(metric) is not None
                        and (group_of is None or r[group_of] == g)]
                if kept:
                    m = summarize([float(r[metric]) for r in kept], confidence, unit="prompt",
                                  clusters=[r["prompt_id"] for r in kept])
                    out.append(make_row(table, group_of or "all", g, metric, m, set=s,
                                        latent=CLIP_LATENT if metric in LATENT_METRICS else ""))
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
            out.append({"set": set_name(u["method"], tier_of(u)), "category": u["category"], "prompt_id": pid,
                        "variant": p.variant_a, "seed_a": p.seed_a, "seed_b": p.seed_b,
                        **{m: getattr(p, m) for m in names}})
    return out


def build_report(out_dir: str | Path, write: bool = True, static: bool = False) -> ExperimentReport:
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
    pairs = [{**{c: u.get(c) for c in PAIR_COLUMNS}, "latent": CLIP_LATENT, "set": u["set"]}
             for u in units if u["variant"] != "baseline"]
    clips = [{**{c: u.get(c) for c in KEY_COLUMNS + ("audio", "latent")},
              **{m: (u.get("reconstruction") or {}).get(m) for m in RECONSTRUCTION_METRICS}, "set": u["set"]}
             for u in units]
    rows = _summaries("by_tier", pairs, None, wanted, conf)
    rows += _summaries("by_category", pairs, "category", wanted, conf)
    rows += _summaries("by_complexity", pairs, "complexity", wanted, conf)
    latent = [m for m in LATENT_METRICS if m in wanted]
    seed_records = _seed_pairs(out_dir, units, latent) if len(setup["seeds"]) > 1 and latent else []
    rows += _summaries("seed_variance", seed_records, None, latent, conf)
    if "cosine" in wanted:
        rows += wording_effect(pairs, seed_records, conf)
    if "reconstruction" in cfg["metrics"]:
        by_comparison = comparisons(units)
        for name in COMPARISONS:
            kept = [r for r in by_comparison if r["comparison"] == name]
            rows += [dataclasses.replace(r, group_kind="comparison", group=name,
                                         latent=CLIP_LATENT if r.metric.startswith("latent_") else "")
                     for r in _summaries("reconstruction", kept, None, RECONSTRUCTION_METRICS, conf)]
    model = setup.get("model", {})
    notes = []
    if model.get("random_weights"):
        notes.append(f"{model.get('name')} has random weights: its audio is noise, so these numbers only exercise "
                     "the pipeline and say nothing about wording.")
    if missing or not_started:
        notes.append(f"Unfinished: {len(missing)} planned unit(s) missing and {len(not_started)} prompt(s) not "
                     "started; rerun `recap experiment run` with the same config to complete it.")
    correlations = (text_audio_correlations(pairs, confidence=conf, n_boot=n_boot)
                    if "text_cosine" in wanted and "cosine" in wanted else [])
    report = ExperimentReport(
        out_dir=out_dir, name=cfg["name"], model=model, seeds=list(setup["seeds"]), prompts=setup["prompts"]["selected"],
        units_expected=expected, units_found=len(units), missing=missing, pairs=pairs, clips=clips, rows=rows,
        correlations=correlations, notes=notes, confidence=conf,
    )
    if write:
        write_if_changed(out_dir / "pairs.csv", _csv(PAIR_COLUMNS, pairs))
        write_if_changed(out_dir / "clips.csv", _csv(CLIP_COLUMNS, clips))
        write_if_changed(out_dir / "summary.csv", _csv(ROW_COLUMNS, [asdict(r) for r in rows]))
        write_if_changed(out_dir / "summary.md", markdown(report).encode())
        write_if_changed(out_dir / "summary.tex", documents.latex(document(report), report.name).encode())
        from recap.experiment.charts import write_charts

        write_charts(report, out_dir / "charts", seed_records, static)
        log.info("wrote the tables of %s (%d of %d units)", out_dir, len(units), expected)
    return report


def _csv(columns: Sequence[str], records: Iterable[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in records:
        w.writerow(["" if r.get(c) is None else repr(r[c]) if isinstance(r[c], float) else r[c] for c in columns])
    return buf.getvalue().encode()


def table_cells(r: SummaryRow, with_group: bool = False) -> list[str]:
    """A row as the thesis's columns plus the interval: metric, tier, (group), mean, std, variance,
    n (with its unit), interval ("n too small" below 3 units), its method."""
    cells = [title(r.metric, r.latent), r.set or r.group] + ([r.group] if with_group else [])
    return cells + [fmt(r.mean), fmt(r.std), fmt(r.variance), f"{r.n} {r.unit}{'' if r.n == 1 else 's'}",
                    interval_text(r, fmt), r.method]


def correlation_cells(c: dict[str, Any], confidence: float) -> list[str]:
    """A correlation row: tier, variants, prompts, Pearson r [interval], Spearman ρ [interval]."""
    def cell(method: str) -> str:
        if c[method] is None:
            return ""
        if c[f"{method}_low"] is None:
            return f"{fmt(c[method])} (n too small)"
        return f"{fmt(c[method])} [{fmt(c[f'{method}_low'])}, {fmt(c[f'{method}_high'])}]"

    return [c["set"], str(c["variants"]), str(c["prompts"]), cell("pearson"), cell("spearman")]


CORRELATION_HEAD = ["Tier", "Variants", "Prompts", "Pearson r [{ci}]", "Spearman ρ [{ci}]"]
TABLE_HEAD = ["Metric", "Tier", "Mean", "Std. deviation", "Variance", "n", "{ci}", "Method"]
SECTIONS = [  # (title, table, metrics); the thesis tables in its order, then the new ones
    ("Audio vs baseline, by rewording tier (thesis Tables 5.1 and 5.3: its batches)", "by_tier", LATENT_METRICS),
    ("Text prompt vs baseline, by rewording tier (thesis Table 5.2)", "by_tier", ("text_cosine",)),
    ("Generation variance: same prompt and wording, different seeds", "seed_variance", LATENT_METRICS),
    ("Wording effect against generation variance: how much further than a new seed a rewording moves the clip "
     "(> 1: further)", "wording_effect", ("distance_ratio",)),
    ("Reconstruction through the autoencoder (thesis Table 5.4), beside a seed change and the closest rewording",
     "reconstruction", RECONSTRUCTION_METRICS),
]
LATENT_NOTE = ("Latent cosine, unit L2, raw L2 and MSE are measured on the clip latent: the saved audio encoded "
               "again by the model's autoencoder.")
INTERVAL_NOTE = ("Intervals: over prompts (cluster-robust t: the variants and seeds of a prompt share it); none "
                 "below 3 prompts (\"n too small\"). Ratios: delta method, clustered over prompts.")


def document(report: ExperimentReport) -> list[Block]:
    """The tables in the thesis's layout (Tables 5.1-5.4) plus intervals and correlations, as blocks
    that :mod:`recap.analysis.documents` writes as Markdown and LaTeX."""
    ci = f"{report.confidence:.0%} CI"
    head = [h.format(ci=ci) for h in TABLE_HEAD]
    blocks: list[Block] = [
        Heading(report.name, 1),
        f"Model `{report.model.get('name')}` · {report.prompts} prompts · seeds "
        f"{', '.join(map(str, report.seeds))} · {report.units_found} of {report.units_expected} units.",
        "Scores compare each clip with the baseline clip of the same prompt and seed. Cosine: lower is "
        "more different (↓); L2 and MSE: higher is more different (↑). " + LATENT_NOTE + " " + INTERVAL_NOTE,
    ]
    for heading, table, names in SECTIONS:
        rows = [r for r in report.table(table) if r.metric in names]
        if rows:
            with_group = table == "reconstruction"
            headers = head[:2] + ["Comparison"] + head[2:] if with_group else head
            blocks += [Heading(heading), Table(headers, [table_cells(r, with_group) for r in rows], heading)]
    if report.correlations:
        blocks += [Heading("Does a bigger rewording move the audio more?"),
                   "Correlation between text cosine and clip latent cosine, one point per variant (the mean over "
                   "its seeds; every seed shares the variant's text cosine), with a cluster bootstrap interval over "
                   "prompts.",
                   Table([h.format(ci=ci) for h in CORRELATION_HEAD],
                         [correlation_cells(c, report.confidence) for c in report.correlations],
                         "Text cosine vs clip latent cosine")]
    for heading, table, label in (("By category", "by_category", "Category"),
                                  ("By complexity", "by_complexity", "Complexity")):
        rows = report.table(table)
        if rows:
            blocks += [Heading(heading), Table(head[:2] + [label] + head[2:], [table_cells(r, True) for r in rows],
                                               heading)]
    if report.notes:
        blocks += [Heading("Notes")] + [f"- {n}" for n in report.notes]
    return blocks


def markdown(report: ExperimentReport) -> str:
    """The report's tables as Markdown (``summary.md``)."""
    return documents.markdown(document(report))
