"""Loading, validating, converting and writing audio clips.

The only module that reads or writes audio files. Every failure is an :class:`AudioError` whose
message names the file and what is wrong with it, so a UI can show it as it is.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from recap.paths import atomic_write_bytes
from recap.errors import BadInput

log = logging.getLogger(__name__)

# Inputs larger than this are refused before decoding: a few minutes of 48 kHz stereo float is
# ~100 MB, so 512 MB is never a clip someone means to upload.
MAX_FILE_BYTES = 512 * 1024 * 1024
# Default cap on a clip's duration (seconds) when the caller gives none.
DEFAULT_MAX_SECONDS = 600.0
# Below this peak a clip carries nothing a model or a listener can use.
SILENCE_PEAK = 1e-4
# Above this peak a clip is not audio in the nominal [-1, 1] range (a float file can hold 1e30,
# whose square overflows float32); a little above 1 is ordinary inter-sample overshoot.
LOUD_PEAK = 1.5


class AudioError(BadInput):
    """A clip that cannot be used, with a message meant for the user."""


@dataclass
class Clip:
    """Decoded audio.

    Attributes:
        audio: float32 samples, shape [channels, samples], nominally in [-1, 1].
        sample_rate: Samples per second.
        source: Where it came from (file name only, for messages and manifests).
    """

    audio: np.ndarray
    sample_rate: int
    source: str = ""

    @property
    def channels(self) -> int:
        return int(self.audio.shape[0])

    @property
    def seconds(self) -> float:
        return self.audio.shape[1] / float(self.sample_rate)


def _wav_declared(path: Path) -> tuple[float, int, int] | None:
    """(declared seconds, declared data bytes, present data bytes) from a RIFF/WAVE header.

    libsndfile quietly sizes a WAV by what is on disk, so a cut-off upload or a header that
    claims hours would pass unnoticed; the header itself tells the truth about what was meant.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        byte_rate = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(size + (size & 1))
                if len(fmt) >= 12:
                    byte_rate = struct.unpack("<I", fmt[8:12])[0]
            elif cid == b"data":
                present = path.stat().st_size - f.tell()
                if byte_rate <= 0:
                    return None
                return size / byte_rate, size, present
            else:
                f.seek(size + (size & 1), 1)


def _declared_info(path: Path) -> sf._SoundFileInfo | None:
    try:
        return sf.info(str(path))
    except Exception:  # not something libsndfile knows (mp3 on old builds, or garbage)
        return None


def load_audio(
    path: str | os.PathLike,
    target_sr: int | None = None,
    channels: int | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    allow_silent: bool = False,
) -> Clip:
    """Reads an audio file (wav, flac, ogg, mp3, ...) and checks it is usable.

    Args:
        path: File to read.
        target_sr: Resample to this rate (Hz) if given.
        channels: Convert to this many channels (1 = mean of channels, 2 = duplicate mono).
        max_seconds: Refuse clips longer than this (checked from the header before decoding).
        allow_silent: Accept an all-silent clip (off by default: it is almost always a mistake).

    Returns:
        The decoded :class:`Clip`.

    Raises:
        AudioError: missing, empty, huge, corrupt, truncated, too long, silent or non-finite input.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise AudioError(f"{name}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{name}: the file is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise AudioError(f"{name}: the file is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")

    wav = _wav_declared(path)
    if wav is not None:
        declared_s, declared, present = wav
        if max_seconds is not None and declared_s > max_seconds:
            raise AudioError(f"{name}: {declared_s:.0f} s long; the limit is {max_seconds:.0f} s")
        if present < declared:
            raise AudioError(f"{name}: truncated file: the header promises {declared} bytes of audio, {present} are there")
    info = _declared_info(path)
    if info is not None and max_seconds is not None and info.duration > max_seconds:
        raise AudioError(f"{name}: {info.duration:.0f} s long; the limit is {max_seconds:.0f} s")

    try:
        if info is not None:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            data = data.T
            if info.frames > 0 and data.shape[1] < info.frames:
                raise AudioError(
                    f"{name}: truncated file: the header promises {info.frames} samples, only {data.shape[1]} are there"
                )
        else:
            # librosa falls back to audioread for containers libsndfile cannot open.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "PySoundFile failed. Trying audioread instead."
                data, sr = librosa.load(str(path), sr=None, mono=False)
            data = np.atleast_2d(data).astype(np.float32)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{name}: not a readable audio file ({type(exc).__name__})") from exc

    clip = Clip(audio=np.ascontiguousarray(data, dtype=np.float32), sample_rate=int(sr), source=name)
    if max_seconds is not None and clip.seconds > max_seconds:
        raise AudioError(f"{name}: {clip.seconds:.0f} s long; the limit is {max_seconds:.0f} s")
    validate(clip, allow_silent=allow_silent)
    if channels is not None:
        clip = to_channels(clip, channels)
    if target_sr is not None:
        clip = resample(clip, target_sr)
    return clip


def validate(clip: Clip, allow_silent: bool = False) -> None:
    """Raises :class:`AudioError` for empty, non-finite or (unless allowed) silent audio."""
    name = clip.source or "audio"
    if clip.audio.ndim != 2 or clip.audio.shape[1] == 0:
        raise AudioError(f"{name}: contains no samples")
    if clip.sample_rate <= 0:
        raise AudioError(f"{name}: invalid sample rate {clip.sample_rate}")
    if not np.isfinite(clip.audio).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    if not allow_silent and float(np.abs(clip.audio).max()) < SILENCE_PEAK:
        raise AudioError(f"{name}: is silent (peak below {SILENCE_PEAK:g})")


def tame_peak(clip: Clip, max_peak: float = LOUD_PEAK) -> tuple[Clip, str | None]:
    """``clip`` scaled to peak 1.0 when its peak is above ``max_peak``, with a sentence saying so.

    Returns:
        (the clip, None) when it is within range; else (the normalised copy, the sentence to show).

    Raises:
        AudioError: NaN or infinite samples (nothing to scale).
    """
    if not np.isfinite(clip.audio).all():
        raise AudioError(f"{clip.source or 'audio'}: contains NaN or infinite samples")
    # float64: the peak of a float32 clip is finite, but arithmetic on it in float32 may not be
    peak = float(np.max(np.abs(clip.audio.astype(np.float64)))) if clip.audio.size else 0.0
    if peak <= max_peak:
        return clip, None
    audio = (clip.audio.astype(np.float64) / peak).astype(np.float32)
    note = (f"{clip.source or 'a clip'} peaks at {peak:.3g}, far outside the [-1, 1] range of audio; "
            "it was scaled down to peak 1.0")
    return Clip(np.ascontiguousarray(audio), clip.sample_rate, clip.source), note


def to_channels(clip: Clip, channels: int) -> Clip:
    """Mixes down to mono (mean) or duplicates mono to more channels."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    audio = clip.audio
    if audio.shape[0] == channels:
        return clip
    if channels == 1:
        audio = audio.mean(axis=0, keepdims=True)
    elif audio.shape[0] == 1:
        audio = np.repeat(audio, channels, axis=0)
    else:
        audio = np.repeat(audio.mean(axis=0, keepdims=True), channels, axis=0)
    return Clip(np.ascontiguousarray(audio, dtype=np.float32), clip.sample_rate, clip.source)


def resample(clip: Clip, target_sr: int) -> Clip:
    """Resamples with librosa's default high-quality resampler (soxr)."""
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    if clip.sample_rate == target_sr:
        return clip
    audio = librosa.resample(clip.audio, orig_sr=clip.sample_rate, target_sr=target_sr, axis=-1)
    return Clip(np.ascontiguousarray(audio, dtype=np.float32), target_sr, clip.source)


def fit_length(audio: np.ndarray, samples: int, mode: str = "loop", offset: int = 0) -> np.ndarray:
    """Cuts or extends ``audio`` [C, T] to exactly ``samples``.

    Args:
        mode: "loop" repeats the clip (keeps texture for short training clips), "pad" appends zeros.
        offset: Start position for cutting (for random crops).
    """
    length = audio.shape[1]
    if length >= samples:
        offset = max(0, min(offset, length - samples))
        return audio[:, offset : offset + samples]
    if mode == "pad":
        return np.pad(audio, ((0, 0), (0, samples - length)))
    reps = -(-samples // length)
    return np.tile(audio, (1, reps))[:, :samples]


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> Path:
    """Writes ``audio`` [C, T] as WAV atomically.

    Args:
        subtype: "FLOAT" (32-bit float, lossless for model output) or "PCM_16" (clipped to [-1, 1]).
    """
    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if subtype == "PCM_16":
        audio = np.clip(audio, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, audio.T, sample_rate, format="WAV", subtype=subtype)
    atomic_write_bytes(path, buf.getvalue())
    return path
