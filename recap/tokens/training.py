"""Textual Inversion for text-to-audio diffusion: learn a new pseudo-word from a few clips.

The model stays frozen. The only trainable parameter is the new token's vectors
[n_vectors, dim]; they are spliced into the token embeddings on every forward pass
(``AudioBackend.input_embeddings``), so the embedding matrix is never resized or touched and no
rows need restoring. The loss is the model's own: v-prediction on Stable Audio's cosine schedule,
epsilon on AudioLDM's DDPM schedule. Training latents are encoded once, before the loop.

Recipe after diffusers' ``examples/textual_inversion`` and Plitsis et al. (2023): init from the
class word, lr 2e-2 for one vector, batch 4, 150+ steps, optional mixing with noise at 20 dB SNR.

Every setting is bounded in :func:`check_config` (the web form, its API and the CLI all pass
through it), clips are checked and far-too-loud ones normalised in :func:`load_clips`, and a loss
or vector that stops being finite ends training with a sentence; nothing non-finite is ever
checkpointed or returned.

Each checkpoint keeps the history of the steps (loss, norm, cosine to init, seconds) in
``history.json`` next to it, so a resumed training, in the CLI or the app, continues one curve
from step 1.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from recap.audio_io import AudioError, Clip, fit_length, load_audio, tame_peak
from recap.backends.base import AudioBackend
from recap.errors import BadInput
from recap.tokens.checkpoints import (
    StepRecord,
    TrainingDiverged,
    default_checkpoint_dir,
    history_to,
    load_checkpoint,
    save_checkpoint,
)
from recap.tokens.files import LearnedToken
from recap.limits import LIMITS, finite, text, whole
from recap.generation.runs import versions

log = logging.getLogger(__name__)

TEMPLATES = [
    "a recording of a {}",
    "the sound of a {}",
    "a clean recording of a {}",
    "a close-up recording of a {}",
    "a short clip of a {}",
    "an audio clip of a {}",
    "a good recording of a {}",
    "a {} sound",
]
INITS = ("word", "mean", "random")
SLOT = "{}"
# Bounds of the settings that LIMITS does not hold (one request must not hold the GPU or memory).
MAX_CLIPS = 32
MAX_CLIP_SECONDS = 60.0  # per training clip, read from the header before decoding
MAX_BATCH = 64
MAX_COPIES = 16
MAX_TEMPLATES = 64
MAX_TEMPLATE_CHARS = 200
MAX_LEARNING_RATE = 1.0  # AdamW steps of ~lr per coordinate; above 1 the token leaves the vocabulary's scale
MAX_SEED = 2**32 - 1




@dataclass
class TIConfig:
    """Settings of one Textual Inversion training (saved with the token).

    Attributes:
        placeholder: The new word, e.g. ``<my-bell>``; must not already be in the vocabulary.
        init: "word" (the class word's embedding, the paper's better MW setting), "mean" of the
            vocabulary, or "random" (normal with the table's std).
        init_word: The class word for init="word" (a single token, e.g. "bell").
        n_vectors: Vectors per token (more capacity, still no model weights changed).
        steps: Optimiser steps (the paper: 150).
        learning_rate: AdamW learning rate (the paper: 2e-2 for one vector).
        batch_size: Clips per step (the paper: 4).
        seconds: Training length; None = min(longest clip, model maximum, 10 s).
        templates: Prompt templates with ``{}`` for the placeholder.
        mix_snr_db: Mix each training copy with white noise at this SNR (the paper's MIX: 20); None = off.
        gain_db: Random gain in [-gain_db, +gain_db] per copy; 0 = off.
        random_crop: Crop long clips at random offsets (per copy) instead of from the start.
        augment_copies: Encoded copies per clip when augmenting/cropping (latents are encoded once).
        seed: Seeds augmentation, batches, timesteps and noise; same seed -> same token (0..2^32-1).
        checkpoint_every: Save a resumable checkpoint every N steps (and always on stop and at the end).
        preview_every: Generate a preview clip of the token prompt every N steps; 0 = never.
        preview_seconds: Preview length (default: the training length).
        preview_steps: Preview denoising steps (default: the model's).
        gradient_checkpointing: Recompute activations in backward; None = on for CUDA.
        init_weight: Weight of a pull toward the init embedding (squared distance relative to the
            init's own size), keeping the token near the vocabulary's embeddings; 0 = off.
    """

    placeholder: str = "<my-sound>"
    init: str = "word"
    init_word: str | None = None
    n_vectors: int = 1
    steps: int = 150
    learning_rate: float = 2e-2
    batch_size: int = 4
    seconds: float | None = None
    templates: list[str] = field(default_factory=lambda: list(TEMPLATES))
    mix_snr_db: float | None = None
    gain_db: float = 0.0
    random_crop: bool = True
    augment_copies: int = 4
    seed: int = 0
    checkpoint_every: int = 50
    preview_every: int = 0
    preview_seconds: float | None = None
    preview_steps: int | None = None
    gradient_checkpointing: bool | None = None
    init_weight: float = 0.0


@dataclass
class TIStep:
    """What ``on_step`` receives after every optimiser step, before that step's preview is rendered."""

    step: int
    steps: int
    loss: float
    norm: float
    cos_to_init: float
    seconds: float = 0.0  # wall-clock of the step (see StepRecord.seconds)
    checkpointed: bool = False
    notes: tuple[str, ...] = ()  # sentences about the clips (normalised levels), on the first step of a call
    preview_due: bool = False  # a preview of this step is rendered next and arrives through on_preview

    @property
    def record(self) -> StepRecord:
        """The step as the history keeps it."""
        return StepRecord(self.step, self.loss, self.norm, self.cos_to_init, self.seconds)


@dataclass
class TIPreview:
    """What ``on_preview`` receives once a preview clip of the token prompt is rendered."""

    step: int  # the step whose vectors it was rendered with
    audio: np.ndarray  # [C, T] at the backend's rate
    seconds: float  # wall-clock seconds the rendering took


# ----------------------------------------------------------------------------- checks
def init_token_id(backend: AudioBackend, word: str) -> int:
    """The single token id of ``word``; BadInput when it splits into several tokens."""
    tok = backend.tokenizer
    pieces = [i for i in tok(word, add_special_tokens=False).input_ids if tok.convert_ids_to_tokens(i) not in ("▁", "Ġ")]
    if len(pieces) != 1:
        names = tok.convert_ids_to_tokens(pieces)[:8]
        raise BadInput(
            f"init word {word!r} splits into {len(pieces)} tokens {names} for this model; pick a word that is one "
            "token (try a simpler class word) or use init='mean'"
        )
    return pieces[0]


def fill(template: str, placeholder: str) -> str:
    """The template with the placeholder in its ``{}`` (literal: ``str.format`` would read fields)."""
    return template.replace(SLOT, placeholder)


def check_config(backend: AudioBackend, config: TIConfig) -> TIConfig:
    """Checks every setting of ``config`` against its bound and ``backend``; returns it normalised.

    The one check the web form, its API and the CLI share, so a value no interface would offer
    (inf steps, a NaN rate, a million vectors) is refused with a sentence that names it.

    Raises:
        BadInput: the first unusable setting, named.
    """
    templates = config.templates
    if not isinstance(templates, (list, tuple)) or not 1 <= len(templates) <= MAX_TEMPLATES:
        raise BadInput(f"give a list of 1 to {MAX_TEMPLATES} prompt templates with {{}} where the token goes")
    c = dataclasses.replace(config, templates=list(templates))  # the caller's config stays as it was
    c.n_vectors = whole("vectors", c.n_vectors, 1, LIMITS.vectors)
    backend.check_placeholder(c.placeholder, c.n_vectors)
    c.steps = whole("steps", c.steps, 1, LIMITS.train_steps)
    c.learning_rate = finite("learning rate", c.learning_rate, 0.0, MAX_LEARNING_RATE)
    if c.learning_rate <= 0:
        raise BadInput(f"learning rate must be above 0 (the paper: 2e-2), got {c.learning_rate:g}")
    c.batch_size = whole("batch size", c.batch_size, 1, MAX_BATCH)
    if c.seconds is not None:
        c.seconds = backend.check_seconds(finite("clip seconds", c.seconds, 0.0, backend.max_seconds))
    if c.mix_snr_db is not None:
        c.mix_snr_db = finite("noise SNR (dB)", c.mix_snr_db, -20.0, 100.0)
    c.gain_db = finite("gain (dB)", c.gain_db, 0.0, 40.0)
    c.augment_copies = whole("augmented copies", c.augment_copies, 1, MAX_COPIES)
    c.seed = whole("seed", c.seed, 0, MAX_SEED)
    c.checkpoint_every = whole("checkpoint every", c.checkpoint_every, 0, LIMITS.train_steps)
    c.preview_every = whole("preview every", c.preview_every, 0, LIMITS.train_steps)
    if c.preview_seconds is not None:
        c.preview_seconds = backend.check_seconds(finite("preview seconds", c.preview_seconds, 0.0, backend.max_seconds))
    if c.preview_steps is not None:
        c.preview_steps = whole("preview steps", c.preview_steps, 1, LIMITS.steps)
    c.init_weight = finite("init_weight", c.init_weight, 0.0, 1e4)
    if not isinstance(c.random_crop, bool) or c.gradient_checkpointing not in (None, True, False):
        raise BadInput("random_crop and gradient_checkpointing must be true or false")
    if c.init not in INITS:
        raise BadInput(f"init must be one of {INITS}, got {str(c.init)[:40]!r}")
    if c.init == "word":
        if not c.init_word:
            raise BadInput("init='word' needs init_word (the class word, e.g. 'bell')")
        c.init_word = text("init word", c.init_word, 40, allow_newlines=False)
        init_token_id(backend, c.init_word)
    for i, t in enumerate(c.templates, 1):
        text(f"template {i}", t, MAX_TEMPLATE_CHARS, allow_newlines=False)
        if SLOT not in t:
            raise BadInput(f"template {i} ({t!r}) must contain {{}} where the token goes")
    return c


# ----------------------------------------------------------------------------- data
def _clip_hash(clip: Clip) -> str:
    return hashlib.sha256(clip.audio.tobytes()).hexdigest()[:16]


def load_clips(backend: AudioBackend, clips: Sequence[str | Path | Clip], min_seconds: float = 0.25,
               notes: list[str] | None = None) -> list[Clip]:
    """Loads and checks training clips at the model's rate and channel count.

    Clips with NaN or infinite samples are refused; clips far outside [-1, 1] (a float file
    peaking at 1e30 would overflow the noise mixing and the encoder) are scaled to peak 1 and
    a sentence saying so is logged and appended to ``notes``.

    Raises:
        AudioError: no clips, too many, or an unusable one (named).
    """
    if not clips:
        raise AudioError("no training clips given: Textual Inversion needs 1 or more clips of the sound")
    if len(clips) > MAX_CLIPS:
        raise AudioError(f"{len(clips)} training clips; at most {MAX_CLIPS} are accepted (a few are enough)")
    from recap.audio_io import resample, to_channels, validate

    out = []
    for c in clips:
        if isinstance(c, Clip):
            validate(c)
            if c.seconds > MAX_CLIP_SECONDS:
                raise AudioError(f"{c.source or 'clip'}: {c.seconds:.0f} s long; training clips may be at most "
                                 f"{MAX_CLIP_SECONDS:.0f} s")
            clip = c
        else:
            clip = load_audio(c, max_seconds=MAX_CLIP_SECONDS)
        clip, note = tame_peak(clip)
        if note:
            log.warning("%s", note)
            if notes is not None:
                notes.append(note)
        clip = resample(to_channels(clip, backend.channels), backend.sample_rate)
        if clip.seconds < min_seconds:
            raise AudioError(f"{clip.source or 'clip'}: {clip.seconds:.2f} s is too short; clips need at least {min_seconds} s")
        out.append(clip)
    return out


def training_latents(backend: AudioBackend, clips: list[Clip], config: TIConfig, seconds: float) -> torch.Tensor:
    """Encodes every (augmented) copy of every clip once: [n_copies, ...] float32."""
    rng = np.random.default_rng(config.seed)
    samples = int(seconds * backend.sample_rate)
    augment = config.mix_snr_db is not None or config.gain_db > 0 or config.random_crop
    copies = max(1, config.augment_copies) if augment else 1
    batch = []
    for clip in clips:
        for _ in range(copies):
            offset = int(rng.integers(0, clip.audio.shape[1] - samples + 1)) if config.random_crop and clip.audio.shape[1] > samples else 0
            audio = fit_length(clip.audio, samples, mode="loop", offset=offset).copy()
            if config.gain_db > 0:
                audio *= 10 ** (rng.uniform(-config.gain_db, config.gain_db) / 20)
            if config.mix_snr_db is not None:
                noise = rng.standard_normal(audio.shape).astype(np.float32)
                power = float(np.mean(audio**2)) / 10 ** (config.mix_snr_db / 10)
                audio += noise * np.sqrt(power)
            batch.append(audio)
    latents = torch.cat([backend.encode_audio(a, backend.sample_rate) for a in batch])
    if not torch.isfinite(latents).all():
        raise AudioError("the training clips encode to NaN or infinite latents; check the clips (levels, content)")
    return backend.training_latents(latents)


def initial_vectors(backend: AudioBackend, config: TIConfig, generator: torch.Generator) -> torch.Tensor:
    table = backend.text_encoder.get_input_embeddings().weight.detach().float().cpu()
    rows = table[: len(backend.tokenizer)]
    if config.init == "word":
        v = table[init_token_id(backend, config.init_word)][None]
    elif config.init == "mean":
        v = rows.mean(0, keepdim=True)
    else:
        v = torch.randn(1, table.shape[1], generator=generator) * rows.std()
    return v.repeat(config.n_vectors, 1).clone()


# ----------------------------------------------------------------------------- training
def train_token(
    backend: AudioBackend,
    clips: Sequence[str | Path | Clip],
    config: TIConfig,
    on_step: Callable[[TIStep], None] | None = None,
    stop: threading.Event | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_preview: Callable[[TIPreview], None] | None = None,
) -> LearnedToken:
    """Learns ``config.placeholder`` from ``clips`` with everything else frozen.

    Args:
        backend: A loaded model; its weights are never modified.
        clips: Paths or decoded clips (1..N) of the sound to learn.
        config: Settings (saved into the token's metadata).
        on_step: Receives a :class:`TIStep` after every step (loss, norm, cosine to init, seconds),
            before that step's preview is rendered, so a live view never waits on a preview.
        stop: When set, training checkpoints and returns the token so far (``meta['complete']`` False).
        checkpoint_dir: Where resumable checkpoints go (default: RECAP_HOME/tokens/.checkpoints/NAME).
        resume: Continue from the checkpoint in ``checkpoint_dir`` exactly where it stopped
            (its history too: ``checkpoint_history`` then holds every step from 1).
        on_preview: Receives a :class:`TIPreview` every ``config.preview_every`` steps and at the
            last step; previews are rendered only when it is given.

    Returns:
        The :class:`LearnedToken` (save it with :func:`recap.tokens.files.save_token`);
        ``meta['notes']`` holds sentences about the clips (e.g. normalised levels), which the
        first :class:`TIStep` of the call carries too.

    Raises:
        BadInput: a setting or clip that cannot be used.
        TrainingDiverged: the loss or the vectors became NaN or infinite (nothing is saved
            from that step on; an earlier checkpoint stays as it was).
    """
    # 1. Check inputs and load clips
    config = check_config(backend, config)
    notes: list[str] = []
    loaded = load_clips(backend, clips, notes=notes)
    seconds = float(config.seconds or min(max(c.seconds for c in loaded), backend.max_seconds, 10.0))
    seconds = backend.check_seconds(seconds)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(config.placeholder)
    meta = {
        "format": "recap.token/1", "model_id": backend.model_id, "model_name": backend.name, "family": backend.family,
        "random_weights": backend.random_weights, "embedding_dim": backend.embedding_dim,
        "placeholder": config.placeholder, "init": config.init, "init_word": config.init_word,
        "n_vectors": config.n_vectors, "steps": config.steps, "train_seconds": seconds,
        "clip_hashes": [_clip_hash(c) for c in loaded], "clip_names": [c.source for c in loaded],
        "config": asdict(config), "versions": versions(), "device": str(backend.device), "notes": notes,
    }
    # 2. Encode the training clips once
    latents = training_latents(backend, loaded, config, seconds)
    # 3. The one trainable parameter
    generator = torch.Generator("cpu").manual_seed(config.seed)
    init = initial_vectors(backend, config, generator)
    vectors = torch.nn.Parameter(init.clone().to(backend.device))
    optimizer = torch.optim.AdamW([vectors], lr=config.learning_rate, weight_decay=0.0)
    step, losses, history = 0, [], []
    if resume:
        ckpt = load_checkpoint(checkpoint_dir)
        if ckpt is None:
            raise BadInput(f"nothing to resume: no checkpoint in {checkpoint_dir}")
        tensors, info = ckpt
        if info.get("model_id") != backend.model_id or info.get("placeholder") != config.placeholder:
            raise BadInput(f"checkpoint in {checkpoint_dir} is for {info.get('placeholder')} on {info.get('model_id')}")
        if tensors["vectors"].shape != vectors.shape:
            raise BadInput(f"checkpoint vectors {tuple(tensors['vectors'].shape)} do not match config {tuple(vectors.shape)}")
        with torch.no_grad():
            vectors.copy_(tensors["vectors"].to(vectors.device))
        init = tensors["init"]
        generator.set_state(tensors["rng"])
        if "opt.exp_avg" in tensors:
            optimizer.state[vectors] = {
                "step": torch.tensor(info["opt_step"]),
                "exp_avg": tensors["opt.exp_avg"].to(vectors.device),
                "exp_avg_sq": tensors["opt.exp_avg_sq"].to(vectors.device),
            }
        step, losses = int(info["step"]), list(info["losses"])
        history = history_to(checkpoint_dir, step, losses)
        log.info("resuming %s at step %d", config.placeholder, step)
    gc_on = config.gradient_checkpointing if config.gradient_checkpointing is not None else backend.device.type == "cuda"
    backend.set_gradient_checkpointing(gc_on)
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none
    scaler = torch.amp.GradScaler("cuda", enabled=backend.dtype == torch.float16 and backend.device.type == "cuda")
    init_dev = init.to(backend.device)

    def checkpoint() -> None:
        save_checkpoint(checkpoint_dir, vectors, init, optimizer, generator, step, losses, meta, history)

    # 4. Train
    reported = False  # the clip notes ride on the first step this call reports
    try:
        while step < config.steps:
            if stop is not None and stop.is_set():
                break
            started = time.perf_counter()
            idx = torch.randint(latents.shape[0], (config.batch_size,), generator=generator)
            which = torch.randint(len(config.templates), (config.batch_size,), generator=generator)
            prompts = [fill(config.templates[int(j)], config.placeholder) for j in which]
            enc = backend.tokenize(prompts, tokens={config.placeholder: vectors})
            loss = backend.ti_loss(latents[idx], enc, generator, seconds=seconds)
            if not torch.isfinite(loss.detach()):
                raise TrainingDiverged(_diverged(step + 1, f"the loss became {float(loss.detach())}", checkpoint_dir))
            objective = loss
            if config.init_weight > 0:
                drift = (vectors - init_dev).pow(2).sum() / init_dev.pow(2).sum().clamp(min=1e-12)
                objective = loss + config.init_weight * drift
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(objective).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            losses.append(round(float(loss.detach()), 6))
            if not torch.isfinite(vectors.detach()).all():
                raise TrainingDiverged(_diverged(step, "the token's vectors became NaN or infinite", checkpoint_dir))
            with torch.no_grad():
                norm = round(float(vectors.norm(dim=1).mean()), 6)
                cos = round(float(torch.nn.functional.cosine_similarity(vectors, init_dev, dim=1).mean()), 6)
            # float(loss) above waited for the device, so this is the step's real wall-clock time
            history.append(StepRecord(step, losses[-1], norm, cos, round(time.perf_counter() - started, 4)))
            saved = config.checkpoint_every > 0 and step % config.checkpoint_every == 0
            if saved:
                checkpoint()
            due = (on_preview is not None and config.preview_every > 0
                   and (step % config.preview_every == 0 or step == config.steps))
            if on_step is not None:
                on_step(TIStep(step, config.steps, losses[-1], norm, cos, history[-1].seconds, saved,
                               () if reported else tuple(notes), due))
                reported = True
            if due:
                started = time.perf_counter()
                audio = _preview(backend, config, vectors.detach(), seconds)
                on_preview(TIPreview(step, audio, round(time.perf_counter() - started, 4)))
    finally:
        backend.set_gradient_checkpointing(False)
    # 5. Checkpoint where it ended (a stop can be resumed), return the token
    checkpoint()
    meta.update(steps_done=step, complete=step >= config.steps, losses=losses,
                created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return LearnedToken(config.placeholder, vectors.detach().float().cpu().clone(), meta)


def _diverged(step: int, what: str, checkpoint_dir: Path) -> str:
    kept = _checkpoint_note(checkpoint_dir)
    return (f"Training stopped at step {step}: {what}. Nothing from this training was saved{kept}. "
            "Try a lower learning rate, fewer vectors or other clips.")


def _checkpoint_note(checkpoint_dir: Path) -> str:
    try:
        info = json.loads((checkpoint_dir / "checkpoint.json").read_text())
        return f" (the checkpoint of step {int(info['step'])} is kept as it was)"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _preview(backend: AudioBackend, config: TIConfig, vectors: torch.Tensor, seconds: float) -> np.ndarray:
    out = backend.generate(
        [fill(config.templates[0], config.placeholder)], [config.seed],
        seconds=config.preview_seconds or seconds, steps=config.preview_steps,
        tokens={config.placeholder: vectors},
    )
    return out.audio[0].numpy()


@torch.no_grad()
def evaluation_loss(
    backend: AudioBackend, latents: torch.Tensor, prompt: str, tokens: dict[str, torch.Tensor] | None = None,
    seconds: float | None = None, draws: int = 8, seed: int = 1234,
) -> float:
    """Mean denoising loss of ``prompt`` on ``latents`` over a fixed set of timesteps and noises.

    The same seed gives the same timesteps and noise whatever the prompt or token, so two values
    compare prompts fairly (the training loss, drawn fresh every step, is too noisy for that).
    """
    generator = torch.Generator("cpu").manual_seed(seed)
    enc = backend.tokenize([prompt] * latents.shape[0], tokens)
    total = 0.0
    for _ in range(draws):
        total += float(backend.ti_loss(latents, enc, generator, seconds=seconds))
    return total / draws
