"""Style transfer with a prompt (often a learned token): audio-to-audio by partial noising.

Paper 001, eq. 2: encode the source clip, noise its latents to the level that the transfer
strength t selects on the model's own schedule, and run only the rest of the denoising with the
prompt. t = 0 returns the source latents untouched (decoded, that is the autoencoder's
reconstruction) and t = 1 is plain generation from the seed's noise. Every strength of a seed
starts from that seed's noise (and on Stable Audio the same SDE noise), so a sweep over t is a
fair comparison.

**Strength is the noise's share of the start.** diffusers' img2img convention (run the last
round(t·N) of N steps) spends the strength on the schedule's steps, not on how much of the source
survives: on Stable Audio's σ 0.3-500 schedule, t = 0.25 already starts at σ ≈ 1.9, where the
noise outweighs unit-scale latents, so every t above ~0.25 is plain generation and the paper's
"0.4-0.6" (AudioLDM's schedule) means nothing there. Here t is the share of the start's variance
that is noise, ``t = σ² / (σ² + σ_data²)`` with σ_data = 1 (the scale both families' latents
are trained at; on a DDPM schedule this is 1 − ᾱ): the sampler starts at the first step whose
share is at most t. t = 0.5 starts where noise and source weigh the same (σ = 1) on every model;
the start's σ and share are reported with every result (:class:`StartPoint`). A schedule's last
step still carries some noise (σ_min = 0.3 is a share of 0.08 on Stable Audio), so a smaller
t runs that one step.

``StableAudioPipeline(initial_audio_waveforms=...)`` is not used: it adds the encoded audio to
unit noise, scales the sum by ``init_noise_sigma`` (~500) and runs the whole schedule, so the
source is drowned and barely matters (diffusers issue 10861). Here the source is noised the way
the EDM sampler expects, x = x0 + sigma·noise with sigma the schedule's sigma at the first step
that runs, and the sampler starts at that step.

The curves of the paper's Fig. 4 (each output's similarity to the source and to the token's
training clips, per strength, averaged over seeds) come from :mod:`recap.analysis.transfer_curves`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from recap.audio_io import Clip, fit_length, resample, to_channels, validate
from recap.backends.base import AudioBackend
from recap.errors import BadInput
from recap.generation.grid import (
    REQUEST_LIMIT,
    GenerationConfig,
    GridClip,
    GridResult,
    Progress,
    Variant,
    WorkLimit,
    check_variants,
    check_work,
)
from recap.limits import LIMITS

log = logging.getLogger(__name__)

# Noise shares (module docstring): σ 0, 0.5, 0.82, 1.22, 2, then plain generation; where the toy
# model's outputs move from the source to the prompt (see README, style transfer).
DEFAULT_STRENGTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# The data scale the share is taken against (Stable Audio's sampler assumes sigma_data = 1).
SIGMA_DATA = 1.0
# The token's training clips are encoded in one batch with the source: a few, not a folder.
MAX_REFERENCES = 16


@dataclass
class TransferConfig:
    """Settings of one strength sweep (saved in the run's manifest).

    Attributes:
        strengths: Transfer strengths in [0, 1]; 0 = the source, 1 = plain generation.
        seeds: Seeds; every strength of a seed shares that seed's noise.
        seconds: Length in seconds; None = the source's length, capped at the model's maximum.
        steps: Denoising steps of the full schedule (strength t runs those from the first step
            whose noise share is at most t).
        guidance: Classifier-free guidance scale (<= 1 turns it off).
        negative_prompt: Text to steer away from.
        max_batch: Most seeds per denoising call; None = all seeds of a strength at once.
        wav_subtype: "FLOAT" or "PCM_16".
    """

    strengths: list[float] = field(default_factory=lambda: list(DEFAULT_STRENGTHS))
    seeds: list[int] = field(default_factory=lambda: [0])
    seconds: float | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    max_batch: int | None = None
    wav_subtype: str = "FLOAT"

    def generation(self) -> GenerationConfig:
        """The generation settings in the layout every run manifest records."""
        return GenerationConfig(self.seconds, self.steps, self.guidance, self.negative_prompt, list(self.seeds),
                                self.max_batch, self.wav_subtype)

    def check(self, max_seconds: float | None = None, model: str = "") -> TransferConfig:
        """This config with every value checked (the generation settings as
        :meth:`GenerationConfig.check` checks them); :class:`BadInput` names the first bad one."""
        g = self.generation().check(max_seconds, model)
        return replace(self, strengths=check_strengths(self.strengths), seeds=g.seeds, seconds=g.seconds,
                       steps=g.steps, guidance=g.guidance, negative_prompt=g.negative_prompt, max_batch=g.max_batch,
                       wav_subtype=g.wav_subtype)


@dataclass(frozen=True)
class StartPoint:
    """Where the sampler starts for one strength.

    Attributes:
        strength: The requested strength.
        start_step: Index of the first schedule step that runs (== steps: none runs).
        steps_run: Denoising steps that run.
        timestep: The scheduler's timestep at ``start_step`` (None when no step runs).
        sigma: Noise-to-signal ratio of the start: Stable Audio's EDM sigma, or
            sqrt((1 − ᾱ)/ᾱ) on a DDPM schedule (AudioLDM); 0 when no step runs.
    """

    strength: float
    start_step: int
    steps_run: int
    timestep: float | None
    sigma: float

    @property
    def noise_share(self) -> float:
        """The share of the start's variance that is noise (what ``strength`` asks for, on the schedule's grid)."""
        return noise_share(self.sigma)


@dataclass
class TransferResult:
    """A strength sweep in memory: what :func:`save_transfer` writes.

    Attributes:
        grid: The clips, one variant per strength (labels ``strength-0.40``), in the layout of a
            generation grid (``final`` = denoised latents, ``initial`` = the seed's noise).
        prompt: The prompt every strength was denoised with.
        config: The settings, model defaults filled in.
        starts: One :class:`StartPoint` per strength, in ``config.strengths`` order.
        source: The source at the model's rate and channel count, cut or padded to ``config.seconds``.
        source_latents: [1, ...] its latents in the generation shape.
        references: The learned token's training clips (model rate, fitted like the source); may be empty.
        reference_latents: [M, ...] their latents, or None without references.
    """

    grid: GridResult
    prompt: str
    config: TransferConfig
    starts: list[StartPoint]
    source: Clip
    source_latents: torch.Tensor
    references: list[Clip] = field(default_factory=list)
    reference_latents: torch.Tensor | None = None


# ----------------------------------------------------------------------------- schedule maths
def strength_label(strength: float) -> str:
    """The variant label of a strength: ``strength-0.40``."""
    return f"strength-{strength:.2f}"


def check_strengths(strengths: Sequence[float]) -> list[float]:
    """1 to ``LIMITS.strengths`` finite floats in [0, 1] with distinct labels; :class:`BadInput`
    (a ValueError) naming the bad value otherwise."""
    if isinstance(strengths, (str, bytes)) or not isinstance(strengths, Sequence):
        raise BadInput(f"transfer strengths must be a list of numbers in [0, 1], got {type(strengths).__name__}")
    if not strengths:
        raise BadInput("no transfer strengths given")
    if len(strengths) > LIMITS.strengths:
        raise BadInput(f"{len(strengths):,} transfer strengths is too many for one sweep; the limit is {LIMITS.strengths}")
    out = []
    for s in strengths:
        try:
            value = float(s)
        except (TypeError, ValueError):
            raise BadInput(f"transfer strength must be in [0, 1], got {str(s)[:40]!r}") from None
        if isinstance(s, bool) or not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise BadInput(f"transfer strength must be in [0, 1], got {value}")
        out.append(value)
    labels = [strength_label(s) for s in out]
    repeated = sorted({lb for lb in labels if labels.count(lb) > 1})
    if repeated:
        raise BadInput(f"strengths repeat (to two decimals): {', '.join(repeated)}")
    return out


def noise_share(sigma: float) -> float:
    """σ² / (σ² + σ_data²): the share of a noised latent's variance that is noise (0 clean, 1 pure noise)."""
    return sigma * sigma / (sigma * sigma + SIGMA_DATA * SIGMA_DATA)


def start_step(sigmas: Sequence[float], strength: float) -> int:
    """Index of the first step to run for ``strength``, given the schedule's start ``sigmas`` (one per step,
    falling): the first whose noise share is at most ``strength``; ``len(sigmas)`` (none) for 0, 0 for 1."""
    n = len(sigmas)
    if strength <= 0.0:
        return n
    if strength >= 1.0:
        return 0
    # 1e-12: a share equal to the strength (t = 0.5 at sigma = 1) starts there despite float rounding
    k = next((i for i, s in enumerate(sigmas) if noise_share(s) <= strength + 1e-12), n - 1)
    return k


def schedule_sigmas(backend: AudioBackend, steps: int) -> list[float]:
    """The sampler's noise level at the start of each of its ``steps`` steps, on ``backend``'s schedule."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [backend.noise_level(steps, k)[1] for k in range(steps)]


def start_point(backend: AudioBackend, strength: float, steps: int) -> StartPoint:
    """The start step, timestep and noise level that ``strength`` selects on ``backend``'s schedule."""
    k = start_step(schedule_sigmas(backend, steps), strength)
    if k == steps:
        return StartPoint(strength, k, 0, None, 0.0)
    t, sigma = backend.noise_level(steps, k)
    return StartPoint(strength, k, steps - k, t, sigma)


def noised_start(
    backend: AudioBackend, latents: torch.Tensor, noise: torch.Tensor, strength: float, steps: int
) -> torch.Tensor:
    """The latents the sampler starts from for ``strength`` (paper 001, eq. 2).

    Args:
        backend: The model whose schedule sets the noise level.
        latents: [B, ...] clean source latents in the generation shape.
        noise: [B, ...] standard-normal noise (``backend.initial_noise(seeds, seconds)``).
        strength: In [0, 1].
        steps: Steps of the full schedule.

    Returns:
        [B, ...] float32 on the CPU: ``latents`` for no step; ``noise · init_noise_sigma`` (plain
        generation's start) for all steps; otherwise ``latents + sigma_k · noise`` on Stable
        Audio's EDM schedule or ``sqrt(ᾱ_t)·latents + sqrt(1 − ᾱ_t)·noise`` on AudioLDM's, at the
        first step k that runs.
    """
    if latents.shape != noise.shape:
        raise ValueError(f"latents {tuple(latents.shape)} and noise {tuple(noise.shape)} differ in shape")
    x0, noise = latents.float().cpu(), noise.float().cpu()
    k = start_step(schedule_sigmas(backend, steps), strength)
    if k == steps:
        return x0.clone()
    if k == 0:
        return noise * backend.schedule(steps).init_noise_sigma
    return backend.noise_to(x0, noise, steps, k)


# ----------------------------------------------------------------------------- source latents
def fit_clip(backend: AudioBackend, clip: Clip, seconds: float) -> Clip:
    """``clip`` at the model's rate and channel count, cut (or padded with silence) to ``seconds``."""
    validate(clip, allow_silent=True)
    clip = resample(to_channels(clip, backend.channels), backend.sample_rate)
    samples = int(round(seconds * backend.sample_rate))
    return Clip(np.ascontiguousarray(fit_length(clip.audio, samples, mode="pad")), clip.sample_rate, clip.source)


def clip_latents(backend: AudioBackend, clips: Sequence[Clip]) -> torch.Tensor:
    """Latents [M, ...] of fitted clips of one length, in the shape the sampler denoises.

    Stable Audio denoises its whole window whatever the length asked for, so the clips' latents
    are extended with the latents of silence (``training_latents``), as generation fills the
    window past the requested length. One encoder call for all clips.
    """
    if not clips or len({c.audio.shape for c in clips}) != 1:
        raise ValueError(f"need one or more clips of one shape, got shapes {[c.audio.shape for c in clips]}")
    seconds = clips[0].seconds
    audio = np.stack([c.audio for c in clips])
    z = backend.training_latents(backend.encode_audio(audio, clips[0].sample_rate))
    expected = tuple(backend.latent_shape(seconds))
    if tuple(z.shape[1:]) != expected:
        raise ValueError(f"latents {tuple(z.shape[1:])} do not match the generation shape {expected} "
                         f"for {seconds:.3f} s on {backend.name}")
    return z


def content_latents(backend: AudioBackend, latents: torch.Tensor, seconds: float) -> torch.Tensor:
    """The part of generation-shaped latents [B, ...] that holds the ``seconds`` of audio
    (:meth:`AudioBackend.content_latents`: on Stable Audio, without the window's silent padding)."""
    return backend.content_latents(latents, seconds)


# ----------------------------------------------------------------------------- the sweep
def resolve(backend: AudioBackend, config: TransferConfig, source_seconds: float) -> TransferConfig:
    """``config`` with the model's defaults filled in and every value checked (:class:`BadInput`)."""
    d = backend.defaults
    config = config.check(backend.max_seconds, backend.name)
    seconds = config.seconds if config.seconds is not None else min(source_seconds, backend.max_seconds)
    return replace(
        config,
        seconds=seconds,
        steps=config.steps if config.steps is not None else d.steps,
        guidance=config.guidance if config.guidance is not None else d.guidance,
        negative_prompt=config.negative_prompt if config.negative_prompt is not None else d.negative_prompt,
    ).check(backend.max_seconds, backend.name)


def sweep_work(config: TransferConfig, sigmas: Sequence[float] | None = None) -> tuple[int, int]:
    """(clips, denoising steps summed over clips) of a resolved sweep.

    Args:
        sigmas: The schedule's start sigmas (:func:`schedule_sigmas`) for the exact count; None
            (before the model is loaded) counts every strength above 0 as the whole schedule, a bound.
    """
    steps = int(config.steps or 0)
    n = len(config.seeds)
    if sigmas is None:
        run = [steps if s > 0 else 0 for s in config.strengths]
    else:
        run = [len(sigmas) - start_step(sigmas, s) for s in config.strengths]
    return len(config.strengths) * n, sum(run) * n


@torch.no_grad()
def transfer(
    backend: AudioBackend,
    source: Clip,
    prompt: str,
    config: TransferConfig,
    tokens: Mapping[str, torch.Tensor] | None = None,
    references: Sequence[Clip] = (),
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    limit: WorkLimit | None = REQUEST_LIMIT,
) -> TransferResult:
    """Transfers ``source`` towards ``prompt`` at every strength of ``config`` and every seed.

    Args:
        backend: A loaded model.
        source: The clip to transform (any rate / channel count; converted to the model's).
        prompt: The target description, usually with a learned token (``"a recording of <oud>"``).
        config: Strengths, seeds and generation settings (model defaults fill the gaps).
        tokens: Learned tokens (placeholder -> vectors) the prompt may use.
        references: The token's training clips, for the "similarity to the target" curve.
        progress: ``progress(done_clips, total_clips, message)``.
        stop: Set it to stop at the next denoising step (raises ``Cancelled``).
        limit: The most work the sweep may be (:data:`recap.generation.grid.REQUEST_LIMIT`); None for no bound.

    Returns:
        A :class:`TransferResult`; strength s, seed k is ``result.grid.clip(strength_label(s), k)``.

    Raises:
        BadInput: a value out of its bounds, or a sweep over ``limit``; the message names it.
    """
    # 1. Check inputs (before any work: a refused request costs nothing)
    if len(references) > MAX_REFERENCES:
        raise BadInput(f"{len(references):,} target clips is too many; the limit is {MAX_REFERENCES}")
    if not isinstance(prompt, str):
        raise BadInput(f"the prompt must be text, got {type(prompt).__name__}")
    method = "token" if tokens and any(p in prompt for p in tokens) else "manual"
    variants = [Variant(strength_label(s), prompt, method, 1) for s in check_strengths(config.strengths)]
    check_variants(variants)
    cfg = resolve(backend, config, source.seconds)
    check_work(*sweep_work(cfg, schedule_sigmas(backend, cfg.steps)), limit, what="this sweep")
    # 2. Source (and references) at the model's rate, fitted to the length, encoded once
    src = fit_clip(backend, source, cfg.seconds)
    refs = [fit_clip(backend, r, cfg.seconds) for r in references]
    latents = clip_latents(backend, [src, *refs])
    z0, ref_z = latents[:1], (latents[1:] if refs else None)
    # 3. Noise once per seed: the fairness guarantee, shared by every strength
    noise = {s: backend.initial_noise([s], cfg.seconds)[0] for s in cfg.seeds}
    batch = cfg.max_batch or len(cfg.seeds)
    chunks = [cfg.seeds[i : i + batch] for i in range(0, len(cfg.seeds), batch)]
    total, done = len(variants) * len(cfg.seeds), 0
    clips: list[GridClip] = []
    starts = [start_point(backend, s, cfg.steps) for s in cfg.strengths]
    batch_sizes: list[int] = []
    begin = time.perf_counter()
    # 4. Denoise each strength from its start step (start step 0: exactly what `generate` runs)
    for variant, point in zip(variants, starts):
        for seeds in chunks:
            initial = torch.stack([noise[s] for s in seeds])
            x0 = z0.expand(len(seeds), *z0.shape[1:])
            if point.steps_run == 0:
                final = x0.clone()
            else:
                def on_step(step: int, steps: int, _n=len(seeds), _d=done, _lb=variant.label) -> None:
                    if progress is not None:
                        progress(_d + _n * step / steps, total, f"{_lb}: step {step}/{steps}")

                start = noised_start(backend, x0, initial, point.strength, cfg.steps) if point.start_step else None
                enc = backend.tokenize([prompt] * len(seeds), tokens)
                negative = backend.tokenize([cfg.negative_prompt] * len(seeds), tokens) if cfg.negative_prompt else None
                final = backend.sample(enc, negative, initial, seeds, cfg.seconds, cfg.steps, cfg.guidance, on_step,
                                       stop, start_step=point.start_step, start_latents=start).float().cpu()
                batch_sizes.append(len(seeds))
            audio = backend.decode(final, cfg.seconds)
            clips += [GridClip(variant, s, audio[i].numpy(), initial[i], final[i]) for i, s in enumerate(seeds)]
            done += len(seeds)
            if progress is not None:
                progress(done, total, f"{variant.label}: done")
    elapsed = time.perf_counter() - begin
    log.info("transfer: %d clips, %d denoising calls, %.2f s", len(clips), len(batch_sizes), elapsed)
    grid = GridResult(clips, variants, cfg.generation(), len(batch_sizes), batch_sizes, elapsed)
    return TransferResult(grid, prompt, cfg, starts, src, z0, refs, ref_z)
