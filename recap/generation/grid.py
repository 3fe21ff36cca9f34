"""Side-by-side generation: prompt variants x seeds from identical starting noise, batched.

Every variant with seed ``k`` starts from the same noise (drawn once per seed on a CPU generator)
and, on Stable Audio, the same SDE noise (its Brownian tree is seeded per sample by ``k``), so the
prompt is the only thing that differs between clips of one seed. The grid runs in as few batched
denoising calls as memory allows, halving the batch when the accelerator runs out of memory.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from recap.audio_io import write_wav
from recap.backends.base import AudioBackend
from recap.backends.speed import clips_per_batch, free_memory
from recap.errors import BadInput
from recap.limits import LIMITS, finite, whole
from recap.paths import atomic_write_json, safe_name, sha256_file
from recap.variants import MAX_TIER, METHODS, TIER_LIGHT, Variant
from recap.generation.runs import ClipRecord, RunManifest, clip_stem, new_run_id, versions

log = logging.getLogger(__name__)

# progress(done_clips, total_clips, message); done may be fractional within a batch
Progress = Callable[[float, int, str], None]
MAX_PROMPT_CHARS = 1000
MAX_LABEL_CHARS = 64
# Seeds seed numpy-compatible generators (32 bits) and are written into file names.
MAX_SEED = 2**32 - 1
# Classifier-free guidance past this only saturates the audio; the UI's slider stops at 15.
MAX_GUIDANCE = 30.0
# No model recap knows makes longer clips; each backend's own maximum is checked once it is loaded.
MAX_SECONDS = 600.0
MAX_BATCH = 1024
WAV_SUBTYPES = ("FLOAT", "PCM_16")


@dataclass(frozen=True)
class WorkLimit:
    """How much accelerator work one request may ask for (a public server has one GPU slot for everyone).

    Attributes:
        clips: Clips of one grid or sweep (each is also audio and latents on the disk).
        clip_steps: Clips × denoising steps that run: what holds the GPU. 6,400 is the full
            64-clip grid at Stable Audio Open's 100 steps, or 12 clips at the 500-step maximum.
    """

    clips: int = 64
    clip_steps: int = 6400


# The bound every grid and sweep is held to unless its caller says otherwise (a batch experiment,
# bounded by its own counts, passes None).
REQUEST_LIMIT = WorkLimit()


@dataclass
class GenerationConfig:
    """Settings of one grid; None means the model's own default (resolved and saved in the manifest).

    Attributes:
        seconds: Clip length in seconds.
        steps: Denoising steps.
        guidance: Classifier-free guidance scale (<= 1 turns it off).
        negative_prompt: Text to steer away from.
        seeds: Seeds; each gives one column of the grid.
        max_batch: Most clips per denoising call; None picks from free accelerator memory and
            halves on out-of-memory.
        wav_subtype: "FLOAT" (lossless) or "PCM_16".
        fast_preview: Denoise only the requested length instead of the model's whole trained
            window (Stable Audio). Several times faster for short clips, but the model was trained
            on the full window: a preview, its fidelity is not guaranteed.
    """

    seconds: float | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    max_batch: int | None = None
    wav_subtype: str = "FLOAT"
    fast_preview: bool = False

    def check(self, max_seconds: float | None = None, model: str = "") -> GenerationConfig:
        """This config with every value checked and normalised; :class:`BadInput` names the first bad one.

        Args:
            max_seconds: The model's longest clip; None checks against :data:`MAX_SECONDS` only
                (what the command line can do before the model is loaded).
            model: The model's name, for the message.
        """
        return replace(
            self,
            seconds=None if self.seconds is None else check_seconds(self.seconds, max_seconds, model),
            steps=None if self.steps is None else whole("steps", self.steps, 1, LIMITS.steps),
            guidance=None if self.guidance is None else finite("guidance", self.guidance, 0.0, MAX_GUIDANCE),
            negative_prompt=check_prompt("negative prompt", self.negative_prompt, allow_empty=True),
            seeds=check_seeds(self.seeds),
            max_batch=None if self.max_batch is None else whole("max_batch", self.max_batch, 1, MAX_BATCH),
            wav_subtype=_one_of("wav_subtype", self.wav_subtype, WAV_SUBTYPES),
            fast_preview=_flag("fast_preview", self.fast_preview),
        )

    def resolved(self, backend: AudioBackend) -> GenerationConfig:
        """The model's defaults filled in, and every value checked against the model."""
        d = backend.defaults
        return replace(
            self,
            seconds=self.seconds if self.seconds is not None else d.seconds,
            steps=self.steps if self.steps is not None else d.steps,
            guidance=self.guidance if self.guidance is not None else d.guidance,
            negative_prompt=self.negative_prompt if self.negative_prompt is not None else d.negative_prompt,
        ).check(backend.max_seconds, backend.name)


@dataclass
class GridClip:
    variant: Variant
    seed: int
    audio: np.ndarray  # [C, T] float32
    initial: torch.Tensor
    final: torch.Tensor


@dataclass
class GridResult:
    """The clips of a grid and how they were made."""

    clips: list[GridClip]
    variants: list[Variant]
    config: GenerationConfig
    denoising_calls: int
    batch_sizes: list[int]
    seconds_elapsed: float
    # label -> words its prompt has that the model's text encoder reads as <unk> (only those with some)
    unreadable: dict[str, list[str]] = field(default_factory=dict)

    def clip(self, label: str, seed: int) -> GridClip:
        return next(c for c in self.clips if c.variant.label == label and c.seed == seed)


def make_variants(baseline: str, others: Sequence[str], method: str = "manual", tier: int = TIER_LIGHT) -> list[Variant]:
    """Baseline plus labelled variants ``variant-1``, ``variant-2``, ..."""
    return [Variant("baseline", baseline, "baseline", 0)] + [
        Variant(f"variant-{i}", p, method, tier) for i, p in enumerate(others, 1)
    ]


def _short(value: Any) -> str:
    """A rejected value as a message shows it: its repr, cut short (it may be a megabyte of text)."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _one_of(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise BadInput(f"{name} must be one of {', '.join(choices)}, got {_short(value)}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false, got {_short(value)}")
    return value


def check_prompt(name: str, value: Any, *, allow_empty: bool = False) -> str | None:
    """A prompt of at most :data:`MAX_PROMPT_CHARS` printable characters (None passes when
    ``allow_empty``); :class:`BadInput` naming ``name`` otherwise."""
    if value is None and allow_empty:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{name} must be text, got {type(value).__name__}")
    if not value.strip() and not allow_empty:
        raise BadInput(f"{name} is empty")
    if len(value) > MAX_PROMPT_CHARS:
        raise BadInput(f"{name} is {len(value):,} characters; the limit is {MAX_PROMPT_CHARS}")
    if any(not (c.isprintable() or c in "\t\n\r") for c in value):
        raise BadInput(f"{name} contains control characters")
    return value


def check_seconds(value: Any, max_seconds: float | None = None, model: str = "") -> float:
    """Clip length in seconds: finite, > 0 and at most the model's maximum (:data:`MAX_SECONDS`
    when the model is not known yet); :class:`BadInput` otherwise."""
    top = float(max_seconds) if max_seconds is not None else MAX_SECONDS
    where = f" for {model}" if model else ""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"seconds must be in (0, {top:.2f}]{where}, got {_short(value)}") from None
    if isinstance(value, bool) or not (math.isfinite(seconds) and 0 < seconds <= top + 1e-6):
        raise BadInput(f"seconds must be in (0, {top:.2f}]{where}, got {_short(value)}")
    return min(seconds, top)


def check_seeds(seeds: Any, name: str = "seeds") -> list[int]:
    """1 to ``LIMITS.seeds`` distinct whole numbers in 0..2^32-1; :class:`BadInput` otherwise."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise BadInput(f"{name} must be a list of whole numbers, got {_short(seeds)}")
    if not seeds:
        raise BadInput(f"no {name} given")
    if len(seeds) > LIMITS.seeds:
        raise BadInput(f"{len(seeds):,} {name} is too many for one grid; the limit is {LIMITS.seeds}")
    out = [whole("seed", s, 0, MAX_SEED) for s in seeds]
    if len(set(out)) != len(out):
        raise BadInput(f"{name} repeat: {out}")
    return out


def check_work(clips: int, clip_steps: int, limit: WorkLimit | None = REQUEST_LIMIT, what: str = "this grid") -> None:
    """Refuses a request that would hold the accelerator too long (``limit`` None: no bound).

    Args:
        clips: Clips it makes.
        clip_steps: Denoising steps it runs, summed over clips.
        limit: The bound; the sentence says it.
        what: How the message names the request.
    """
    if limit is None:
        return
    if clips > limit.clips:
        raise BadInput(f"{what} makes {clips:,} clips; one request makes at most {limit.clips:,} here "
                       "(use fewer variants, seeds or strengths)")
    if clip_steps > limit.clip_steps:
        raise BadInput(f"{what} runs {clip_steps:,} denoising steps in all (clips × steps); one request runs at most "
                       f"{limit.clip_steps:,} here, e.g. {limit.clips} clips at {limit.clip_steps // limit.clips} steps "
                       "(use fewer steps, seeds or variants)")


def check_variants(variants: Sequence[Variant]) -> None:
    """Raises :class:`BadInput` (a ValueError) for too many variants, empty, over-long or
    non-text prompts, unsafe or repeated labels, unknown methods."""
    if isinstance(variants, (str, bytes)) or not isinstance(variants, Sequence):
        raise BadInput(f"variants must be a list, got {_short(variants)}")
    if not variants:
        raise BadInput("no prompts to generate")
    if len(variants) > LIMITS.variants:
        raise BadInput(f"{len(variants):,} variants is too many for one grid; the limit is {LIMITS.variants}")
    seen = set()
    for v in variants:
        if not isinstance(v.label, str) or len(v.label) > MAX_LABEL_CHARS or safe_name(v.label) != v.label:
            raise BadInput(f"label {_short(v.label)} is not file-name safe; try {safe_name(str(v.label))!r}")
        if isinstance(v.prompt, str) and not v.prompt.strip():
            raise BadInput(f"variant {v.label!r} has an empty prompt")
        check_prompt(f"the prompt of variant {v.label!r}", v.prompt)
        if v.label in seen:
            raise BadInput(f"label {v.label!r} is used twice")
        if v.method not in METHODS:
            raise BadInput(f"variant {v.label!r}: unknown method {_short(v.method)} (one of {', '.join(METHODS)})")
        if not isinstance(v.tier, int) or isinstance(v.tier, bool) or not 0 <= v.tier <= MAX_TIER:
            raise BadInput(f"variant {v.label!r}: tier must be a whole number from 0 to {MAX_TIER}, got {_short(v.tier)}")
        seen.add(v.label)


def _initial_batch(backend: AudioBackend, n_items: int, config: GenerationConfig) -> int:
    if config.max_batch is not None:
        return min(config.max_batch, n_items)
    # As many clips per call as free memory holds (fewer calls is what makes a grid fast); the
    # estimate may be off, so an out-of-memory error still halves the batch.
    shape = backend.latent_shape(config.seconds, full_window=not config.fast_preview)
    per_clip = backend.denoise_bytes_per_clip(shape, config.guidance)
    return clips_per_batch(free_memory(backend.device), per_clip, n_items, 16 if backend.device.type == "cpu" else 32)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# How a learned token is written in a prompt: <name>
_PLACEHOLDER_RE = re.compile(r"<[^<>\s]{1,40}>")


def check_readable(backend: AudioBackend, variants: Sequence[Variant],
                   tokens: Mapping[str, torch.Tensor] | None = None) -> dict[str, list[str]]:
    """The words each variant's prompt has that the model cannot read ({label: words}, only
    labels with some), logged as a warning; a placeholder of a token that is not loaded is refused.

    Raises:
        BadInput: a prompt names a learned token (``<name>``) that ``tokens`` does not hold:
            it would be read as plain text, and the clip would not show the token.
    """
    out = {}
    for v in variants:
        missing = [p for p in dict.fromkeys(_PLACEHOLDER_RE.findall(v.prompt)) if p not in (tokens or {})]
        if missing:
            raise BadInput(f"variant {v.label!r} uses {', '.join(missing)}, which is not a loaded learned token; "
                           "load it (Token tab, or --token FILE) or take it out of the prompt")
        words = backend.unknown_words(v.prompt, dict(tokens) if tokens else None)
        if words:
            out[v.label] = words
    if out:
        log.warning("%s cannot read some words (it reads them as <unk>, so they change nothing): %s", backend.name,
                    "; ".join(f"{label}: {' '.join(w)}" for label, w in out.items()))
    return out


def generate_grid(
    backend: AudioBackend,
    variants: Sequence[Variant],
    config: GenerationConfig,
    tokens: Mapping[str, torch.Tensor] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    limit: WorkLimit | None = REQUEST_LIMIT,
) -> GridResult:
    """Generates every (variant, seed) clip; same seed -> same starting noise for every variant.

    Args:
        backend: A loaded model.
        variants: The prompts; labels unique and file-name safe.
        config: Settings (model defaults fill the gaps).
        tokens: Learned tokens (placeholder -> vectors) applied to these prompts only.
        progress: Called as clips complete (fractionally within a batch).
        stop: Set it to stop at the next denoising step (raises ``Cancelled``).
        limit: The most work the grid may be (:data:`REQUEST_LIMIT`); None for no bound.

    Raises:
        BadInput: a value out of its bounds, or a grid over ``limit``; the message names it.
    """
    # 1. Check inputs (before any work: a refused request costs nothing)
    check_variants(variants)
    config = config.check(backend.max_seconds, backend.name).resolved(backend)
    n_clips = len(variants) * len(config.seeds)
    check_work(n_clips, n_clips * config.steps, limit)
    unreadable = check_readable(backend, variants, tokens)
    # 2. Noise once per seed: the fairness guarantee lives here
    noise = {s: backend.initial_noise([s], config.seconds, full_window=not config.fast_preview)[0] for s in config.seeds}
    items = [(v, s) for v in variants for s in config.seeds]
    total = len(items)
    batch = _initial_batch(backend, total, config)
    # 3. Batched denoising, halving on out-of-memory
    clips: list[GridClip] = []
    batch_sizes: list[int] = []
    start = time.perf_counter()
    i = 0
    while i < total:
        chunk = items[i : i + batch]
        done_before = i

        def on_step(step: int, steps: int, _n=len(chunk), _d=done_before) -> None:
            if progress is not None:
                progress(_d + _n * step / steps, total, f"clips {_d + 1}-{_d + _n} of {total}: step {step}/{steps}")

        try:
            out = backend.generate(
                [v.prompt for v, _ in chunk], [s for _, s in chunk], config.seconds, config.steps, config.guidance,
                config.negative_prompt, tokens=tokens, on_step=on_step, stop=stop,
                initial=torch.stack([noise[s] for _, s in chunk]),
            )
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not _is_oom(exc) or batch == 1:
                raise
            batch = max(1, batch // 2)
            log.warning("out of memory; retrying with batch %d", batch)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        for k, (v, s) in enumerate(chunk):
            clips.append(GridClip(v, s, out.audio[k].numpy(), out.initial[k], out.final[k]))
        batch_sizes.append(len(chunk))
        i += len(chunk)
    elapsed = time.perf_counter() - start
    log.info("%d clips in %d denoising calls, %.2f s", total, len(batch_sizes), elapsed)
    return GridResult(clips, list(variants), config, len(batch_sizes), batch_sizes, elapsed, unreadable)


def _keep_tokens(run_dir: Path, token_info: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies each token file a run used into its ``tokens/`` folder, so that the run carries what
    made it: its zip holds the tokens, and its analysis embeds them after the original is gone."""
    out = []
    for info in token_info:
        info = dict(info)
        src = Path(info["file"]) if isinstance(info.get("file"), str) else None
        if src is not None and src.is_file():
            dest = run_dir / "tokens" / f"{safe_name(str(info.get('placeholder') or src.stem).strip('<>'))}{src.suffix}"
            dest.parent.mkdir(exist_ok=True)
            shutil.copyfile(src, dest)
            sidecar = src.with_suffix(".json")
            if sidecar.is_file():
                shutil.copyfile(sidecar, dest.with_suffix(".json"))
            info.update(file=dest.relative_to(run_dir).as_posix(), sha256=sha256_file(dest), source=src.name)
        out.append(info)
    return out


def save_run(
    result: GridResult,
    backend: AudioBackend,
    runs_dir: Path,
    token_info: Sequence[dict[str, Any]] = (),
    kind: str = "generate",
    extra: dict[str, Any] | None = None,
) -> RunManifest:
    """Writes the grid as a run folder (audio, latents, manifest last so a run without one is incomplete)."""
    run_id = new_run_id()
    run_dir = Path(runs_dir) / run_id
    (run_dir / "audio").mkdir(parents=True)
    (run_dir / "latents").mkdir()
    records = []
    for c in result.clips:
        stem = clip_stem(c.variant.label, c.seed)
        wav = write_wav(run_dir / "audio" / f"{stem}.wav", c.audio, backend.sample_rate, result.config.wav_subtype)
        save_file({"initial": c.initial.contiguous(), "final": c.final.contiguous()}, str(run_dir / "latents" / f"{stem}.safetensors"))
        records.append(ClipRecord(
            variant=c.variant.label, seed=c.seed, audio=f"audio/{stem}.wav", latents=f"latents/{stem}.safetensors",
            sha256=sha256_file(wav), seconds=c.audio.shape[-1] / backend.sample_rate,
        ))
    token_info = _keep_tokens(run_dir, token_info)
    manifest = RunManifest(
        run_id=run_id,
        kind=kind,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        model=backend.describe(),
        config=asdict(result.config),
        variants=[asdict(v) | ({"unreadable": result.unreadable[v.label]} if v.label in result.unreadable else {})
                  for v in result.variants],
        seeds=list(result.config.seeds),
        clips=records,
        tokens=list(token_info),
        versions=versions(),
        device=str(backend.device),
        timings={"generate_s": round(result.seconds_elapsed, 4), "denoising_calls": result.denoising_calls,
                 "batch_sizes": result.batch_sizes},
        extra=dict(extra or {}),
        path=run_dir,
    )
    atomic_write_json(run_dir / "manifest.json", manifest.to_json())
    return manifest
