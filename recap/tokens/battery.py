"""The editability battery (paper 001): a learned token put in new contexts, and how well it follows.

A fixed, editable list of prompt templates ("a {} playing in a jazz club", "a {} recorded on an
old tape", ...) changes genre, recording conditions, accompaniment and background around the
token. The battery generates every template with the token as one grid (same seeds, same noise
for every template) and scores the clips:

- CLAP-T: CLAP audio-text cosine between a clip and its template written with the token's class
  word (CLAP's text encoder does not know the learned token). Generating the class-word prompts
  too gives the paper's ceiling ⌈T⌉; the token's training clips against the same texts give
  its floor ⌊T⌋.
- CLAP-A: CLAP audio cosine between a clip and the token's training clips (does the sound stay
  the learned one?); between the training clips themselves it is the ceiling ⌈A⌉.
- Latent cosine to the training clips: the same question in the model's own latent space,
  available without CLAP weights.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recap.metrics import similarity as metrics
from recap.audio_io import Clip, write_wav
from recap.backends.base import AudioBackend
from recap.generation.grid import GenerationConfig, GridResult, Progress, generate_grid, save_run
from recap.variants import TIER_LIGHT, Variant
from recap.tokens.files import LearnedToken
from recap.paths import atomic_write_bytes, atomic_write_json
from recap.generation.runs import RunManifest
from recap.generation.transfer import clip_latents, content_latents, fit_clip

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "assets" / "battery_templates.txt"
SLOT = "{}"
MAX_TEMPLATES = 200  # one grid; more than this is a mistake in the file, not a battery
SCORES_FORMAT = "recap.tokens.battery/1"
LABEL = re.compile(r"(edit|class)-(\d+)")  # the labels battery_variants gives


@dataclass
class BatteryConfig:
    """What the battery generates (saved in the run's manifest).

    Attributes:
        templates: Prompt templates with ``{}`` where the token goes.
        class_word: The word CLAP-T writes instead of the token; None = the token's ``init_word``.
        with_class_prompts: Also generate every template with the class word, in the same grid
            (the paper's text-similarity ceiling ⌈T⌉; doubles the clips).
        templates_file: Where the templates were read from (recorded, not read again).
    """

    templates: list[str] = field(default_factory=list)
    class_word: str | None = None
    with_class_prompts: bool = False
    templates_file: str | None = None


@dataclass
class BatteryScores:
    """Scores of a battery run.

    Attributes:
        clips: One row per clip: label, seed, kind ("token" / "class"), template, prompt,
            text (the class-word prompt CLAP-T used), clap_t, clap_a, latent_cosine (None when
            not computed).
        summary: Means over the token clips (clap_t, clap_a, latent_cosine) and the paper's
            references (clap_t_ceiling, clap_t_floor, clap_a_ceiling); None when not computed.
        notes: What was skipped and why.
        clap_model: The CLAP checkpoint used, if any.
        clap_preprocessing: How its audio was prepared (:data:`recap.metrics.clap.PREPROCESSING`):
            CLAP numbers compare only under the same checkpoint and preprocessing.
    """

    clips: list[dict[str, Any]]
    summary: dict[str, float | None]
    notes: list[str] = field(default_factory=list)
    clap_model: str | None = None
    clap_preprocessing: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": SCORES_FORMAT, **asdict(self)}


# ----------------------------------------------------------------------------- templates
def check_templates(templates: Sequence[str]) -> list[str]:
    """Stripped templates; ValueError naming the first one without ``{}`` (or none at all)."""
    out = [t.strip() for t in templates]
    if not out:
        raise ValueError("no battery templates given")
    if len(out) > MAX_TEMPLATES:
        raise ValueError(f"{len(out)} battery templates; the limit is {MAX_TEMPLATES}")
    for i, t in enumerate(out, 1):
        if SLOT not in t:
            raise ValueError(f"battery template {i} ({t!r}) has no {SLOT} where the token goes")
    return out


def load_templates(path: str | Path | None = None) -> list[str]:
    """Templates from a text file, one per line (blank lines and ``#`` comments skipped).

    Args:
        path: The file; None = the shipped ``assets/battery_templates.txt`` (20 templates).
    """
    path = Path(path) if path is not None else DEFAULT_TEMPLATES
    if not path.is_file():
        raise ValueError(f"battery templates file {str(path)!r} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    return check_templates([ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")])


def fill(template: str, word: str) -> str:
    """The template with ``word`` in every ``{}`` (literal replacement: other braces stay as written)."""
    return template.replace(SLOT, word)


def class_word(token: LearnedToken, config: BatteryConfig) -> str | None:
    """The word CLAP-T uses for the token: the config's, else the token's init word."""
    return config.class_word or token.meta.get("init_word") or None


def battery_variants(templates: Sequence[str], placeholder: str, word: str | None = None,
                     with_class_prompts: bool = False) -> list[Variant]:
    """``edit-NN`` = template NN with the token (method "token"); ``class-NN`` = with ``word`` (method "manual")."""
    templates = check_templates(templates)
    variants = [Variant(f"edit-{i:02d}", fill(t, placeholder), "token", TIER_LIGHT) for i, t in enumerate(templates, 1)]
    if with_class_prompts:
        if not word:
            raise ValueError("class-word prompts need a class word (the token has no init word; give one)")
        variants += [Variant(f"class-{i:02d}", fill(t, word), "manual", TIER_LIGHT) for i, t in enumerate(templates, 1)]
    return variants


# ----------------------------------------------------------------------------- generation
def run_battery(
    backend: AudioBackend,
    token: LearnedToken,
    generation: GenerationConfig,
    config: BatteryConfig,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> GridResult:
    """Generates every template (x seeds) with the token in one grid (see :func:`battery_variants`)."""
    word = class_word(token, config)
    variants = battery_variants(config.templates, token.placeholder, word, config.with_class_prompts)
    return generate_grid(backend, variants, generation, tokens=token.as_tokens(), progress=progress, stop=stop)


# ----------------------------------------------------------------------------- scoring
def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def score_battery(
    result: GridResult,
    backend: AudioBackend,
    token: LearnedToken,
    config: BatteryConfig,
    references: Sequence[Clip] = (),
    clap: Any | None = None,
    clap_missing: str = "no CLAP model given",
) -> BatteryScores:
    """CLAP-T, CLAP-A and latent similarity of a battery's clips (see the module docstring).

    Args:
        result: The grid from :func:`run_battery`.
        backend: The model that made it.
        token: The token it used.
        config: The battery's settings.
        references: The token's training clips (CLAP-A, latent cosine, the floors and ceilings).
        clap: A :class:`recap.metrics.clap.ClapScorer`, or None to skip the CLAP scores.
        clap_missing: Why there is no scorer (goes into the notes when ``clap`` is None).
    """
    templates = check_templates(config.templates)
    word = class_word(token, config)
    rows = []
    for c in result.clips:
        m = LABEL.fullmatch(c.variant.label)
        if m is None or not 1 <= int(m[2]) <= len(templates):
            raise ValueError(f"clip {c.variant.label!r} is not one of this battery's {len(templates)} templates")
        kind, template = m[1], templates[int(m[2]) - 1]
        rows.append({"label": c.variant.label, "seed": c.seed, "kind": "token" if kind == "edit" else "class",
                     "template": template, "prompt": c.variant.prompt, "text": fill(template, word) if word else None,
                     "clap_t": None, "clap_a": None, "latent_cosine": None})
    summary: dict[str, float | None] = dict.fromkeys(
        ("clap_t", "clap_t_ceiling", "clap_t_floor", "clap_a", "clap_a_ceiling", "latent_cosine"))
    notes = []
    if backend.random_weights:
        notes.append(f"{backend.name} has random weights: these scores only exercise the pipeline.")
    seconds = result.config.seconds
    refs = [fit_clip(backend, r, seconds) for r in references]
    if refs:
        ref_z = content_latents(backend, clip_latents(backend, refs), seconds)
        for row, c in zip(rows, result.clips):
            z = content_latents(backend, c.final, seconds)
            row["latent_cosine"] = _mean([metrics.cosine(z, r) for r in ref_z])
    else:
        notes.append("No training clips of the token given: CLAP-A and latent similarity are skipped.")
    if clap is None:
        notes.append(f"CLAP scores skipped: {clap_missing}.")
    else:
        from recap.metrics.clap import clap_a, clap_t

        sr = backend.sample_rate
        audio = clap.embed_audio([c.audio for c in result.clips], sr)
        ref_emb = clap.embed_audio([r.audio for r in refs], sr) if refs else None
        if word:
            for row, v in zip(rows, clap_t(audio, clap.embed_text([r["text"] for r in rows]))):
                row["clap_t"] = float(v)
            if ref_emb is not None:
                texts = clap.embed_text([fill(t, word) for t in templates])
                summary["clap_t_floor"] = float(clap_a(texts, ref_emb).mean())
        else:
            notes.append("CLAP-T skipped: the token has no init word; give the class word.")
        if ref_emb is not None:
            for row, v in zip(rows, clap_a(audio, ref_emb)):
                row["clap_a"] = float(v)
            if len(refs) > 1:
                sims = ref_emb.double().numpy() @ ref_emb.double().numpy().T
                summary["clap_a_ceiling"] = float(sims[~np.eye(len(refs), dtype=bool)].mean())
    token_rows = [r for r in rows if r["kind"] == "token"]
    summary["clap_t"] = _mean([r["clap_t"] for r in token_rows])
    summary["clap_a"] = _mean([r["clap_a"] for r in token_rows])
    summary["latent_cosine"] = _mean([r["latent_cosine"] for r in token_rows])
    summary["clap_t_ceiling"] = _mean([r["clap_t"] for r in rows if r["kind"] == "class"])
    return BatteryScores(rows, summary, notes, None if clap is None else clap.name,
                         None if clap is None else clap.preprocessing)


def per_template(scores: BatteryScores) -> list[dict[str, Any]]:
    """One row per template: its token prompt and each score averaged over seeds (class clips as ``*_class``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in scores.clips:
        groups.setdefault(r["label"].split("-")[1], []).append(r)
    out = []
    for rows in groups.values():
        row: dict[str, Any] = {"template": rows[0]["template"],
                               "prompt": next((r["prompt"] for r in rows if r["kind"] == "token"), None)}
        for kind, suffix in (("token", ""), ("class", "_class")):
            mine = [r for r in rows if r["kind"] == kind]
            if mine:
                row.update({k + suffix: _mean([r[k] for r in mine]) for k in ("clap_t", "clap_a", "latent_cosine")})
        out.append(row)
    return out


# ----------------------------------------------------------------------------- run folder
def _scores_csv(scores: BatteryScores) -> bytes:
    buf = io.StringIO()
    names = ["label", "seed", "kind", "template", "prompt", "text", "clap_t", "clap_a", "latent_cosine"]
    writer = csv.DictWriter(buf, names, lineterminator="\n")
    writer.writeheader()
    for r in scores.clips:
        writer.writerow({k: "" if r[k] is None else r[k] for k in names})
    return buf.getvalue().encode()


def save_battery(
    result: GridResult,
    backend: AudioBackend,
    token: LearnedToken,
    config: BatteryConfig,
    runs_dir: Path,
    scores: BatteryScores | None = None,
    references: Sequence[Clip] = (),
) -> RunManifest:
    """Writes a battery as a run folder (``kind="edit-battery"``) with its scores and reference clips.

    Adds ``reference/target-NN.wav``, ``battery.json`` and ``battery.csv``, listed in
    ``manifest.extra["battery"]``; the manifest is rewritten last, so it never names a missing file.
    """
    meta: dict[str, Any] = {**asdict(config), "placeholder": token.placeholder, "class_word": class_word(token, config)}
    manifest = save_run(result, backend, runs_dir, token_info=[token.summary()], kind="edit-battery",
                        extra={"battery": dict(meta)})
    run_dir = Path(manifest.path)
    meta["references"] = []
    for i, ref in enumerate(references, 1):
        rel = f"reference/target-{i:02d}.wav"
        fitted = fit_clip(backend, ref, result.config.seconds)
        write_wav(run_dir / rel, fitted.audio, backend.sample_rate, result.config.wav_subtype)
        meta["references"].append({"file": rel, "name": ref.source})
    if scores is not None:
        atomic_write_json(run_dir / "battery.json", scores.to_json())
        atomic_write_bytes(run_dir / "battery.csv", _scores_csv(scores))
        meta["scores"] = {"json": "battery.json", "csv": "battery.csv"}
    manifest.extra["battery"] = meta
    atomic_write_json(run_dir / "manifest.json", manifest.to_json())
    log.info("edit battery of %s: %d clips -> %s", token.placeholder, len(result.clips), run_dir)
    return manifest
