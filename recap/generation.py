"""Side-by-side generation: prompt variants x seeds from identical starting noise, batched.

Every variant with seed ``k`` starts from the same noise (drawn once per seed on a CPU generator)
and, on Stable Audio, the same SDE noise (its Brownian tree is seeded per sample by ``k``), so the
prompt is the only thing that differs between clips of one seed. The grid runs in as few batched
denoising calls as memory allows, halving the batch when the accelerator runs out of memory.
"""

from __future__ import annotations

import datetime as dt
import logging
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
from recap.backends import AudioBackend
from recap.backends.speed import clips_per_batch, free_memory
from recap.paths import atomic_write_json, safe_name, sha256_file
from recap.runs import ClipRecord, RunManifest, clip_stem, new_run_id, versions

log = logging.getLogger(__name__)

# progress(done_clips, total_clips, message); done may be fractional within a batch
Progress = Callable[[float, int, str], None]
METHODS = ("baseline", "manual", "synonym", "llm", "multi-turn", "token")
MAX_PROMPT_CHARS = 1000


@dataclass
class Variant:
    """One prompt of the comparison.

    Attributes:
        label: Unique, file-name safe name ("baseline", "reword-1a", "ti").
        prompt: The text (may contain learned-token placeholders).
        method: How it was made: baseline / manual / synonym / llm / multi-turn / token.
        batch: 0 = baseline, 1 = light rewording, 2 = strong rewording (the thesis's batches).
    """

    label: str
    prompt: str
    method: str = "manual"
    batch: int = 0


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

    def resolved(self, backend: AudioBackend) -> GenerationConfig:
        d = backend.defaults
        return replace(
            self,
            seconds=float(self.seconds if self.seconds is not None else d.seconds),
            steps=int(self.steps if self.steps is not None else d.steps),
            guidance=float(self.guidance if self.guidance is not None else d.guidance),
            negative_prompt=self.negative_prompt if self.negative_prompt is not None else d.negative_prompt,
        )


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

    def clip(self, label: str, seed: int) -> GridClip:
        return next(c for c in self.clips if c.variant.label == label and c.seed == seed)


def make_variants(baseline: str, others: Sequence[str], method: str = "manual", batch: int = 1) -> list[Variant]:
    """Baseline plus labelled variants ``variant-1``, ``variant-2``, ..."""
    return [Variant("baseline", baseline, "baseline", 0)] + [
        Variant(f"variant-{i}", p, method, batch) for i, p in enumerate(others, 1)
    ]


def check_variants(variants: Sequence[Variant]) -> None:
    """Raises ValueError for empty or over-long prompts, unsafe or repeated labels, unknown methods."""
    if not variants:
        raise ValueError("no prompts to generate")
    seen = set()
    for v in variants:
        if not v.prompt or not v.prompt.strip():
            raise ValueError(f"variant {v.label!r} has an empty prompt")
        if len(v.prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"variant {v.label!r}: prompt is {len(v.prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        if safe_name(v.label) != v.label:
            raise ValueError(f"label {v.label!r} is not file-name safe; try {safe_name(v.label)!r}")
        if v.label in seen:
            raise ValueError(f"label {v.label!r} is used twice")
        if v.method not in METHODS:
            raise ValueError(f"variant {v.label!r}: unknown method {v.method!r} (one of {', '.join(METHODS)})")
        seen.add(v.label)


def _initial_batch(backend: AudioBackend, n_items: int, config: GenerationConfig) -> int:
    if config.max_batch is not None:
        if config.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {config.max_batch}")
        return min(config.max_batch, n_items)
    # As many clips per call as free memory holds (fewer calls is what makes a grid fast); the
    # estimate may be off, so an out-of-memory error still halves the batch.
    shape = backend.latent_shape(config.seconds, full_window=not config.fast_preview)
    per_clip = backend.denoise_bytes_per_clip(shape, config.guidance)
    return clips_per_batch(free_memory(backend.device), per_clip, n_items, 16 if backend.device.type == "cpu" else 32)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def generate_grid(
    backend: AudioBackend,
    variants: Sequence[Variant],
    config: GenerationConfig,
    tokens: Mapping[str, torch.Tensor] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> GridResult:
    """Generates every (variant, seed) clip; same seed -> same starting noise for every variant.

    Args:
        backend: A loaded model.
        variants: The prompts; labels unique and file-name safe.
        config: Settings (model defaults fill the gaps).
        tokens: Learned tokens (placeholder -> vectors) applied to these prompts only.
        progress: Called as clips complete (fractionally within a batch).
        stop: Set it to stop at the next denoising step (raises ``Cancelled``).
    """
    # 1. Check inputs
    check_variants(variants)
    if not config.seeds:
        raise ValueError("no seeds given")
    if len(set(config.seeds)) != len(config.seeds):
        raise ValueError(f"seeds repeat: {config.seeds}")
    config = config.resolved(backend)
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
    return GridResult(clips, list(variants), config, len(batch_sizes), batch_sizes, elapsed)


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
    manifest = RunManifest(
        run_id=run_id,
        kind=kind,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        model=backend.describe(),
        config=asdict(result.config),
        variants=[asdict(v) for v in result.variants],
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
