"""The curves of a style-transfer sweep (paper 001, Fig. 4), and its run folder.

Each output's similarity to the source and to the token's training clips, per strength and
averaged over seeds, in latent space (``recap.metrics.similarity``) and, when CLAP weights are available,
as CLAP-A.
"""

from __future__ import annotations

import csv
import html
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recap.metrics import similarity as metrics
from recap.audio_io import write_wav
from recap.backends.base import AudioBackend
from recap.generation.grid import save_run
from recap.paths import atomic_write_bytes, atomic_write_json
from recap.generation.runs import RunManifest, read_json
from recap.analysis.figures import save_figure
from recap.generation.transfer import TransferResult, content_latents, strength_label

log = logging.getLogger(__name__)
# outputs re-encoded per VAE call (memory only)
_ENCODE_CHUNK = 8


# ----------------------------------------------------------------------------- curves (paper 001, Fig. 4)
@dataclass(frozen=True)
class CurvePoint:
    """Similarity of one strength's outputs to the source and to the target, averaged over seeds.

    Latent scores follow ``recap.metrics.similarity`` (cosine, unit L2, raw L2) on the clip latents
    (each output's audio re-encoded, like the source and the targets), the clip's part of them; "target" is the mean over the token's training clips; CLAP scores are CLAP-A
    (cosine of CLAP audio embeddings). A score that could not be computed is None.
    """

    strength: float
    label: str
    start_step: int
    steps_run: int
    sigma: float
    n_seeds: int
    source_cosine: float
    source_l2: float
    source_l2_raw: float
    target_cosine: float | None = None
    target_l2: float | None = None
    target_l2_raw: float | None = None
    clap_source: float | None = None
    clap_target: float | None = None


@dataclass
class TransferCurves:
    """The two curves of a sweep, per-clip values and notes a reader must see."""

    points: list[CurvePoint]
    clips: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    clap_model: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": CURVES_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TransferCurves:
        return cls([CurvePoint(**p) for p in d["points"]], list(d["clips"]), list(d.get("notes", [])),
                   d.get("clap_model"))


CURVES_FORMAT = "recap.generation.transfer/1"
CURVE_FIELDS = [f.name for f in fields(CurvePoint)]
SCORE_FIELDS = ("source_cosine", "source_l2", "source_l2_raw", "target_cosine", "target_l2", "target_l2_raw",
                "clap_source", "clap_target")


def load_clap(name: str | None = None, allow_download: bool = False, device: str | None = None) -> tuple[Any, str]:
    """A :class:`recap.metrics.clap.ClapScorer`, or None and the reason it is not available (never raises for that).

    Without ``allow_download`` only a local folder or the Hugging Face cache is used, so a run
    never waits on the network.
    """
    from recap.metrics.clap import DEFAULT_CLAP_MODEL, ClapScorer, ClapUnavailable, is_cached

    name = name or DEFAULT_CLAP_MODEL
    if not allow_download and not is_cached(name):
        return None, f"CLAP model {name!r} is not in the local cache and downloading it was not allowed"
    try:
        return ClapScorer.from_pretrained(name, device=device, local_files_only=not allow_download), ""
    except ClapUnavailable as exc:
        return None, str(exc)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def similarity_curves(
    result: TransferResult, backend: AudioBackend, clap: Any | None = None, clap_missing: str = "no CLAP model given"
) -> TransferCurves:
    """Latent (and CLAP) similarity of every output to the source and to the token's clips.

    Args:
        result: A sweep from :func:`transfer`.
        backend: The model that made it (says which latent frames hold the clip).
        clap: A :class:`recap.metrics.clap.ClapScorer`, or None to skip the CLAP curves.
        clap_missing: Why there is no scorer (goes into the notes when ``clap`` is None).
    """
    seconds = result.config.seconds
    src = content_latents(backend, result.source_latents, seconds)[0]
    refs = [] if result.reference_latents is None else list(content_latents(backend, result.reference_latents, seconds))
    clips = result.grid.clips
    strength_of = {strength_label(s): s for s in result.config.strengths}
    rows: list[dict[str, Any]] = []
    # The clip latent (DESIGN.md): each output's saved audio re-encoded, as the source and the
    # targets are, so that all three are the same kind of latent (the sampler's final latent of
    # an output is not what its audio re-encodes to).
    audio = torch.from_numpy(np.stack([c.audio for c in clips]))
    outputs = torch.cat([backend.encode_audio(audio[i : i + _ENCODE_CHUNK], backend.sample_rate)
                         for i in range(0, len(clips), _ENCODE_CHUNK)])
    for c, encoded in zip(clips, outputs):
        z = content_latents(backend, encoded[None], seconds)[0]
        s = metrics.pair_scores(z, src)
        row = {"label": c.variant.label, "strength": strength_of[c.variant.label], "seed": c.seed,
               "source_cosine": s.cosine, "source_l2": s.l2, "source_l2_raw": s.l2_raw}
        if refs:
            t = [metrics.pair_scores(z, r) for r in refs]
            row.update(target_cosine=_mean([x.cosine for x in t]), target_l2=_mean([x.l2 for x in t]),
                       target_l2_raw=_mean([x.l2_raw for x in t]))
        rows.append(row)
    notes = []
    if backend.random_weights:
        notes.append(f"{backend.name} has random weights: these curves only exercise the pipeline.")
    if not refs:
        notes.append("No training clips of the token given: only the similarity to the source is measured.")
    if clap is not None:
        from recap.metrics.clap import clap_a

        sr = backend.sample_rate
        out = clap.embed_audio([c.audio for c in clips], sr)
        for row, v in zip(rows, clap_a(out, clap.embed_audio([result.source.audio], sr))):
            row["clap_source"] = float(v)
        if result.references:
            for row, v in zip(rows, clap_a(out, clap.embed_audio([r.audio for r in result.references], sr))):
                row["clap_target"] = float(v)
    else:
        notes.append(f"CLAP curves skipped: {clap_missing}.")
    points = []
    for strength, start in zip(result.config.strengths, result.starts):
        mine = [r for r in rows if r["label"] == strength_label(strength)]
        avg = {k: _mean([r[k] for r in mine if r.get(k) is not None]) for k in SCORE_FIELDS}
        points.append(CurvePoint(strength, strength_label(strength), start.start_step, start.steps_run, start.sigma,
                                 len(mine), **avg))
    return TransferCurves(points, rows, notes, getattr(clap, "name", None) if clap is not None else None)


def curves_figure(curves: TransferCurves, title: str = "Style transfer: similarity by transfer strength"):
    """A plotly figure of the curves (x: strength; y: similarity), the paper's 0.4–0.6 band shaded."""
    import plotly.graph_objects as go

    x = [p.strength for p in curves.points]
    fig = go.Figure()
    lines = [("source_cosine", "latent cosine to the source", "solid"),
             ("target_cosine", "latent cosine to the token's clips", "solid"),
             ("clap_source", "CLAP-A to the source", "dash"), ("clap_target", "CLAP-A to the token's clips", "dash")]
    for key, name, dash in lines:
        y = [getattr(p, key) for p in curves.points]
        if any(v is not None for v in y):
            fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers", line={"dash": dash}))
    fig.add_vrect(x0=0.4, x1=0.6, fillcolor="grey", opacity=0.12, line_width=0,
                  annotation_text="paper's sweet spot", annotation_position="top left")
    fig.update_layout(title=title, xaxis_title="transfer strength t", yaxis_title="similarity (cosine)",
                      xaxis={"range": [-0.02, 1.02]}, template="plotly_white")
    return fig


# ----------------------------------------------------------------------------- run folder
def _curves_csv(curves: TransferCurves) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CURVE_FIELDS)
    for p in curves.points:
        writer.writerow(["" if v is None else v for v in astuple(p)])
    return buf.getvalue().encode()


def save_transfer(
    result: TransferResult,
    backend: AudioBackend,
    runs_dir: Path,
    curves: TransferCurves | None = None,
    token_info: Sequence[dict[str, Any]] = (),
    static: bool = False,
) -> RunManifest:
    """Writes a sweep as a run folder (``kind="transfer"``), with the source and the curves
    (``static``: the figure also as PNG and SVG).

    Besides what every run holds: ``reference/source.wav`` (the source as used) and
    ``reference/target-NN.wav`` (the token's clips), ``transfer.json`` / ``transfer.csv`` /
    ``transfer.html`` (the curves), all listed in ``manifest.extra["transfer"]``. The manifest is
    rewritten last, so it never names a file that is not there.
    """
    meta: dict[str, Any] = {
        "prompt": result.prompt, "config": asdict(result.config), "starts": [asdict(s) for s in result.starts],
        "source_name": result.source.source,
    }
    manifest = save_run(result.grid, backend, runs_dir, token_info=token_info, kind="transfer",
                        extra={"transfer": dict(meta)})
    run_dir = Path(manifest.path)
    sr, subtype = backend.sample_rate, result.config.wav_subtype
    write_wav(run_dir / "reference" / "source.wav", result.source.audio, sr, subtype)
    meta["source"] = "reference/source.wav"
    meta["references"] = []
    for i, ref in enumerate(result.references, 1):
        rel = f"reference/target-{i:02d}.wav"
        write_wav(run_dir / rel, ref.audio, sr, subtype)
        meta["references"].append({"file": rel, "name": ref.source})
    if curves is not None:
        atomic_write_json(run_dir / "transfer.json", curves.to_json())
        atomic_write_bytes(run_dir / "transfer.csv", _curves_csv(curves))
        # plotly reads tags in titles: a prompt's "<oud>" must be escaped to show at all
        save_figure(curves_figure(curves, f"Style transfer run {manifest.run_id}: {html.escape(result.prompt)}"),
                    run_dir / "transfer", static)
        meta["curves"] = {"json": "transfer.json", "csv": "transfer.csv", "figure": "transfer.html"}
    manifest.extra["transfer"] = meta
    atomic_write_json(run_dir / "manifest.json", manifest.to_json())
    return manifest


def load_transfer_curves(run_dir: str | Path) -> TransferCurves:
    """The curves saved with a transfer run; ValueError when it has none."""
    path = Path(run_dir) / "transfer.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} holds no transfer curves (no transfer.json)")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != CURVES_FORMAT:
        raise ValueError(f"{path}: not a transfer curves file")
    try:
        return TransferCurves.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a transfer curves file ({exc})") from None
