"""Tempo, key and loudness metrics (recap.metrics.music)."""

from __future__ import annotations

import numpy as np
import pytest

from recap.metrics.music import (
    LOUDNESS_TOLERANCE_LU,
    TEMPO_TOLERANCE_BPM,
    MusicFeatures,
    compare_to_references,
    estimate_key,
    estimate_tempo,
    integrated_loudness,
    music_features,
)

SR = 22_050


def click_track(bpm: float, seconds: float = 8.0, sr: int = SR) -> np.ndarray:
    """Short decaying 1 kHz clicks, one per beat."""
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    t = np.arange(int(0.01 * sr)) / sr
    click = (np.sin(2 * np.pi * 1000 * t) * np.exp(-t * 400)).astype(np.float32)
    for k in range(int(seconds * bpm / 60)):
        i = int(k * 60 / bpm * sr)
        y[i : i + click.size] += click[: y.size - i]
    return y


def chord(freqs: tuple[float, ...], seconds: float = 3.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (sum(np.sin(2 * np.pi * f * t) for f in freqs) / (2 * len(freqs))).astype(np.float32)


def test_click_track_at_120_bpm_is_measured_within_tolerance():
    assert estimate_tempo(click_track(120), SR) == pytest.approx(120, abs=TEMPO_TOLERANCE_BPM)


def test_a_different_tempo_is_not_mistaken_for_the_default():
    # librosa's tempo prior is centred on 120 BPM; 90 must still come out as 90
    assert estimate_tempo(click_track(90), SR) == pytest.approx(90, abs=TEMPO_TOLERANCE_BPM)


def test_stereo_minus_23_lufs_reference_measures_minus_23():
    # EBU Tech 3341 case 1: a 1 kHz sine at -23 dBFS on both channels reads -23.0 LUFS
    # (the K-weighting gain at 1 kHz is the +0.691 dB that BS.1770's -0.691 offset cancels).
    sr = 48_000
    t = np.arange(10 * sr) / sr
    tone = 10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * t)
    assert integrated_loudness(np.stack([tone, tone]), sr) == pytest.approx(-23.0, abs=0.5)
    # 6 dB quieter reads 6 LU lower
    assert integrated_loudness(np.stack([tone, tone]) / 2, sr) == pytest.approx(-29.0, abs=0.5)


def test_loudness_is_undefined_for_silence_and_tiny_clips():
    assert integrated_loudness(np.zeros((2, SR)), SR) is None
    assert integrated_loudness(np.full(SR // 10, 0.5), SR) is None


def test_key_and_scale_of_triads():
    assert estimate_key(chord((220.0, 261.63, 329.63)), SR)[:2] == ("A", "minor")
    assert estimate_key(chord((261.63, 329.63, 392.0), sr=16_000), 16_000)[:2] == ("C", "major")


def test_features_of_silence_are_none_not_errors():
    f = music_features(np.zeros((2, SR)), SR)
    assert f == MusicFeatures(None, None, None, None, None)


def test_comparison_with_references_applies_the_paper_tolerances():
    refs = [
        MusicFeatures(120.0, "A", "minor", 0.9, -20.0),
        MusicFeatures(121.0, "A", "minor", 0.8, -22.0),
        MusicFeatures(119.0, "C", "major", 0.7, -21.0),
    ]
    # median tempo 120, most common key A minor, mean loudness -21
    close = compare_to_references(MusicFeatures(124.0, "A", "major", 0.5, -23.0), refs)
    assert close.tempo_diff_bpm == pytest.approx(4.0) and close.tempo_match
    assert close.key_match and not close.scale_match
    assert close.loudness_diff_lu == pytest.approx(-2.0) and close.loudness_match
    far = compare_to_references(MusicFeatures(126.0, "E", "minor", 0.5, -24.0), refs)
    assert not far.tempo_match and not far.key_match and far.scale_match and not far.loudness_match
    assert LOUDNESS_TOLERANCE_LU == 2.5
    silent = compare_to_references(MusicFeatures(None, None, None, None, None), refs)
    assert silent.tempo_match is None and silent.loudness_match is None
    with pytest.raises(ValueError, match="no reference clips"):
        compare_to_references(refs[0], [])
