"""Stable Audio Open family: T5 text encoder, DiT, Oobleck VAE, v-prediction on a cosine schedule.

The denoising loop mirrors ``diffusers.StableAudioPipeline.__call__`` step for step (tests check
that both give the same latents), written out so that learned tokens, stop requests, progress and
the partial-noising start of style transfer go through one code path.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_1d_rotary_pos_embed

from recap.backends.base import AudioBackend, EncodedPrompts, StepCallback, seed_generators
from recap.backends.registry import SAO_DEFAULTS

# torchsde's Brownian tree warns when the sampler queries times a hair outside its interval
# (float rounding of the sigma schedule); harmless, and it floods every generation's output.
warnings.filterwarnings("ignore", message=r"Should have (ta|tb|t)", module="torchsde")


def sao_scheduler():
    """A ``CosineDPMSolverMultistepScheduler`` with Stable Audio Open 1.0's settings (for models built here)."""
    from diffusers import CosineDPMSolverMultistepScheduler

    return CosineDPMSolverMultistepScheduler(
        sigma_min=0.3, sigma_max=500, sigma_data=1.0, sigma_schedule="exponential", solver_order=2,
        prediction_type="v_prediction", final_sigmas_type="zero",
    )


class SeedSharedNoise:
    """The sampler's Brownian-tree noise with one tree per distinct seed instead of one per row.

    ``CosineDPMSolverMultistepScheduler`` builds a torchsde Brownian tree per batch row and queries
    every tree at every step; those queries are Python-bound and were 58 % of a 4 x 2 grid's
    denoising time on `tiny`. A grid repeats each seed once per variant, and a row's tree depends
    on its seed alone, so rows with the same seed read one shared tree: the same values as
    per-row trees, with V times fewer queries for V variants.
    """

    def __init__(self, x: torch.Tensor, seeds: Sequence[int], sigma_min: float, sigma_max: float) -> None:
        from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

        unique = list(dict.fromkeys(int(s) for s in seeds))
        self.index = torch.tensor([unique.index(int(s)) for s in seeds], device=x.device)
        self.sampler = BrownianTreeNoiseSampler(x[: len(unique)], sigma_min, sigma_max, seed=unique)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return self.sampler(sigma, sigma_next)[self.index]


class StableAudioBackend(AudioBackend):
    """A loaded ``StableAudioPipeline`` (real or tiny)."""

    family = "stable-audio"
    defaults = SAO_DEFAULTS
    # One Brownian tree per distinct seed (False: one per row, as the pipeline does; same values).
    share_seed_noise = True

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vae.config.sampling_rate)

    @property
    def channels(self) -> int:
        return int(self.pipe.vae.config.audio_channels)

    @property
    def hop_length(self) -> int:
        return int(self.pipe.vae.hop_length)

    @property
    def window_frames(self) -> int:
        """Latent frames the DiT always denoises (the model's trained window)."""
        return int(self.pipe.transformer.config.sample_size)

    @property
    def max_seconds(self) -> float:
        return self.window_frames * self.hop_length / self.sample_rate

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    def latent_shape(self, seconds: float, full_window: bool = True) -> tuple[int, ...]:
        # The pipeline denoises the whole window whatever the length asked for, and cuts after
        # decoding; the model was trained that way. Trimming is ~5x cheaper for a 10 s clip of SAO.
        frames = self.window_frames if full_window else min(self.window_frames, math.ceil(seconds * self.sample_rate / self.hop_length))
        return (int(self.pipe.transformer.config.in_channels), frames)

    # ------------------------------------------------------------------ text
    def text_hidden_states(self, enc: EncodedPrompts) -> torch.Tensor:
        embeds = self.input_embeddings(enc)
        mask = enc.attention_mask.to(embeds.device)
        return self.text_encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state

    def _projected(self, enc: EncodedPrompts, null_padding: bool) -> torch.Tensor:
        """T5 states -> projection -> zeroed padding, as ``StableAudioPipeline.encode_prompt`` (cached per prompt)."""
        return self.cached_text(f"projected-{null_padding}", enc, lambda e: self._project(e, null_padding))

    def _project(self, enc: EncodedPrompts, null_padding: bool) -> torch.Tensor:
        hidden = self.text_hidden_states(enc)
        mask = enc.attention_mask.to(hidden.device)
        if null_padding:  # the pipeline does this for negative prompts only
            hidden = torch.where(mask.bool().unsqueeze(2), hidden, 0.0)
        projected = self.pipe.projection_model(text_hidden_states=hidden).text_hidden_states
        return projected * mask.unsqueeze(-1).to(projected.dtype)

    def _duration_states(self, batch: int, seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.pipe.projection_model(
            start_seconds=torch.zeros(batch, device=self.device),
            end_seconds=torch.full((batch,), float(seconds), device=self.device),
        )
        return out.seconds_start_hidden_states, out.seconds_end_hidden_states

    def conditioning(
        self, enc: EncodedPrompts, negative: EncodedPrompts | None, seconds: float, guidance: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention and global conditioning [2B or B, ...] in the pipeline's layout."""
        batch = enc.input_ids.shape[0]
        cfg = guidance > 1.0
        text = self._projected(enc, null_padding=False)
        start, end = self._duration_states(batch, seconds)
        if cfg and negative is not None:
            text = torch.cat([self._projected(negative, null_padding=True), text])
            start, end = torch.cat([start, start]), torch.cat([end, end])
        cross = torch.cat([text, start, end], dim=1)
        global_states = torch.cat([start, end], dim=2)
        if cfg and negative is None:
            # No negative prompt: the pipeline's unconditional branch is all zeros, duration included.
            cross = torch.cat([torch.zeros_like(cross), cross])
            global_states = torch.cat([global_states, global_states])
        return cross, global_states

    # ------------------------------------------------------------------ sampling
    def noise_level(self, steps: int, step: int) -> tuple[float, float]:
        # EDM: the sampler's input at step k is x0 + sigma_k * noise
        scheduler = self.schedule(steps)
        return float(scheduler.timesteps[step]), float(scheduler.sigmas[step])

    def noise_to(self, latents: torch.Tensor, noise: torch.Tensor, steps: int, step: int) -> torch.Tensor:
        return latents + self.noise_level(steps, step)[1] * noise

    def rotary(self, frames: int, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = get_1d_rotary_pos_embed(
            self.pipe.rotary_embed_dim, frames + extra, use_real=True, repeat_interleave_real=False
        )
        return cos.to(self.device), sin.to(self.device)

    def sample(
        self,
        enc: EncodedPrompts,
        negative: EncodedPrompts | None,
        initial: torch.Tensor,
        seeds: Sequence[int],
        seconds: float,
        steps: int,
        guidance: float,
        on_step: StepCallback | None = None,
        stop: threading.Event | None = None,
        start_step: int = 0,
        start_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoises from ``initial`` noise (or from ``start_latents`` at ``start_step``, for style transfer)."""
        transformer = self.pipe.transformer
        cross, global_states = self.conditioning(enc, negative, seconds, guidance)
        cross, global_states = cross.to(self.dtype), global_states.to(self.dtype)
        scheduler = self.new_scheduler()
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps
        if start_latents is None:
            latents = initial.to(self.device, self.dtype) * scheduler.init_noise_sigma
        else:
            latents = start_latents.to(self.device, self.dtype)
            scheduler.set_begin_index(start_step)
        if self.share_seed_noise and hasattr(scheduler, "noise_sampler"):
            # built from the latents: the dtype and device the scheduler would build its trees with
            scheduler.noise_sampler = SeedSharedNoise(latents, seeds, scheduler.config.sigma_min, scheduler.config.sigma_max)
        rotary = self.rotary(latents.shape[2], global_states.shape[1])
        transformer_kwargs = dict(encoder_hidden_states=cross, global_hidden_states=global_states, rotary_embedding=rotary)

        def predict(model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return transformer(model_input, t.unsqueeze(0), return_dict=False, **transformer_kwargs)[0]

        # per-sample generators seed the SDE's Brownian tree, so a clip's noise depends on its seed only
        return self.denoise_loop(
            scheduler, latents, timesteps[start_step:], predict, guidance,
            {"generator": seed_generators(seeds)}, on_step, stop,
        )

    # ------------------------------------------------------------------ memory
    def denoise_bytes_per_clip(self, latent_shape: Sequence[int], guidance: float) -> int:
        # Per token under no_grad the largest live tensors are the MLP's 4x-wide hidden state and
        # the residual stream; 16 x width per token bounds them (SDPA never materialises scores).
        cfg = self.pipe.transformer.config
        width = cfg.num_attention_heads * cfg.attention_head_dim
        tokens = int(latent_shape[-1]) + 1 + self.max_prompt_tokens + 2
        return (2 if guidance > 1.0 else 1) * tokens * width * 16 * self.dtype.itemsize

    def decode_bytes_per_clip(self, latent_shape: Sequence[int]) -> int:
        # The decoder's last block holds ~6 tensors of decoder_channels x samples: 6 fits the
        # 3.3 GiB that each extra 47.55 s clip adds to StableAudioPipeline's peak in fp16 on an H100
        # (5.8 GiB for 1 clip, 29 GiB for 8; 128 channels x 2.1 M samples x 2 bytes = 0.54 GB).
        vae = self.pipe.vae
        samples = int(latent_shape[-1]) * self.hop_length
        return 6 * samples * int(vae.config.decoder_channels) * vae.dtype.itemsize

    # ------------------------------------------------------------------ audio
    def content_latents(self, latents: torch.Tensor, seconds: float) -> torch.Tensor:
        # the frames past the requested length are the window's silent padding
        frames = math.ceil(seconds * self.sample_rate / self.hop_length)
        return latents[..., :frames]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        audio = self.pipe.vae.decode(latents.to(self.device, self.pipe.vae.dtype)).sample.float().cpu()
        if seconds is not None:
            audio = audio[:, :, : int(seconds * self.sample_rate)]
        return audio

    @torch.no_grad()
    def encode_audio(self, audio: np.ndarray | torch.Tensor, sr: int) -> torch.Tensor:
        x = self._audio_tensor(audio, sr)
        pad = (-x.shape[-1]) % self.hop_length
        x = F.pad(x, (0, pad))
        dist = self.pipe.vae.encode(x.to(self.device, self.pipe.vae.dtype)).latent_dist
        return dist.mode().float().cpu()

    def training_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Extends clip latents to the whole window with the latents of silence.

        Generation always denoises the full window and the model fills what lies past the
        requested length with silence; training on the same layout keeps TI on that distribution.
        """
        frames = latents.shape[-1]
        if frames >= self.window_frames:
            return latents[..., : self.window_frames]
        silence = self.encode_audio(np.zeros((self.channels, self.window_frames * self.hop_length), np.float32), self.sample_rate)
        return torch.cat([latents, silence[..., frames:].expand(latents.shape[0], -1, -1)], dim=-1)

    # ------------------------------------------------------------------ training
    def sigma_range(self) -> tuple[float, float]:
        cfg = self.pipe.scheduler.config
        return float(cfg.sigma_min), float(cfg.sigma_max)

    def ti_loss(self, latents: torch.Tensor, enc: EncodedPrompts, generator: torch.Generator, seconds: float | None = None) -> torch.Tensor:
        """v-prediction loss on the cosine schedule the sampler uses (sigma_data = 1).

        With t in [0, 1]: alpha = cos(t*pi/2), sigma = sin(t*pi/2), x_t = alpha*x0 + sigma*eps and the
        target is v = alpha*eps - sigma*x0; t is drawn uniformly between the sampler's sigma_min and
        sigma_max (t = atan(sigma) * 2 / pi, the scheduler's timestep).
        """
        x0 = latents.to(self.device, self.dtype)
        batch = x0.shape[0]
        if seconds is None:
            seconds = min(self.max_seconds, x0.shape[-1] * self.hop_length / self.sample_rate)
        smin, smax = self.sigma_range()
        tmin, tmax = math.atan(smin) * 2 / math.pi, math.atan(smax) * 2 / math.pi
        t = tmin + (tmax - tmin) * torch.rand(batch, generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(self.device, self.dtype)
        alpha = torch.cos(t * math.pi / 2).to(self.device, self.dtype).view(-1, 1, 1)
        sigma = torch.sin(t * math.pi / 2).to(self.device, self.dtype).view(-1, 1, 1)
        noisy = alpha * x0 + sigma * noise
        target = alpha * noise - sigma * x0
        cross, global_states = self.conditioning(enc, None, seconds, guidance=1.0)
        rotary = self.rotary(x0.shape[-1], global_states.shape[1])
        pred = self.pipe.transformer(
            noisy,
            t.to(self.device, self.dtype),
            encoder_hidden_states=cross.to(self.dtype),
            global_hidden_states=global_states.to(self.dtype),
            rotary_embedding=rotary,
            return_dict=False,
        )[0]
        return F.mse_loss(pred.float(), target.float())
