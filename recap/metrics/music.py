"""Music-specific metrics of paper 001: tempo, key/scale and integrated loudness.

A generated clip "keeps" a property of the reference clips (e.g. the clips a learned token
was trained on) when its tempo is within 5 BPM of theirs, its key and scale equal their most
common key and scale, and its integrated loudness is within 2.5 LU of their mean. The paper
uses Essentia; here tempo comes from librosa's onset autocorrelation, key/scale from
Krumhansl-Kessler profiles correlated with a constant-Q chroma (the same idea as the HPCP key
detector), and loudness from pyloudnorm's ITU-R BS.1770-4 meter (EBU R 128, LUFS).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import librosa
import numpy as np
import pyloudnorm

logger = logging.getLogger(__name__)

TEMPO_TOLERANCE_BPM = 5.0
LOUDNESS_TOLERANCE_LU = 2.5
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class MusicFeatures:
    """Music descriptors of one clip; None where the clip does not define one.

    Attributes:
        tempo_bpm: estimated tempo in beats per minute (None for silence).
        key: tonic pitch class, e.g. "A" (None for silence).
        scale: "major" or "minor" (None for silence).
        key_strength: correlation of the chroma with the winning profile, in [-1, 1].
        loudness_lufs: integrated loudness (None for silence or clips under 0.4 s).
    """

    tempo_bpm: float | None
    key: str | None
    scale: str | None
    key_strength: float | None
    loudness_lufs: float | None


def _mono(audio: Any) -> np.ndarray:
    if hasattr(audio, "detach"):
        audio = audio.detach().to("cpu").float().numpy()
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        return x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"audio must be [T] or [C, T]; got shape {x.shape}")
    return x


def estimate_tempo(audio: Any, sample_rate: int) -> float | None:
    """Tempo in BPM of a clip ([T] or [C, T]); None when it has no onsets (silence)."""
    y = _mono(audio)
    if not np.any(y):
        return None
    bpm = librosa.feature.tempo(y=y, sr=sample_rate, aggregate=np.median)
    value = float(np.asarray(bpm).reshape(-1)[0])
    return value if value > 0 else None


def estimate_key(audio: Any, sample_rate: int) -> tuple[str, str, float] | None:
    """Key and scale of a clip by Krumhansl-Kessler profile matching.

    Returns:
        (tonic, "major" | "minor", correlation) or None for silence.
    """
    y = _mono(audio)
    if not np.any(y):
        return None
    # Seven octaves up from C1 must stay under Nyquist; at 16 kHz that leaves 6.
    n_octaves = int(min(7, np.floor(np.log2((sample_rate / 2) / librosa.note_to_hz("C1")))))
    with warnings.catch_warnings():
        # Short or tonally sparse clips make librosa warn while estimating tuning; the chroma
        # is still defined, and the key strength returned says how clear the key is.
        warnings.simplefilter("ignore", UserWarning)
        chroma = librosa.feature.chroma_cqt(y=y, sr=sample_rate, n_octaves=n_octaves).mean(axis=1)
    if not np.any(chroma > 0):
        return None
    best: tuple[str, str, float] = ("C", "major", -2.0)
    for tonic in range(12):
        for scale, profile in (("major", _MAJOR), ("minor", _MINOR)):
            r = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if r > best[2]:
                best = (PITCH_CLASSES[tonic], scale, r)
    return best


def integrated_loudness(audio: Any, sample_rate: int) -> float | None:
    """Integrated loudness in LUFS (ITU-R BS.1770-4); None for silence or clips under 0.4 s.

    Args:
        audio: [T] (mono) or [C, T] with C <= 5, float in [-1, 1].
        sample_rate: Hz.
    """
    if hasattr(audio, "detach"):
        audio = audio.detach().to("cpu").float().numpy()
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio must be [T] or [C, T]; got shape {x.shape}")
    data = x if x.ndim == 1 else x.T  # pyloudnorm wants [T, C]
    meter = pyloudnorm.Meter(sample_rate)
    if data.shape[0] < int(meter.block_size * sample_rate):
        return None
    value = float(meter.integrated_loudness(data))
    return value if math.isfinite(value) else None


def music_features(audio: Any, sample_rate: int) -> MusicFeatures:
    """Tempo, key/scale and integrated loudness of one clip ([T] or [C, T] at ``sample_rate``)."""
    key = estimate_key(audio, sample_rate)
    return MusicFeatures(
        tempo_bpm=estimate_tempo(audio, sample_rate),
        key=key[0] if key else None,
        scale=key[1] if key else None,
        key_strength=key[2] if key else None,
        loudness_lufs=integrated_loudness(audio, sample_rate),
    )


@dataclass(frozen=True)
class MusicComparison:
    """How a clip's music features compare with the reference clips' (paper 001).

    A field is None when either side lacks the feature (e.g. silent clips).

    Attributes:
        tempo_diff_bpm: clip tempo minus the references' median tempo.
        tempo_match: |tempo_diff_bpm| <= tolerance (5 BPM).
        key_match: clip tonic equals the references' most common tonic.
        scale_match: clip scale equals the references' most common scale.
        loudness_diff_lu: clip loudness minus the references' mean loudness.
        loudness_match: |loudness_diff_lu| <= tolerance (2.5 LU).
    """

    tempo_diff_bpm: float | None
    tempo_match: bool | None
    key_match: bool | None
    scale_match: bool | None
    loudness_diff_lu: float | None
    loudness_match: bool | None


def compare_to_references(
    clip: MusicFeatures,
    references: Sequence[MusicFeatures],
    tempo_tolerance: float = TEMPO_TOLERANCE_BPM,
    loudness_tolerance: float = LOUDNESS_TOLERANCE_LU,
) -> MusicComparison:
    """Compares one clip's features with those of the reference clips.

    Raises:
        ValueError: if ``references`` is empty or a tolerance is negative.
    """
    if not references:
        raise ValueError("no reference clips to compare with")
    if not (math.isfinite(tempo_tolerance) and math.isfinite(loudness_tolerance)) \
            or tempo_tolerance < 0 or loudness_tolerance < 0:
        raise ValueError(f"tolerances must be finite and >= 0; got {tempo_tolerance} BPM, {loudness_tolerance} LU")
    tempi = [r.tempo_bpm for r in references if r.tempo_bpm is not None]
    louds = [r.loudness_lufs for r in references if r.loudness_lufs is not None]
    keys = Counter(r.key for r in references if r.key is not None)
    scales = Counter(r.scale for r in references if r.scale is not None)

    tempo_diff = clip.tempo_bpm - float(np.median(tempi)) if tempi and clip.tempo_bpm is not None else None
    loud_diff = clip.loudness_lufs - float(np.mean(louds)) if louds and clip.loudness_lufs is not None else None
    # most_common breaks ties by first appearance, so the result does not depend on hashing.
    key_match = clip.key == keys.most_common(1)[0][0] if keys and clip.key is not None else None
    scale_match = clip.scale == scales.most_common(1)[0][0] if scales and clip.scale is not None else None
    return MusicComparison(
        tempo_diff_bpm=tempo_diff,
        tempo_match=abs(tempo_diff) <= tempo_tolerance if tempo_diff is not None else None,
        key_match=key_match,
        scale_match=scale_match,
        loudness_diff_lu=loud_diff,
        loudness_match=abs(loud_diff) <= loudness_tolerance if loud_diff is not None else None,
    )


def score_clips(
    clips: Sequence[tuple[Any, int]],
    references: Sequence[tuple[Any, int]],
    tempo_tolerance: float = TEMPO_TOLERANCE_BPM,
    loudness_tolerance: float = LOUDNESS_TOLERANCE_LU,
) -> list[tuple[MusicFeatures, MusicComparison]]:
    """Features of each clip and their comparison with the references' features.

    Args:
        clips: N (audio [C, T] or [T], sample_rate) pairs.
        references: M >= 1 (audio, sample_rate) pairs.

    Returns:
        N (features, comparison) pairs.
    """
    if not references:
        raise ValueError("music metrics need at least one reference clip")
    ref_features = [music_features(a, sr) for a, sr in references]
    out = []
    for audio, sr in clips:
        f = music_features(audio, sr)
        out.append((f, compare_to_references(f, ref_features, tempo_tolerance, loudness_tolerance)))
    return out
