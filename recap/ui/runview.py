"""Turning a run folder into what the compare tab shows: the grid, spectrograms, tables, a zip.

Pure functions of files on disk: no Gradio here, so they are tested directly. The run a visitor
is looking at is kept as a small JSON-ready dict (:func:`run_view`) in their ``gr.State``, and
so are the ids of the runs their session made (:func:`remember_run`): on a public server those
are the only runs its run browser lists (:func:`visible_runs`) or opens (:func:`session_run_dir`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recap.errors import BadInput
from recap.limits import whole
from recap.paths import inside
from recap.analysis.spectrogram import (
    N_FFT,
    THESIS_BINS,
    SpectrogramConfig,
    band_caption,
    difference_grid,
    hz_to_bins,
    spectrogram_grid,
    spectrogram_of,
)
from recap.backends.registry import find_spec

PAIR_HEADERS = ("variant", "seed", "prompt", "cosine", "L2 (unit)", "L2 raw", "MSE", "text cosine")
SUMMARY_HEADERS = ("table", "group", "metric", "mean", "std", "variance", "n", "CI low", "CI high")
TABLES = ("vs_baseline", "seed_variance", "text", "reconstruction", "clap", "music")
N_BINS = 512  # rows of the thesis's STFT (n_fft = 1022)
# The spectrogram range presets: (label, value) of the compare tab's radio.
RANGE_CHOICES = (("whole range", "whole"), (f"thesis: bins {THESIS_BINS[0]}–{THESIS_BINS[1]}", "thesis"),
                 ("band in Hz", "hz"))


def _r(x: Any, digits: int = 4) -> Any:
    return None if x is None else round(float(x), digits)


def run_view(manifest: Any, analysis: Any) -> dict[str, Any]:
    """What the page needs to show a run: layout, files, per-clip scores and the tables.

    Args:
        manifest: The run's ``RunManifest`` (with ``path``).
        analysis: Its ``RunAnalysis``.

    Returns:
        A JSON-ready dict: run_dir, run_id, labels (rows), seeds (columns), prompts, audio
        (``"label|seed"`` -> file), scores (``"label|seed"`` -> cosine / l2 to the baseline of
        the same seed), pairs and summaries (table rows), model, notes; tiers (label -> rewording
        tier), baseline (the row the scores compare with) and latent (which latent they use).
    """
    from recap.variants import tier_of

    text = {t["variant"]: t["cosine"] for t in analysis.text}
    return {
        "run_dir": str(manifest.path),
        "run_id": manifest.run_id,
        "labels": [v["label"] for v in manifest.variants],
        "seeds": list(manifest.seeds),
        "prompts": {v["label"]: v["prompt"] for v in manifest.variants},
        "tiers": {v["label"]: tier_of(v) for v in manifest.variants},
        "baseline": analysis.config.baseline,
        "latent": analysis.latent,
        "unreadable": {v["label"]: v["unreadable"] for v in manifest.variants if v.get("unreadable")},
        "audio": {f"{c.variant}|{c.seed}": str(manifest.audio_path(c)) for c in manifest.clips},
        "scores": {f"{p.variant_b}|{p.seed_b}": {"cosine": p.cosine, "l2": p.l2} for p in analysis.baseline_pairs},
        "pairs": [[p.variant_b, p.seed_b, next(v["prompt"] for v in manifest.variants if v["label"] == p.variant_b),
                   _r(p.cosine), _r(p.l2), _r(p.l2_raw), _r(p.mse, 6), _r(text.get(p.variant_b))]
                  for p in analysis.baseline_pairs],
        "summaries": [[s.table, s.group, s.metric, _r(s.mean), _r(s.std), _r(s.variance, 6), s.n, _r(s.ci_low),
                       _r(s.ci_high)] for s in analysis.summaries],
        "model": manifest.model,
        "notes": list(analysis.notes),
        "timings": manifest.timings,
    }


def summary_rows(view: dict[str, Any] | None, table: str) -> list[list[Any]]:
    return [r for r in (view or {}).get("summaries", []) if r[0] == table]


# Why a summary table is empty, and what fills it.
_EMPTY_TABLES = {
    "clap": "CLAP scores are off in the app: they need a second model (the CLAP weights). To add them, download "
            "the run (.zip, or its folder under `runs/`) and run `recap analyze RUN_DIR --clap`.",
    "music": "Music metrics are measured only when *Music metrics* is ticked before *Generate*: tick it and "
             "generate again.",
    "reconstruction": "The reconstruction check runs only when it is ticked before *Generate* (or *Open*).",
    "seed_variance": "Seed variance needs at least two seeds: give two or more in *Seeds* and generate again.",
    "vs_baseline": "Needs a baseline and at least one other variant of the same seed.",
    "text": "Needs at least one variant besides the baseline.",
}


def table_note(view: dict[str, Any] | None, table: str) -> str:
    """What to do when summary ``table`` is empty ("" when it has rows)."""
    if not view:
        return "*No run yet: generate a grid (or open a saved run) to fill the tables.*"
    if summary_rows(view, table):
        return ""
    return f"*{_EMPTY_TABLES.get(table, 'This table is empty for this run.')}*"


def check_bins(lo: float, hi: float) -> tuple[int, int]:
    """A valid half-open bin range [lo, hi) of the 512 rows; :class:`BadInput` names the bad one."""
    lo_i = whole("lowest bin shown", lo, 0, N_BINS - 1)
    hi_i = whole("highest bin shown", hi, 1, N_BINS)
    if not lo_i < hi_i:
        raise BadInput(f"bin range {lo_i}-{hi_i} must satisfy 0 <= low < high <= {N_BINS}")
    return lo_i, hi_i


def spectrograms(view: dict[str, Any], lo: float, hi: float, max_frames: int = 400,
                 only: Sequence[tuple[str, int]] | None = None) -> dict[tuple[str, int], Any]:
    """The clipped spectrogram of every clip of the run in grid order (rows of variants), or of the
    ``only`` (variant, seed) cells in that order."""
    from recap.audio_io import load_audio

    config = SpectrogramConfig(bins=check_bins(lo, hi), max_frames=max_frames)
    cells = only if only is not None else [(label, seed) for label in view["labels"] for seed in view["seeds"]]
    out = {}
    for label, seed in cells:
        path = view["audio"].get(f"{label}|{seed}")
        if path:
            clip = load_audio(path, max_seconds=None, allow_silent=True)
            out[(label, int(seed))] = spectrogram_of(clip.audio, clip.sample_rate, config)
    return out


def grid_figures(view: dict[str, Any], specs: dict[tuple[str, int], Any]) -> tuple[Any, Any]:
    """The whole grid on one colour scale, and the variant − baseline differences (or None)."""
    first = next(iter(specs.values()))
    band = band_caption(first.first_bin, first.first_bin + first.db.shape[0], first.sample_rate, first.n_fft)
    fig = spectrogram_grid(specs, f"Run {view['run_id']}: {band}, dB re full scale", max_frames=400)
    fig.update_layout(width=None)
    diff = None
    if "baseline" in view["labels"] and len(view["labels"]) > 1:
        diff = difference_grid(specs, "baseline", f"Variant − baseline, same seed ({band}; ±30 dB, silence blank)",
                               max_frames=400)
        diff.update_layout(width=None)
    return fig, diff


def cell_figures(specs: dict[tuple[str, int], Any]) -> list[Any]:
    """One small figure per clip, in ``specs`` order, all on the same dB colour scale."""
    zmax = max(float(s.db.max()) for s in specs.values())
    zmin = max(min(float(s.db.min()) for s in specs.values()), zmax - 90.0)  # as spectrogram_grid
    out = []
    for key, spec in specs.items():
        fig = spectrogram_grid({key: spec}, title="", max_frames=300)
        fig.update_layout(height=190, width=None, margin={"l": 36, "r": 6, "t": 24, "b": 28},
                          coloraxis={"cmin": zmin, "cmax": zmax, "colorbar": {"thickness": 8, "title": {"text": "dB"}}})
        fig.update_xaxes(title_text=None)
        out.append(fig)
    return out


def model_sample_rate(name: Any) -> int | None:
    """The sample rate model ``name`` makes, known without loading it (None for an unknown name)."""
    spec = find_spec(name)
    return None if spec is None else spec.sample_rate


def view_sample_rate(view: dict[str, Any] | None, model: Any = None) -> int | None:
    """The sample rate of the run on screen, else of the chosen model."""
    if view and int(view["model"].get("sample_rate") or 0):
        return int(view["model"]["sample_rate"])
    return model_sample_rate(model)


def bins_caption(view: dict[str, Any] | None, lo: float, hi: float, model: Any = None) -> str:
    """Which band the bin range is, at the run's sample rate or (before a run) the chosen model's:
    bins are not Hz, so the page says what they are before anything is drawn."""
    sr = view_sample_rate(view, model)
    if not sr:
        return ""
    lo_i, hi_i = check_bins(lo, hi)
    return band_caption(lo_i, hi_i, sr, N_FFT) + " · difference view: ±30 dB, silence (below −80 dB) blank"


def range_bins(preset: Any, lo_hz: Any, hi_hz: Any, sample_rate: int | None) -> tuple[int, int]:
    """The bin range [lo, hi) of a range preset: every row, the thesis's 100-150, or a band in Hz
    at ``sample_rate`` (the band is clipped to Nyquist).

    Raises:
        BadInput: an unknown preset, or a band that is not two frequencies going up.
    """
    from recap.limits import finite

    if preset == "whole":
        return 0, N_BINS
    if preset == "thesis":
        return THESIS_BINS
    if preset != "hz":
        raise BadInput(f"range must be one of {', '.join(v for _, v in RANGE_CHOICES)}, got {str(preset)[:20]!r}")
    if not sample_rate:
        raise BadInput("the model's sample rate is unknown: choose the bins with the sliders")
    nyquist = sample_rate / 2
    lo = finite("band from (Hz)", lo_hz, 0.0, 1e6)
    hi = min(finite("band to (Hz)", hi_hz, 0.0, 1e6), nyquist)
    if not lo < hi:
        raise BadInput(f"the band {lo:g}–{hi:g} Hz is empty: 'from' must be below 'to' (and below "
                       f"Nyquist, {nyquist:,.0f} Hz)")
    return hz_to_bins(lo, hi, sample_rate, N_FFT)


def cell_caption(view: dict[str, Any], label: str, seed: int) -> str:
    if label == "baseline":
        return "the reference of this column"
    s = view["scores"].get(f"{label}|{seed}")
    if not s or s.get("cosine") is None or s.get("l2") is None:  # a score that was not a number is stored as null
        return ""
    return f"vs baseline seed {seed}: cos {s['cosine']:.4g} · L2 {s['l2']:.4g}"


def zip_run(view: dict[str, Any], folder: Path, lo: float, hi: float) -> Path:
    """Writes the run's figures for the current bins, then zips the run (audio, latents, manifest,
    metrics, figures) into ``folder``; the per-clip analysis cache is left out."""
    from recap.analysis.spectrogram import write_run_figures

    run_dir = Path(view["run_dir"])
    write_run_figures(run_dir, SpectrogramConfig(bins=check_bins(lo, hi)), static=False)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"recap-run-{view['run_id']}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(run_dir.rglob("*")):
            rel = path.relative_to(run_dir)
            # Only the run's own files: a link inside the folder could point anywhere on the server.
            if path.is_file() and not path.is_symlink() and rel.parts[0] != "analysis_cache":
                zf.write(path, Path(view["run_id"]) / rel)
    tmp.replace(target)
    return target


def run_choices(runs_dir: Path, only: Sequence[str] | None = None, limit: int | None = None) -> list[tuple[str, str]]:
    """(label, run id) of the saved runs (``only`` these ids, when given), newest first; a folder
    that is not a readable run is skipped (and logged by :func:`recap.generation.runs.list_runs`)."""
    from recap.generation.runs import list_runs

    def label(r: Any) -> str:
        names = ", ".join(v["label"] for v in r.variants[:6]) + (", …" if len(r.variants) > 6 else "")
        seeds = ", ".join(map(str, r.seeds[:8])) + (", …" if len(r.seeds) > 8 else "")
        return f"{r.run_id} — {r.kind} · {r.model['name']}: {names} × seeds {seeds}"

    return [(label(r), r.run_id) for r in list_runs(runs_dir, only=only, limit=limit)]


def remember_run(mine: Sequence[str] | None, run_id: str) -> list[str]:
    """The session's run ids with ``run_id`` added (a new list: the value goes back into ``gr.State``)."""
    return [r for r in (mine or []) if r != run_id] + [run_id]


def visible_runs(runs_dir: Path, mine: Sequence[str] | None, public: bool, limit: int | None = None
                 ) -> list[tuple[str, str]]:
    """The run browser's choices: on a public server only the runs this session made (``mine``),
    locally every run (the newest ``limit``)."""
    if public:
        return run_choices(runs_dir, only=list(mine or []))
    return run_choices(runs_dir, limit=limit)


def session_run_dir(runs_dir: Path, run_id: Any, mine: Sequence[str] | None, public: bool) -> Path:
    """The folder of run ``run_id`` when this session may open it: on a public server only a run
    it made; locally any run under ``runs_dir``.

    Raises:
        BadInput: not a run id, or (public) a run of another session, said without telling
            whether such a run exists.
    """
    from recap.generation.runs import load_run

    if not isinstance(run_id, str) or not run_id or len(run_id) > 120:
        raise BadInput("choose a saved run first")
    if public and run_id not in (mine or []):
        raise BadInput(f"run {run_id[:40]!r} was not made in this browser session; on this server each "
                       "visitor sees only their own runs")
    run_dir = inside(Path(runs_dir), Path(run_id).name)
    load_run(run_dir)  # refuses a folder that is not a readable run, with a sentence
    return run_dir
