"""Stable Audio Open family: T5 text encoder, DiT, Oobleck VAE, v-prediction on a cosine schedule.

The denoising loop mirrors ``diffusers.StableAudioPipeline.__call__`` step for step (tests check
that both give the same latents), written out so that learned tokens, stop requests, progress and
the partial-noising start of style transfer go through one code path.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import CosineDPMSolverMultistepScheduler
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

from recap.backends.base import AudioBackend, EncodedPrompts, StepCallback, seed_generators
from recap.backends.registry import SAO_DEFAULTS


def sao_scheduler() -> CosineDPMSolverMultistepScheduler:
    """A ``CosineDPMSolverMultistepScheduler`` with Stable Audio Open 1.0's settings (for models built here).

    The stock class, so that a pipeline saved with it loads anywhere; :class:`StableAudioBackend`
    swaps in :class:`ScheduleBoundedScheduler` when it wraps the pipeline.
    """
    return CosineDPMSolverMultistepScheduler(
        sigma_min=0.3, sigma_max=500, sigma_data=1.0, sigma_schedule="exponential", solver_order=2,
        prediction_type="v_prediction", final_sigmas_type="zero",
    )


# The `tol` diffusers' BatchedBrownianTree gives torchsde: a BrownianInterval rounds its ends to
# that many decimals (500.00006103515625 -> 500.000061) but checks unrounded queries against them.
TREE_TOL = 1e-6


def tree_interval(sigmas: torch.Tensor) -> tuple[float, float]:
    """(low, high): the interval a Brownian tree must span to answer every query of a schedule.

    ``CosineDPMSolverMultistepScheduler`` builds its trees over the configured
    [sigma_min, sigma_max] (diffusers #13274), but its float32 schedule starts at 500.00006 and
    ends at 0.0 (``final_sigmas_type="zero"``): torchsde then warns "Should have tb<=t1", clamps
    the query and has been reported to end in RecursionError. The schedule's own extremes hold
    every query, those of a late start (style transfer) included; each end is moved out by
    :data:`TREE_TOL`, which torchsde's rounding of the ends (at most half of it) cannot undo.
    (Float64: ``BrownianTreeNoiseSampler`` keeps a tensor's dtype, and float32 cannot hold
    500.00006 + 1e-6.)

    Args:
        sigmas: [steps + 1] the scheduler's ``sigmas`` after ``set_timesteps``.
    """
    low, high = float(sigmas.min()), float(sigmas.max())
    if not high > low:  # a one-step schedule ending where it starts has no noise to draw
        raise ValueError(f"the sigma schedule spans no interval: min {low}, max {high}")
    return low - TREE_TOL, high + TREE_TOL


def schedule_noise_sampler(x: torch.Tensor, sigmas: torch.Tensor, seed: int | list[int] | None) -> BrownianTreeNoiseSampler:
    """The noise sampler ``CosineDPMSolverMultistepScheduler.step`` builds, over :func:`tree_interval`.

    Args:
        x: [B, ...] a tensor with the noise's shape, dtype and device.
        sigmas: The scheduler's ``sigmas``.
        seed: One seed, or one per row (one tree each).
    """
    low, high = (torch.tensor(v, dtype=torch.float64) for v in tree_interval(sigmas))
    return BrownianTreeNoiseSampler(x, low, high, seed=seed)


def _generator_seeds(generator: torch.Generator | list[torch.Generator] | None) -> int | list[int] | None:
    """The tree seeds ``CosineDPMSolverMultistepScheduler.step`` derives from its generator argument."""
    if generator is None:
        return None
    return [g.initial_seed() for g in generator] if isinstance(generator, list) else generator.initial_seed()


class ScheduleBoundedScheduler(CosineDPMSolverMultistepScheduler):
    """Stable Audio's sampler with its Brownian trees built over the schedule's extremes.

    The only change to ``CosineDPMSolverMultistepScheduler`` is the tree's interval
    (:func:`tree_interval`); seeds, queries and updates are the parent's. A tree over another
    interval draws other values, so clips differ from those of the stock scheduler; recap's loop
    and ``StableAudioPipeline`` running this class give the same clips (tests check both).
    """

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> Any:
        """``CosineDPMSolverMultistepScheduler.step``, first building the noise sampler it would build."""
        if self.noise_sampler is None:
            self.noise_sampler = schedule_noise_sampler(model_output, self.sigmas, _generator_seeds(generator))
        return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)


def bound_brownian_trees(scheduler: Any) -> Any:
    """``scheduler`` as a :class:`ScheduleBoundedScheduler` when it is the stock cosine DPM-Solver, else as is."""
    if type(scheduler) is CosineDPMSolverMultistepScheduler:
        return ScheduleBoundedScheduler.from_config(scheduler.config)
    return scheduler


class SeedSharedNoise:
    """The sampler's Brownian-tree noise with one tree per distinct seed instead of one per row.

    ``CosineDPMSolverMultistepScheduler`` builds a torchsde Brownian tree per batch row and queries
    every tree at every step; those queries are Python-bound and were 58 % of a 4 x 2 grid's
    denoising time on `tiny`. A grid repeats each seed once per variant, and a row's tree depends
    on its seed alone, so rows with the same seed read one shared tree: the same values as
    per-row trees, with V times fewer queries for V variants.

    Args:
        x: [B, ...] a tensor with the noise's shape, dtype and device.
        seeds: B seeds, one per row.
        sigmas: The scheduler's ``sigmas`` (the trees span :func:`tree_interval` of them).
    """

    def __init__(self, x: torch.Tensor, seeds: Sequence[int], sigmas: torch.Tensor) -> None:
        unique = list(dict.fromkeys(int(s) for s in seeds))
        self.index = torch.tensor([unique.index(int(s)) for s in seeds], device=x.device)
        self.sampler = schedule_noise_sampler(x[: len(unique)], sigmas, unique)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return self.sampler(sigma, sigma_next)[self.index]


def decoder_frames_needed(decoder: torch.nn.Module, samples: int) -> int:
    """Latent frames whose decoding gives the first ``samples`` audio samples exactly as the whole
    window's decoding does.

    The Oobleck decoder is a chain of convolutions (kernel-7 convolutions with dilations 1, 3, 9
    and transposed convolutions of kernel 2s, stride s): output sample n reads latent frames up
    to a fixed reach to its right. Walking that chain backwards from the last kept sample gives
    the last frame it reads; for Stable Audio Open (hop 2048) that is 9 to 10 frames (0.42-0.46 s) past
    the last frame under the kept audio, wherever the cut falls. Frames further right only reach
    the kept samples through the zero padding that replaces them, so decoding up to here and
    trimming gives the full window's samples (tests measure it against a full decode).

    Args:
        decoder: An ``OobleckDecoder`` (``AutoencoderOobleck.decoder``), or any decoder whose
            convolutions run in the order they are registered, joined by pointwise layers and
            residual sums (a sum reads no further than its convolution branch).
        samples: Audio samples kept from the start (> 0).

    Returns:
        The number of leading latent frames to decode (not capped at the latents' length).
    """
    convs = [m for m in decoder.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    last = samples - 1  # the rightmost index read, layer by layer from the output back to the latents
    for conv in reversed(convs):
        (kernel,), (stride,), (padding,), (dilation,) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        if isinstance(conv, torch.nn.ConvTranspose1d):
            # input i writes outputs i*stride - padding + dilation*k, k in [0, kernel)
            last = (last + padding) // stride
        else:
            last = last * stride - padding + dilation * (kernel - 1)
    return last + 1


def encoder_edge_frames(encoder: torch.nn.Module, hop: int) -> int:
    """Latent frames at each end of an encoding that the encoder's zero padding can reach (a bound).

    A convolution of kernel k and dilation d, at r input samples per step, reads at most
    (k - 1) * d * r samples to one side of a position; summed over the Oobleck encoder's chain
    and rounded up to frames, plus one, that is 17 frames (0.8 s) for Stable Audio Open.
    """
    reach, rate = 0, 1
    for conv in (m for m in encoder.modules() if isinstance(m, torch.nn.Conv1d)):
        (kernel,), (stride,), (dilation,) = conv.kernel_size, conv.stride, conv.dilation
        reach += (kernel - 1) * dilation * rate
        rate *= stride
    return math.ceil(reach / hop) + 1


class StableAudioBackend(AudioBackend):
    """A loaded ``StableAudioPipeline`` (real or tiny).

    Wrapping a pipeline replaces its stock ``CosineDPMSolverMultistepScheduler`` with
    :class:`ScheduleBoundedScheduler` (see :func:`tree_interval`), so that the pipeline's own
    calls and recap's loop draw the same noise.
    """

    family = "stable-audio"
    defaults = SAO_DEFAULTS
    # One Brownian tree per distinct seed (False: one per row, as the pipeline does; same values).
    share_seed_noise = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipe.scheduler = bound_brownian_trees(self.pipe.scheduler)

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
            # built from the latents: the dtype and device the scheduler would build its trees with;
            # over the whole schedule's extremes whatever start_step is, so a seed's noise at a given
            # sigma is the same for every transfer strength (without it, ScheduleBoundedScheduler
            # builds per-row trees over the same interval)
            scheduler.noise_sampler = SeedSharedNoise(latents, seeds, scheduler.sigmas)
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

    def decode_input_shape(self, latent_shape: Sequence[int], seconds: float | None) -> tuple[int, ...]:
        shape = tuple(int(n) for n in latent_shape)
        if seconds is None:
            return shape
        return shape[:-1] + (min(shape[-1], self.decode_frames(seconds)),)

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

    def decode_frames(self, seconds: float) -> int:
        """Leading latent frames :meth:`decode` reads for ``seconds`` of audio: the frames under
        the clip and the decoder's receptive-field margin (:func:`decoder_frames_needed`)."""
        return decoder_frames_needed(self.pipe.vae.decoder, max(1, int(seconds * self.sample_rate)))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        """Audio [B, C, T] float32 on the CPU from latents [B, C_latent, frames].

        With ``seconds``, only the frames that reach the kept samples are decoded
        (:meth:`decode_frames`), then the audio is cut to ``int(seconds * sample_rate)``: a 1 s
        clip of Stable Audio Open decodes 31 of the window's 1024 frames, with the samples of a
        whole-window decode (to float rounding: the convolutions run on other lengths).
        """
        if seconds is not None:
            latents = latents[..., : self.decode_frames(seconds)]
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
        silence = self.silence_latents(self.window_frames)
        return torch.cat([latents, silence[..., frames:].expand(latents.shape[0], -1, -1)], dim=-1)

    def silence_latents(self, frames: int) -> torch.Tensor:
        """Latents [1, C_latent, frames] of ``frames`` x hop samples of silence, without encoding them all.

        Encoding a 47.55 s window of zeros costs Stable Audio Open's encoder minutes on a CPU, yet
        only the frames within the encoder's reach of either end see its zero padding; every
        frame between is the same vector. So a short silence holding both ends and one interior
        frame is encoded and its middle frame repeated (tests compare with a whole encode).
        """
        edge = encoder_edge_frames(self.pipe.vae.encoder, self.hop_length)
        if frames <= 2 * edge + 1:
            return self.encode_audio(np.zeros((self.channels, frames * self.hop_length), np.float32), self.sample_rate)
        short = self.encode_audio(np.zeros((self.channels, (2 * edge + 1) * self.hop_length), np.float32), self.sample_rate)
        middle = short[..., edge : edge + 1].expand(-1, -1, frames - 2 * edge)
        return torch.cat([short[..., :edge], middle, short[..., edge + 1 :]], dim=-1)

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
