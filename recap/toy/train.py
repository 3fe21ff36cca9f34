"""Training of the `toy` model: an Oobleck VAE, then a DiT with its T5 text encoder, on the toy world.

Stage 1 trains the VAE on freshly synthesised clips of every source (it is the model's ear, like
Stable Audio's VAE trained on general audio). Its latent std is then folded into the encoder's
last and the decoder's first convolution, because ``StableAudioPipeline`` applies no latent
scaling and the sampler assumes unit-variance data (sigma_data = 1). Stage 2 encodes a fixed
dataset once and trains the DiT, the T5 encoder and the projection jointly from scratch with
v-prediction on t ~ U[0, 1], alpha = cos(t pi/2), sigma = sin(t pi/2) -- the objective
``CosineDPMSolverMultistepScheduler`` samples. Caption dropout zeroes the whole cross-attention
sequence, seconds tokens included, as the pipeline's unconditional branch does.

Both stages checkpoint every ``checkpoint_every`` steps into a work folder and resume from there.
The shipped model is written by :func:`export` as fp16 safetensors under ``assets/toy``, which
``load_backend("toy")`` loads into a ``StableAudioPipeline``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

from recap.toy import world as W
from recap.paths import atomic_write_json, replace_dir

log = logging.getLogger(__name__)

# progress(stage, step, total_steps, loss)
Progress = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class World:
    """What the recipe needs of a world module (:mod:`recap.toy.world` or :mod:`recap.toy.music`).

    Attributes:
        module: The world: SAMPLE_RATE, CLIP_SAMPLES, MAX_TOKENS, all_specs, synthesize, dataset,
            caption, build_tokenizer.
        every: Every source of the world, held-out ones included (the VAE and the latent scale see them all).
        seconds: (lowest, span) of the seconds_end drawn per training batch (s).
        probe_per_spec: Clips per spec of every source that measure the latent std.
        recipe: The world's defaults that differ from :class:`ToyConfig`'s (the `toy` recipe).
    """

    module: ModuleType
    every: tuple[str, ...]
    seconds: tuple[float, float]
    probe_per_spec: int = 2
    recipe: dict = field(default_factory=dict)
    # Render a VAE crop's clip only up to the crop's end (the phrase so far, normalised on it): for
    # rendered worlds, where a whole clip costs a third of a VAE step.
    render_to_crop: bool = False

    @property
    def clip_seconds(self) -> float:
        return self.module.CLIP_SAMPLES / self.module.SAMPLE_RATE


def world(name: str) -> World:
    """The world a recipe trains on: "toy" (synthetic sounds) or "music" (soundfont renderings)."""
    if name == "toy":
        return World(W, W.SOURCES, (0.5, 0.524))
    if name == "music":
        from recap.toy import music

        # Sized to train in under 45 minutes on one CPU thread (measured on a shared 2-core CPU: VAE
        # 1329 s, DiT with the dataset's encoding 1008 s): far fewer steps and clips than `toy`'s, at 4x
        # its samples a clip.
        recipe = {"world": "music", "vae_steps": 3000, "clips_per_spec": 4, "dit_steps": 2500, "dit_batch": 32}
        return World(music, music.INSTRUMENTS, (1.0, 1.048), probe_per_spec=1, recipe=recipe, render_to_crop=True)
    raise ValueError(f"unknown world {name!r}; known: toy, music")


@dataclass
class ToyConfig:
    """The whole recipe of the `toy` model (written into the model card and next to the weights).

    Attributes:
        seed: Seeds weights, data and every random draw of both stages.
        vae_hidden: Oobleck ``encoder_hidden_size``; the latent has half as many channels.
        vae_multiples: Oobleck ``channel_multiples``.
        vae_ratios: Oobleck ``downsampling_ratios`` (hop = product).
        vae_steps / vae_batch / vae_lr: Stage 1 optimisation.
        vae_crop: Samples per stage-1 training crop (the VAE is convolutional: short crops train it
            as well as whole clips, at a fraction of the cost).
        vae_stft_sizes: FFT sizes of the multi-resolution STFT loss of stage 1.
        vae_kl: Weight of a penalty on the latent mean's size (the KL's mean term); the posterior
            is not sampled in training: at this size and budget its noise swamped the signal.
        dit_layers / dit_heads / dit_head_dim / dit_kv_heads: DiT size.
        t5_dim / t5_layers / t5_heads: Text-encoder size.
        clips_per_spec: Clips of every (source, pitch, rhythm) encoded once for stage 2.
        captions_per_clip: Captions drawn (and tokenised) per clip up front.
        dit_steps / dit_batch / dit_lr: Stage 2 optimisation (AdamW, cosine decay after warm-up).
        caption_dropout: Share of rows trained unconditionally (for classifier-free guidance).
        ema: EMA decay of the stage-2 weights (the EMA weights are shipped).
        checkpoint_every: Steps between resumable checkpoints.
    """

    seed: int = 0
    world: str = "toy"  # "toy" (recap.toy.world) or "music" (recap.toy.music)
    # 16 / 12,000 steps / 1e-3: the smallest VAE measured to render the warble's vibrato at all
    # (8 / 2,000 / 5e-4 kept pitch and rhythm but rendered every warble as a steady tone)
    vae_hidden: int = 16
    vae_multiples: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    vae_ratios: list[int] = field(default_factory=lambda: [2, 4, 4, 8])
    vae_steps: int = 12000
    vae_batch: int = 8
    vae_crop: int = 2048
    vae_lr: float = 1e-3
    vae_kl: float = 1e-4
    # FFT sizes of the stage-1 spectral loss; up to 512 (32 ms at 16 kHz) resolves the toy's tones,
    # while instrument timbre (harmonic spacing under ~100 Hz in the low register) needs longer windows
    vae_stft_sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    dit_layers: int = 4
    dit_heads: int = 4
    dit_head_dim: int = 16
    dit_kv_heads: int = 2
    t5_dim: int = 64
    t5_layers: int = 2
    t5_heads: int = 4
    clips_per_spec: int = 40
    captions_per_clip: int = 8
    dit_steps: int = 6000
    dit_batch: int = 64
    dit_lr: float = 6e-4
    caption_dropout: float = 0.1
    ema: float = 0.998
    checkpoint_every: int = 100

    @property
    def hop(self) -> int:
        return int(np.prod(self.vae_ratios))

    @property
    def frames(self) -> int:
        return world(self.world).module.CLIP_SAMPLES // self.hop

    @property
    def latent_channels(self) -> int:
        return self.vae_hidden // 2


def recipe(world_name: str = "toy", **overrides) -> ToyConfig:
    """The default recipe of a world ("toy": :class:`ToyConfig`'s defaults), with ``overrides``."""
    return ToyConfig(**{**world(world_name).recipe, **overrides, "world": world_name})


# ----------------------------------------------------------------------------- components
def build_vae(config: ToyConfig):
    from diffusers import AutoencoderOobleck

    return AutoencoderOobleck(
        encoder_hidden_size=config.vae_hidden, downsampling_ratios=config.vae_ratios,
        channel_multiples=config.vae_multiples, decoder_channels=config.vae_hidden,
        decoder_input_channels=config.latent_channels, audio_channels=1,
        sampling_rate=world(config.world).module.SAMPLE_RATE,
    )


def build_pipeline(config: ToyConfig, vae, tokenizer):
    """A ``StableAudioPipeline`` around a trained VAE with fresh DiT, T5 and projection."""
    from diffusers import (
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    from recap.backends.stable_audio import sao_scheduler

    width = config.dit_heads * config.dit_head_dim
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=config.t5_dim, d_kv=config.t5_dim // config.t5_heads, d_ff=2 * config.t5_dim,
        num_layers=config.t5_layers, num_heads=config.t5_heads, relative_attention_num_buckets=16, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    transformer = StableAudioDiTModel(
        sample_size=config.frames, in_channels=config.latent_channels, num_layers=config.dit_layers,
        attention_head_dim=config.dit_head_dim, num_attention_heads=config.dit_heads,
        num_key_value_attention_heads=config.dit_kv_heads, out_channels=config.latent_channels,
        cross_attention_dim=width, time_proj_dim=width, global_states_input_dim=2 * width,
        cross_attention_input_dim=width,
    )
    # max_value must cover the longest clip's end time or the seconds conditioning saturates.
    max_value = math.ceil(world(config.world).clip_seconds)
    projection = StableAudioProjectionModel(text_encoder_dim=config.t5_dim, conditioning_dim=width, min_value=0, max_value=max_value)
    scheduler = sao_scheduler()  # Stable Audio Open's sampler settings
    return StableAudioPipeline(
        vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
        transformer=transformer, scheduler=scheduler,
    )


# ----------------------------------------------------------------------------- checkpoints
def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load(path: Path) -> dict | None:
    # weights_only: the work folder is a path users name; a checkpoint must never run code
    return torch.load(path, weights_only=True) if path.is_file() else None


# ----------------------------------------------------------------------------- stage 1: VAE
def stft_loss(pred: torch.Tensor, target: torch.Tensor, sizes: tuple[int, ...] = (64, 128, 256, 512)) -> torch.Tensor:
    """Multi-resolution STFT loss (spectral convergence + log-magnitude L1) over [B, T] audio."""
    total = pred.new_zeros(())
    for n in sizes:
        window = torch.hann_window(n, device=pred.device)
        p = torch.stft(pred, n, n // 4, window=window, return_complex=True).abs()
        t = torch.stft(target, n, n // 4, window=window, return_complex=True).abs()
        total = total + (t - p).norm() / t.norm().clamp(min=1e-6) + (torch.log(p + 1e-3) - torch.log(t + 1e-3)).abs().mean()
    return total / len(sizes)


def train_vae(config: ToyConfig, work: Path, progress: Progress | None = None):
    """Stage 1; resumes from ``work/vae.pt``. Returns the trained (unscaled) VAE."""
    torch.manual_seed(config.seed)
    vae = build_vae(config)
    with torch.no_grad():  # a near-silent start: a loud random output drowns the signal (measured)
        vae.decoder.conv2.weight_g.mul_(0.01)
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, betas=(0.8, 0.99), weight_decay=0.0)
    rng = np.random.default_rng(config.seed + 1)
    w = world(config.world)
    clip = w.module.CLIP_SAMPLES
    specs = w.module.all_specs(w.every)  # every source: the VAE is the model's ear, not its vocabulary
    step = 0
    ckpt = _load(work / "vae.pt")
    if ckpt is not None:
        vae.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        rng.bit_generator.state = ckpt["rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        step = ckpt["step"]
        log.info("VAE: resuming at step %d", step)
    vae.train()
    started = time.time()
    while step < config.vae_steps:
        batch = [specs[int(i)] for i in rng.integers(len(specs), size=config.vae_batch)]
        offsets = rng.integers(0, clip - config.vae_crop + 1, size=len(batch))
        if w.render_to_crop:
            crops = [w.module.synthesize(s, rng, int(o) + config.vae_crop)[o:] for s, o in zip(batch, offsets)]
        else:
            crops = [w.module.synthesize(s, rng)[o : o + config.vae_crop] for s, o in zip(batch, offsets)]
        x = torch.from_numpy(np.stack(crops))[:, None]
        lr = config.vae_lr * 0.5 * (1 + math.cos(math.pi * step / config.vae_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        mean = vae.encode(x).latent_dist.mode()
        y = vae.decode(mean).sample
        loss = stft_loss(y[:, 0], x[:, 0], tuple(config.vae_stft_sizes)) + (y - x).abs().mean() + config.vae_kl * mean.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if progress is not None:
            progress("vae", step, config.vae_steps, loss.item())
        if step % config.checkpoint_every == 0 or step == config.vae_steps:
            _save(work / "vae.pt", {"model": vae.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                                    "torch_rng": torch.get_rng_state(), "step": step})
    log.info("VAE trained (%.0f s this run)", time.time() - started)
    vae.eval()
    return vae


def _set_weight(conv: torch.nn.Module, weight: torch.Tensor) -> None:
    """Writes an effective weight into a weight-normed conv (weight = g * v / |v|)."""
    with torch.no_grad():
        conv.weight_v.copy_(weight)
        conv.weight_g.copy_(weight.norm(dim=(1, 2), keepdim=True))


def _effective_weight(conv: torch.nn.Module) -> torch.Tensor:
    return torch._weight_norm(conv.weight_v, conv.weight_g, 0).detach()


def fold_latent_scale(vae, std: torch.Tensor) -> None:
    """Makes the VAE's latent (the mode) unit-std per channel by rescaling two convolutions in place.

    The encoder's last conv rows that produce the mean are divided by ``std`` [C]; the decoder's
    first conv input columns are multiplied by it, so decode(encode(x)) is unchanged.
    """
    c = std.numel()
    enc, dec = vae.encoder.conv2, vae.decoder.conv1
    w = _effective_weight(enc)
    w[:c] /= std.view(-1, 1, 1)
    _set_weight(enc, w)
    with torch.no_grad():
        enc.bias[:c] /= std
    w = _effective_weight(dec)
    w *= std.view(1, -1, 1)
    _set_weight(dec, w)


@torch.no_grad()
def encode(vae, audio: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Latent modes [N, C, frames] of audio [N, T]."""
    out = [vae.encode(torch.from_numpy(audio[i : i + batch])[:, None]).latent_dist.mode() for i in range(0, len(audio), batch)]
    return torch.cat(out)


def prepare_latents(config: ToyConfig, vae, tokenizer, work: Path) -> dict[str, torch.Tensor]:
    """Encodes the stage-2 dataset once and tokenises its captions; cached in ``work/data.pt``."""
    cached = _load(work / "data.pt")
    if cached is not None:
        return cached
    world_ = world(config.world).module
    audio, specs = world_.dataset(config.clips_per_spec, config.seed + 2)
    latents = encode(vae, audio)
    rng = np.random.default_rng(config.seed + 3)
    captions = [world_.caption(s, rng) for s in specs for _ in range(config.captions_per_clip)]
    enc = tokenizer(captions, padding="max_length", max_length=world_.MAX_TOKENS, truncation=True, return_tensors="pt")
    shape = (len(specs), config.captions_per_clip, world_.MAX_TOKENS)
    data = {"latents": latents, "ids": enc.input_ids.view(shape), "mask": enc.attention_mask.view(shape)}
    _save(work / "data.pt", data)
    return data


def write_config(config: ToyConfig, path: Path) -> None:
    atomic_write_json(path, asdict(config))


def read_config(path: Path) -> ToyConfig:
    return ToyConfig(**json.loads(path.read_text()))


def clone_frozen(module: torch.nn.Module) -> torch.nn.Module:
    ema = copy.deepcopy(module)
    ema.requires_grad_(False)
    return ema


# ----------------------------------------------------------------------------- stage 2: DiT + text encoder
def _conditioning_backend(pipe):
    """The Stable Audio backend around the pipeline being trained: training uses its exact conditioning layout."""
    from recap.backends.stable_audio import StableAudioBackend

    return StableAudioBackend("toy-training", "recap/toy-stable-audio", pipe, torch.device("cpu"), torch.float32)


def train_dit(config: ToyConfig, pipe, data: dict[str, torch.Tensor], work: Path, progress: Progress | None = None) -> dict:
    """Stage 2; resumes from ``work/dit.pt``. Returns the EMA modules {name: module}."""
    from recap.backends.base import EncodedPrompts

    names = ("transformer", "text_encoder", "projection_model")
    modules = {n: getattr(pipe, n) for n in names}
    params = [p for m in modules.values() for p in m.parameters()]
    ema = {n: clone_frozen(m) for n, m in modules.items()}
    opt = torch.optim.AdamW(params, lr=config.dit_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(config.seed + 4)
    step = 0
    ckpt = _load(work / "dit.pt")
    if ckpt is not None:
        for n in names:
            modules[n].load_state_dict(ckpt["model"][n])
            ema[n].load_state_dict(ckpt["ema"][n])
        opt.load_state_dict(ckpt["opt"])
        gen.set_state(ckpt["gen"])
        step = ckpt["step"]
        log.info("DiT: resuming at step %d", step)
    backend = _conditioning_backend(pipe)
    latents, ids, mask = data["latents"], data["ids"], data["mask"]
    n, k = ids.shape[:2]
    rotary = backend.rotary(latents.shape[-1], 1)
    for m in modules.values():
        m.train()
    warmup = min(100, config.dit_steps // 10)
    lowest, span = world(config.world).seconds
    window = []
    while step < config.dit_steps:
        # 1. A batch: clips, one of their pre-tokenised captions, times, noise
        idx = torch.randint(n, (config.dit_batch,), generator=gen)
        cap = torch.randint(k, (config.dit_batch,), generator=gen)
        x0 = latents[idx]
        t = torch.rand(config.dit_batch, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        alpha, sigma = torch.cos(t * math.pi / 2).view(-1, 1, 1), torch.sin(t * math.pi / 2).view(-1, 1, 1)
        # seconds_end varies so the model does not tie content to the exact length asked for
        seconds = float(lowest + span * torch.rand(1, generator=gen))
        # 2. Conditioning exactly as at generation; dropped rows are all zeros, seconds tokens included
        enc = EncodedPrompts(input_ids=ids[idx, cap], attention_mask=mask[idx, cap])
        cross, global_states = backend.conditioning(enc, None, seconds, guidance=1.0)
        keep = (torch.rand(config.dit_batch, generator=gen) >= config.caption_dropout).float().view(-1, 1, 1)
        pred = pipe.transformer(
            alpha * x0 + sigma * noise, t, encoder_hidden_states=cross * keep, global_hidden_states=global_states,
            rotary_embedding=rotary, return_dict=False,
        )[0]
        loss = F.mse_loss(pred, alpha * noise - sigma * x0)
        # 3. Step with warm-up then cosine decay to 10 %
        scale = step / warmup if step < warmup else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (config.dit_steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = config.dit_lr * scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(config.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for name in names:
                for pe, pm in zip(ema[name].parameters(), modules[name].parameters()):
                    pe.lerp_(pm, 1 - decay)
        window = (window + [loss.item()])[-50:]
        if progress is not None:
            progress("dit", step, config.dit_steps, sum(window) / len(window))
        if step % config.checkpoint_every == 0 or step == config.dit_steps:
            _save(work / "dit.pt", {"model": {n: m.state_dict() for n, m in modules.items()},
                                    "ema": {n: m.state_dict() for n, m in ema.items()},
                                    "opt": opt.state_dict(), "gen": gen.get_state(), "step": step})
    return ema


# ----------------------------------------------------------------------------- whole recipe
def train(config: ToyConfig, work: Path, out: Path, progress: Progress | None = None) -> Path:
    """Runs (or resumes) both stages in ``work`` and exports the model to ``out``.

    Args:
        config: The recipe; must match the one a resumed ``work`` folder was started with.
        work: Checkpoints, the encoded dataset and timings.
        out: Where the shipped model goes (e.g. ``assets/toy``); replaced atomically.
    """
    work.mkdir(parents=True, exist_ok=True)
    saved = work / "toy_config.json"
    if saved.is_file() and read_config(saved) != config:
        raise ValueError(f"{work} holds a training with another recipe ({saved}); use a fresh --work folder")
    write_config(config, saved)
    torch.manual_seed(config.seed)
    timings = json.loads((work / "timings.json").read_text()) if (work / "timings.json").is_file() else {}
    # 1. VAE, then its latent std folded in
    started = time.time()
    vae = train_vae(config, work, progress)
    vae.requires_grad_(False)
    w = world(config.world)
    probe, _ = w.module.dataset(w.probe_per_spec, config.seed + 5, w.every)
    std = encode(vae, probe).std(dim=(0, 2))
    fold_latent_scale(vae, std)
    timings.setdefault("vae_s", round(time.time() - started, 1))
    # 2. Tokenizer, dataset latents (once), DiT + T5 + projection
    started = time.time()
    tokenizer = w.module.build_tokenizer(work / "tokenizer")
    data = prepare_latents(config, vae, tokenizer, work)
    torch.manual_seed(config.seed + 6)
    pipe = build_pipeline(config, vae, tokenizer)
    ema = train_dit(config, pipe, data, work, progress)
    for name, module in ema.items():
        setattr(pipe, name, module)
        pipe.register_modules(**{name: module})
    timings.setdefault("dit_s", round(time.time() - started, 1))
    atomic_write_json(work / "timings.json", timings)
    export(pipe, config, out, timings)
    return out


def export(pipe, config: ToyConfig, out: Path, timings: dict) -> None:
    """Writes the pipeline as fp16 safetensors, the recipe and the model card; replaces ``out`` atomically."""
    import shutil

    from diffusers import CosineDPMSolverMultistepScheduler

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # A loaded backend swaps in recap's schedule-bounded subclass; the saved model names the stock
    # class, so that it loads anywhere diffusers does.
    if isinstance(pipe.scheduler, CosineDPMSolverMultistepScheduler):
        pipe.register_modules(scheduler=CosineDPMSolverMultistepScheduler.from_config(pipe.scheduler.config))
    pipe.to(torch.float16).save_pretrained(str(tmp), safe_serialization=True)
    pipe.to(torch.float32)
    write_config(config, tmp / "toy_config.json")
    atomic_write_json(tmp / "training.json", timings)
    if config.world == "music":
        from recap.toy.music_eval import model_card
    else:
        from recap.toy.evaluation import model_card
    (tmp / "MODEL_CARD.md").write_text(model_card(asdict(config), timings))
    replace_dir(tmp, out)
    log.info("%s model written to %s", "toy-music" if config.world == "music" else "toy", out)
