"""AudioLDM family: CLAP text encoder, UNet conditioned on the pooled text embedding, mel VAE + HiFi-GAN.

The loop mirrors ``diffusers.AudioLDMPipeline.__call__`` (tests check both agree). AudioLDM feeds
the UNet the CLAP *pooled, L2-normalised* text embedding as ``class_labels`` (there is no
cross-attention on tokens), so a learned token acts through that single vector.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from recap.backends.base import AudioBackend, EncodedPrompts, StepCallback, seed_generators
from recap.backends.registry import AUDIOLDM_DEFAULTS, AUDIOLDM_MAX_SECONDS

# AudioLDM's mel front end (its audio/stft.py): 1024-point STFT, Slaney mel basis, log of clamped
# magnitudes. The hop and the number of mel bins come from the vocoder config.
N_FFT = 1024
MEL_FMAX = 8000.0
LOG_FLOOR = 1e-5


class AudioLDMBackend(AudioBackend):
    """A loaded ``AudioLDMPipeline`` (real or tiny)."""

    family = "audioldm"
    defaults = AUDIOLDM_DEFAULTS

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vocoder.config.sampling_rate)

    @property
    def channels(self) -> int:
        return 1

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.pipe.vocoder.config.upsample_rates))

    @property
    def n_mels(self) -> int:
        return int(self.pipe.vocoder.config.model_in_dim)

    @property
    def vae_scale(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @property
    def max_seconds(self) -> float:
        return AUDIOLDM_MAX_SECONDS  # a memory cap: the UNet is convolutional

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    def _mel_frames(self, seconds: float) -> int:
        frames = int(seconds * self.sample_rate / self.hop_length)
        return int(np.ceil(frames / self.vae_scale)) * self.vae_scale

    def latent_shape(self, seconds: float, full_window: bool = True) -> tuple[int, ...]:
        # AudioLDM's UNet is convolutional and always denoises just the requested length.
        return (
            int(self.pipe.unet.config.in_channels),
            self._mel_frames(seconds) // self.vae_scale,
            self.n_mels // self.vae_scale,
        )

    # ------------------------------------------------------------------ text
    def _clap(self, enc: EncodedPrompts):
        embeds = self.input_embeddings(enc)
        mask = enc.attention_mask.to(embeds.device)
        ids = enc.input_ids.to(embeds.device)
        # Roberta-style positions counted over real tokens (what the model computes from input_ids).
        pad = int(self.text_encoder.config.pad_token_id)
        not_pad = ids.ne(pad).long()
        positions = torch.cumsum(not_pad, dim=1) * not_pad + pad
        return self.text_encoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)

    def text_hidden_states(self, enc: EncodedPrompts) -> torch.Tensor:
        return self._clap(enc).last_hidden_state

    def class_embedding(self, enc: EncodedPrompts) -> torch.Tensor:
        """The normalised pooled CLAP embedding [B, D] the UNet is conditioned on."""
        return self.cached_text("class", enc, lambda e: F.normalize(self._clap(e).text_embeds, dim=-1))

    def _unconditional(self, batch: int) -> EncodedPrompts:
        return self.tokenize([""] * batch)

    # ------------------------------------------------------------------ sampling
    def noise_level(self, steps: int, step: int) -> tuple[float, float]:
        # DDPM: x_t = sqrt(abar)·x0 + sqrt(1 - abar)·noise, a noise-to-signal ratio of sqrt((1 - abar)/abar)
        scheduler = self.schedule(steps)
        t = scheduler.timesteps[step]
        abar = float(scheduler.alphas_cumprod[int(t)])
        return float(t), math.sqrt((1.0 - abar) / abar)

    def noise_to(self, latents: torch.Tensor, noise: torch.Tensor, steps: int, step: int) -> torch.Tensor:
        scheduler = self.schedule(steps)
        return scheduler.add_noise(latents, noise, scheduler.timesteps[step : step + 1].repeat(latents.shape[0]))

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
        unet = self.pipe.unet
        batch = enc.input_ids.shape[0]
        cfg = guidance > 1.0
        cond = self.class_embedding(enc)
        if cfg:
            uncond = self.class_embedding(negative if negative is not None else self._unconditional(batch))
            cond = torch.cat([uncond, cond])
        cond = cond.to(self.dtype)
        scheduler = self.new_scheduler()
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps
        if start_latents is None:
            latents = initial.to(self.device, self.dtype) * scheduler.init_noise_sigma
        else:
            latents = start_latents.to(self.device, self.dtype)

        def predict(model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return unet(model_input, t, encoder_hidden_states=None, class_labels=cond).sample

        return self.denoise_loop(
            scheduler, latents, timesteps[start_step:], predict, guidance,
            {"eta": 0.0, "generator": seed_generators(seeds)}, on_step, stop,
        )

    # ------------------------------------------------------------------ audio
    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Log-mel spectrogram [B, 1, frames, n_mels] of mono audio [B, 1, T] (AudioLDM's front end)."""
        basis = librosa.filters.mel(
            sr=self.sample_rate, n_fft=N_FFT, n_mels=self.n_mels, fmin=0.0, fmax=min(MEL_FMAX, self.sample_rate / 2)
        )
        x = audio[:, 0].float()
        pad = (N_FFT - self.hop_length) // 2
        x = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            x, N_FFT, hop_length=self.hop_length, win_length=N_FFT, window=torch.hann_window(N_FFT),
            center=False, return_complex=True,
        ).abs()
        mel = torch.matmul(torch.from_numpy(basis), spec)
        return torch.log(mel.clamp(min=LOG_FLOOR)).transpose(1, 2).unsqueeze(1)

    @torch.no_grad()
    def encode_audio(self, audio: np.ndarray | torch.Tensor, sr: int) -> torch.Tensor:
        x = self._audio_tensor(audio, sr)
        mel = self.mel(x)
        frames = int(np.ceil(mel.shape[2] / self.vae_scale)) * self.vae_scale
        mel = F.pad(mel, (0, 0, 0, frames - mel.shape[2]), value=float(np.log(LOG_FLOOR)))
        vae = self.pipe.vae
        dist = vae.encode(mel.to(self.device, vae.dtype)).latent_dist
        return (dist.mode() * vae.config.scaling_factor).float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        # Decodes every frame: AudioLDM denoises only the requested length (latent_shape), rounded
        # up to the VAE's scale (< 2 mel frames, 20 ms at hop 160 and 16 kHz), so there is no
        # window padding to skip, unlike Stable Audio's decode.
        vae = self.pipe.vae
        mel = vae.decode(latents.to(self.device, vae.dtype) / vae.config.scaling_factor).sample
        audio = self.pipe.vocoder(mel.squeeze(1).to(self.pipe.vocoder.dtype)).float().cpu()
        if seconds is not None:
            audio = audio[:, : int(seconds * self.sample_rate)]
        return audio.unsqueeze(1)

    # ------------------------------------------------------------------ training
    def ti_loss(self, latents: torch.Tensor, enc: EncodedPrompts, generator: torch.Generator, seconds: float | None = None) -> torch.Tensor:
        """The epsilon (or v) objective of AudioLDM's DDPM training schedule."""
        train = DDPMScheduler.from_config(self.pipe.scheduler.config)
        x0 = latents.to(self.device, self.dtype)
        batch = x0.shape[0]
        t = torch.randint(0, train.config.num_train_timesteps, (batch,), generator=generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device, self.dtype)
        noisy = train.add_noise(x0, noise, t)
        target = train.get_velocity(x0, noise, t) if train.config.prediction_type == "v_prediction" else noise
        cond = self.class_embedding(enc).to(self.dtype)
        pred = self.pipe.unet(noisy, t, encoder_hidden_states=None, class_labels=cond).sample
        return F.mse_loss(pred.float(), target.float())
