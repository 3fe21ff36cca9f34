"""Stable Audio 3 family: T5Gemma text encoder, DiT, SAME autoencoder, rectified flow.

The denoising loop mirrors ``diffusers.StableAudio3Pipeline.__call__`` step for step (tests check
that both give the same latents), written out so that learned tokens, stop requests, progress and
the late start of style transfer go through one code path.

Two checkpoints share the architecture and differ in their sampler, which the converted
checkpoint's scheduler config says (``stochastic_sampling``, as the pipeline itself reads it):

- ``stable-audio-3-medium`` is adversarially distilled for 8 steps of "ping-pong" sampling: each
  step predicts the clean latents and re-noises them to the next noise level with fresh noise.
  Guidance is baked into its weights, so it has no classifier-free guidance and no negative
  prompt: :meth:`StableAudio3Backend.sample` refuses a guidance other than 1 or a negative prompt
  rather than silently ignoring them (the pipeline would run an unconditional branch the model was
  never trained to pair with).
- ``stable-audio-3-medium-base`` samples with deterministic Euler steps (~100) and real CFG.

Noise, per clip from its seed: the initial noise is the seed's first draw (as everywhere in
recap), and the ping-pong re-noise continues that seed's own generator, exactly as
``StableAudio3Pipeline`` draws both from ``generator=[torch.Generator().manual_seed(s), ...]``.
So the prompt is the only difference between the clips of one seed, and a clip is the same alone
or in any batch.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recap.backends.base import AudioBackend, EncodedPrompts, StepCallback, seed_generators
from recap.backends.registry import SA3_DEFAULTS
from recap.errors import BadInput, Cancelled

# StableAudio3Pipeline's defaults for the log-SNR-uniform sigma schedule.
LOGSNR_MIN = -6.2
LOGSNR_MAX = 2.0
# SA3 reads at most 256 text tokens (the reference model_config.json), whatever the tokenizer allows.
MAX_TEXT_TOKENS = 256


def logsnr_sigmas(steps: int, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> list[float]:
    """The ``steps`` start noise levels t of SA3's schedule, falling from exactly 1 (pure noise).

    The pipeline's own ``logsnr_sigma_schedule`` (imported, so the two cannot drift apart); the
    scheduler appends the final 0.
    """
    from diffusers.pipelines.stable_audio_3.pipeline_stable_audio_3 import logsnr_sigma_schedule

    return logsnr_sigma_schedule(steps, logsnr_min, logsnr_max)


class StableAudio3Backend(AudioBackend):
    """A loaded ``StableAudio3Pipeline`` (real or tiny)."""

    family = "stable-audio-3"
    defaults = SA3_DEFAULTS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The pipeline pads and cuts prompts at min(model_max_length, 256); Gemma's tokenizer declares
        # no length of its own (a huge model_max_length), so the base class's padding "to the
        # tokenizer's length" would be unbounded. Setting the pipeline's own bound on the tokenizer
        # changes nothing for the pipeline and gives tokenize, count_tokens and max_prompt_tokens its length.
        self.tokenizer.model_max_length = min(int(self.tokenizer.model_max_length), MAX_TEXT_TOKENS)

    # ------------------------------------------------------------------ description
    @property
    def distilled(self) -> bool:
        """The distilled checkpoint: ping-pong sampling, guidance fixed at 1, no negative prompt."""
        return bool(self.pipe.scheduler.config.get("stochastic_sampling", False))

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vae.config.sampling_rate)

    @property
    def channels(self) -> int:
        return int(self.pipe.vae.config.audio_channels)

    @property
    def hop_length(self) -> int:
        return int(self.pipe.vae.downsampling_ratio)

    @property
    def max_seconds(self) -> float:
        # Variable-length model: no trained window; the registry holds the model card's limit.
        from recap.backends.registry import find_spec

        spec = find_spec(self.name)
        if spec is not None:
            return float(spec.max_seconds)
        return float(self.pipe.duration_embedder.config.max_val)  # where the duration conditioning saturates

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "distilled": self.distilled}

    def latent_shape(self, seconds: float, full_window: bool = True) -> tuple[int, ...]:
        # Variable length: the pipeline denoises ceil(seconds / hop) frames, no window to trim, so
        # a preview (full_window=False) is the clip itself.
        frames = math.ceil(float(seconds) * self.sample_rate / self.hop_length)
        return (int(self.pipe.vae.config.latent_dim), frames)

    # ------------------------------------------------------------------ text
    def text_hidden_states(self, enc: EncodedPrompts) -> torch.Tensor:
        embeds = self.input_embeddings(enc)
        mask = enc.attention_mask.to(embeds.device)
        return self.text_encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state

    def _text(self, enc: EncodedPrompts) -> torch.Tensor:
        """T5Gemma's last hidden states, cached per prompt row (the pipeline feeds them to the DiT unprojected)."""
        return self.cached_text("t5gemma", enc, self.text_hidden_states)

    def _duration(self, batch: int, seconds: float) -> torch.Tensor:
        """[B, width] the duration embedding (``StableAudio3Pipeline.encode_duration``)."""
        seconds_tensor = torch.full((batch,), float(seconds), dtype=torch.float32, device=self.device)
        return self.pipe.duration_embedder(seconds_tensor)

    def conditioning(
        self, enc: EncodedPrompts, negative: EncodedPrompts | None, seconds: float, guidance: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(context, context mask, global states) [2B or B, ...] in the pipeline's layout.

        The duration embedding is both the DiT's global (AdaLN) input and one more context token
        after the text; with CFG the negative (default: the empty prompt, as the pipeline) comes first.
        """
        batch = enc.input_ids.shape[0]
        duration = self._duration(batch, seconds)
        context, mask = self._context(enc, duration)
        global_states = duration
        if guidance > 1.0:
            uncond = negative if negative is not None else self.tokenize([""] * batch)
            neg_context, neg_mask = self._context(uncond, duration)
            context, mask = torch.cat([neg_context, context]), torch.cat([neg_mask, mask])
            global_states = torch.cat([duration, duration])
        return context, mask, global_states

    def _context(self, enc: EncodedPrompts, duration: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text = self._text(enc)
        mask = enc.attention_mask.to(text.device)
        context = torch.cat([text, duration.unsqueeze(1).to(text.dtype)], dim=1)
        return context, torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)

    # ------------------------------------------------------------------ schedule
    def schedule(self, steps: int) -> Any:
        """A private scheduler on SA3's log-SNR schedule of ``steps`` steps (the pipeline's)."""
        scheduler = self.new_scheduler()
        scheduler.set_timesteps(sigmas=logsnr_sigmas(steps))
        # rectified flow starts from the noise itself: x_1 = noise
        scheduler.init_noise_sigma = 1.0
        return scheduler

    def noise_level(self, steps: int, step: int) -> tuple[float, float]:
        """(timestep, noise-to-signal ratio t / (1 - t)) where step ``step`` starts.

        Rectified flow mixes x_t = (1 - t) x0 + t noise: the noise's share of the variance is
        t² / (t² + (1 - t)²), which is recap's σ² / (σ² + 1) with σ = t / (1 - t). The first
        step starts at t = 1, pure noise: σ = inf.
        """
        scheduler = self.schedule(steps)
        t = float(scheduler.sigmas[step])
        return float(scheduler.timesteps[step]), (math.inf if t >= 1.0 else t / (1.0 - t))

    def noise_to(self, latents: torch.Tensor, noise: torch.Tensor, steps: int, step: int) -> torch.Tensor:
        t = float(self.schedule(steps).sigmas[step])
        return (1.0 - t) * latents + t * noise

    def check_guidance(self, guidance: float, negative: EncodedPrompts | None) -> None:
        """Raises :class:`BadInput` for settings the distilled checkpoint has no use for."""
        if not self.distilled:
            return
        if guidance != 1.0:
            raise BadInput(
                f"{self.name} is the distilled Stable Audio 3: guidance is built into its weights and fixed at 1 "
                f"(got {guidance:g}); use guidance 1, or stabilityai/stable-audio-3-medium-base for classifier-free guidance"
            )
        if negative is not None:
            raise BadInput(
                f"{self.name} is the distilled Stable Audio 3: it has no classifier-free guidance, so a negative "
                f"prompt would change nothing; leave it empty, or use stabilityai/stable-audio-3-medium-base"
            )

    # ------------------------------------------------------------------ sampling
    def renoise_generators(self, seeds: Sequence[int], shape: Sequence[int], start_step: int) -> list[torch.Generator]:
        """One CPU generator per clip for the ping-pong re-noise, placed where the pipeline's would be.

        The pipeline draws a clip's initial noise and then one re-noise per step from one
        generator; each generator here is its seed's, moved past the initial draw and past the
        draws of the ``start_step`` steps skipped, so step k re-noises with the same values at
        every transfer strength.
        """
        gens = seed_generators(seeds)
        for g in gens:
            for _ in range(1 + start_step):
                torch.randn((1, *shape), generator=g)
        return gens

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
        """Denoises from ``initial`` noise (or from ``start_latents`` at ``start_step``, for style transfer).

        Raises:
            BadInput: guidance other than 1, or a negative prompt, on the distilled checkpoint.
        """
        self.check_guidance(guidance, negative)
        cfg = guidance > 1.0
        context, mask, global_states = self.conditioning(enc, negative, seconds, guidance)
        context, global_states = context.to(self.dtype), global_states.to(self.dtype)
        scheduler = self.schedule(steps)
        scheduler.set_timesteps(sigmas=logsnr_sigmas(steps), device=self.device)
        if start_latents is None:
            latents = initial.to(self.device, self.dtype)
        else:
            latents = start_latents.to(self.device, self.dtype)
            scheduler.set_begin_index(start_step)
        generators = self.renoise_generators(seeds, latents.shape[1:], start_step) if self.distilled else None
        timesteps = scheduler.timesteps[start_step:]
        for i, t in enumerate(timesteps):
            if stop is not None and stop.is_set():
                raise Cancelled("generation stopped")
            model_input = torch.cat([latents] * 2) if cfg else latents
            velocity = self.pipe.transformer(
                model_input, t.expand(model_input.shape[0]), encoder_hidden_states=context,
                global_hidden_states=global_states, encoder_attention_mask=mask, return_dict=False,
            )[0]
            if cfg:
                uncond, cond = velocity.chunk(2)
                velocity = uncond + guidance * (cond - uncond)
            latents = scheduler.step(velocity, t, latents, generator=generators).prev_sample
            if on_step is not None:
                on_step(i + 1, len(timesteps))
        return latents

    # ------------------------------------------------------------------ memory
    def denoise_bytes_per_clip(self, latent_shape: Sequence[int], guidance: float) -> int:
        # As Stable Audio Open's DiT: ~16 x width per token bounds the live tensors under no_grad.
        cfg = self.pipe.transformer.config
        tokens = int(latent_shape[-1]) + int(cfg.num_memory_tokens) + self.max_prompt_tokens + 1
        return (2 if guidance > 1.0 else 1) * tokens * int(cfg.embed_dim) * 16 * self.dtype.itemsize

    # ------------------------------------------------------------------ audio
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        """Audio [B, C, T] float32 on the CPU from latents [B, latent_dim, frames], cut to ``seconds``.

        SA3 denoises only the frames the clip needs (no window), so every frame decoded is kept:
        the last one holds the clip's end, cut to ``int(seconds * sample_rate)`` as the pipeline cuts.
        """
        vae = self.pipe.vae
        audio = vae.decode(latents.to(self.device, vae.dtype)).sample.float().cpu()
        if seconds is not None:
            audio = audio[:, :, : int(seconds * self.sample_rate)]
        return audio

    @torch.no_grad()
    def encode_audio(self, audio: np.ndarray | torch.Tensor, sr: int) -> torch.Tensor:
        """SAME latents (deterministic: the encoder has no sampling) of audio padded to whole frames."""
        x = self._audio_tensor(audio, sr)
        x = F.pad(x, (0, (-x.shape[-1]) % self.hop_length))
        vae = self.pipe.vae
        return vae.encode(x.to(self.device, vae.dtype)).latents.float().cpu()

    # ------------------------------------------------------------------ training
    def ti_loss(
        self, latents: torch.Tensor, enc: EncodedPrompts, generator: torch.Generator, seconds: float | None = None
    ) -> torch.Tensor:
        """The rectified-flow loss SA3 is trained with: velocity target noise - x0 at a random t.

        x_t = (1 - t) x0 + t noise with t ~ U(0, 1), the DiT predicts v and the sampler steps
        x_{t'} = x_t + (t' - t) v (its x0 estimate is x_t - t v), so the target is noise - x0.
        Conditioned as at generation: the text with its learned tokens and the clip's duration.
        """
        x0 = latents.to(self.device, self.dtype)
        batch = x0.shape[0]
        if seconds is None:
            seconds = min(self.max_seconds, x0.shape[-1] * self.hop_length / self.sample_rate)
        t = torch.rand(batch, generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(self.device, self.dtype)
        tt = t.to(self.device, self.dtype).view(-1, 1, 1)
        noisy = (1.0 - tt) * x0 + tt * noise
        context, mask, global_states = self.conditioning(enc, None, seconds, guidance=1.0)
        pred = self.pipe.transformer(
            noisy, t.to(self.device), encoder_hidden_states=context.to(self.dtype),
            global_hidden_states=global_states.to(self.dtype), encoder_attention_mask=mask, return_dict=False,
        )[0]
        return F.mse_loss(pred.float(), (noise - x0).float())
