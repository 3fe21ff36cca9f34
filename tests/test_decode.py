"""Decoding only what is kept: Stable Audio decodes the frames under the clip plus the decoder's
receptive-field margin, and the kept samples are those of a whole-window decode."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from recap.backends.loading import load_backend
from recap.backends.stable_audio import decoder_frames_needed

# Kept audio of a partial decode vs a whole-window decode, max |difference| / peak |audio|. In exact
# arithmetic they are equal (the margin covers the decoder's whole reach); float32 convolutions on
# other lengths block their sums differently, which moves samples by ~1e-7 of the peak.
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def toy():
    return load_backend("toy")


def _relative_error(part: torch.Tensor, full: torch.Tensor) -> float:
    return float((part - full).abs().max() / full.abs().max())


def _count_decoded_frames(backend) -> list[int]:
    frames: list[int] = []
    backend.pipe.vae.decoder.register_forward_pre_hook(lambda _m, args: frames.append(int(args[0].shape[-1])))
    return frames


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.5])
def test_partial_decode_keeps_the_whole_window_samples_on_tiny(tiny, seconds):
    latents = torch.randn(2, *tiny.latent_shape(seconds, full_window=True), generator=torch.Generator().manual_seed(0))
    frames = _count_decoded_frames(tiny)
    part = tiny.decode(latents, seconds)
    full = tiny.decode(latents)[..., : int(seconds * tiny.sample_rate)]
    assert part.shape == full.shape == (2, tiny.channels, int(seconds * tiny.sample_rate))
    assert _relative_error(part, full) < REL_TOL
    # the decoder ran on the clip's frames and the margin, not on the 256-frame window
    assert frames[0] == tiny.decode_frames(seconds) < tiny.window_frames
    assert frames[0] > math.ceil(seconds * tiny.sample_rate / tiny.hop_length)


def test_partial_decode_keeps_the_whole_window_samples_on_toy(toy):
    """On a trained model, from the latents it generates (the realistic input)."""
    seconds = 0.5  # the toy window is 1.02 s: 0.5 s leaves frames to skip
    final = toy.generate(["a low hum", "a high beep"], [0, 1], seconds=seconds, steps=4, guidance=2.0).final
    frames = _count_decoded_frames(toy)
    part = toy.decode(final, seconds)
    full = toy.decode(final)[..., : int(seconds * toy.sample_rate)]
    assert frames[0] < toy.window_frames
    assert full.abs().max() > 0
    assert _relative_error(part, full) < REL_TOL


def test_the_margin_is_needed_and_enough(tiny):
    """In float64 (no rounding to hide behind): the decoded frames give the window's samples to
    1e-12, and one frame fewer changes the last kept samples."""
    seconds = 1.0
    decoder = copy.deepcopy(tiny.pipe.vae.decoder).double()
    z = torch.randn(1, *tiny.latent_shape(seconds), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    keep, n = int(seconds * tiny.sample_rate), tiny.decode_frames(seconds)
    with torch.no_grad():
        full = decoder(z)[..., :keep]
        enough = decoder(z[..., :n])[..., :keep]
        short = decoder(z[..., : n - 1])[..., :keep]
    assert _relative_error(enough, full) < 1e-12
    assert _relative_error(short, full) > 1e-9


@pytest.mark.parametrize("ratios", [[2, 4, 4, 8, 8], [2, 4, 4, 8]])
def test_decoder_reach_is_exact(ratios):
    """The frames the formula names are exactly those the kept samples depend on (autograd), for
    Stable Audio Open's strides (hop 2048) and the toy's, at narrow width so that it runs in a second."""
    from diffusers import AutoencoderOobleck

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's weight_norm deprecation, in diffusers
        torch.manual_seed(0)
        vae = AutoencoderOobleck(encoder_hidden_size=2, downsampling_ratios=ratios, channel_multiples=[1] * len(ratios),
                                 decoder_channels=2, decoder_input_channels=2, audio_channels=1)
    hop = math.prod(ratios)
    frames = 48
    for samples in (1, hop - 1, hop, 5 * hop + 7, 20 * hop):
        z = torch.randn(1, 2, frames, requires_grad=True)
        vae.decoder(z)[..., :samples].sum().backward()
        reads = (z.grad.abs().sum(dim=(0, 1)) > 0).nonzero().max().item() + 1
        assert reads == decoder_frames_needed(vae.decoder, samples), samples


def test_decode_without_seconds_decodes_everything(tiny):
    latents = torch.randn(1, *tiny.latent_shape(1.0), generator=torch.Generator().manual_seed(2))
    assert tiny.decode(latents).shape[-1] == tiny.window_frames * tiny.hop_length
    assert tiny.decode_input_shape(latents.shape[1:], None) == tuple(latents.shape[1:])
    assert tiny.decode_input_shape(latents.shape[1:], 1.0)[-1] == tiny.decode_frames(1.0)


def test_generation_decodes_only_the_kept_frames(tiny):
    """generate() (and so grids, previews and transfer, which decode through the backend) takes the short path."""
    frames = _count_decoded_frames(tiny)
    out = tiny.generate(["rain"], [0], seconds=1.0, steps=2, guidance=3.0)
    assert frames == [tiny.decode_frames(1.0)]
    assert out.audio.shape[-1] == tiny.sample_rate
    preview = tiny.generate(["rain"], [0], seconds=1.0, steps=2, guidance=3.0, full_window=False)
    assert frames[-1] == preview.final.shape[-1] < tiny.decode_frames(1.0)  # a preview has no more to skip


def test_silence_latents_equal_a_whole_encode_of_silence(tiny):
    """TI pads clips with the window's silence; its tiled latents are those of encoding the whole window."""
    import numpy as np

    direct = tiny.encode_audio(np.zeros((tiny.channels, tiny.window_frames * tiny.hop_length), np.float32), tiny.sample_rate)
    tiled = tiny.silence_latents(tiny.window_frames)
    assert tiled.shape == direct.shape
    assert _relative_error(tiled, direct) < REL_TOL
    assert not torch.allclose(direct[..., :1], direct[..., 128:129])  # the ends differ from the middle: tiling is not trivial
