"""Audio loading refuses unusable files with a message that names the problem."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from recap.audio_io import AudioError, Clip, fit_length, load_audio, tame_peak, to_channels, write_wav


def _sine(sr=16_000, seconds=0.5, freq=440.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    return np.repeat((0.5 * np.sin(2 * np.pi * freq * t))[None], channels, axis=0).astype(np.float32)


def test_roundtrip_resample_and_channels(tmp_path):
    path = write_wav(tmp_path / "a.wav", _sine(sr=44_100, channels=2), 44_100)
    clip = load_audio(path, target_sr=16_000, channels=1)
    assert clip.sample_rate == 16_000 and clip.audio.shape == (1, 8_000)
    assert clip.source == "a.wav"
    stereo = to_channels(clip, 2)
    assert stereo.audio.shape == (2, 8_000) and np.array_equal(stereo.audio[0], stereo.audio[1])


def test_flac_and_ogg_load(tmp_path):
    for fmt in ("flac", "ogg"):
        path = tmp_path / f"a.{fmt}"
        sf.write(path, _sine().T, 16_000, format=fmt.upper())
        assert load_audio(path).audio.shape[0] == 1


def test_pcm16_write_clips_and_float_keeps(tmp_path):
    loud = np.array([[2.0, -2.0, 0.5]], np.float32)
    assert np.allclose(load_audio(write_wav(tmp_path / "f.wav", loud, 8000), max_seconds=None).audio, loud)
    clipped = load_audio(write_wav(tmp_path / "p.wav", loud, 8000, "PCM_16")).audio
    assert clipped.max() <= 1.0 and clipped.min() >= -1.0


def test_zero_bytes(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")


def test_text_renamed_wav(tmp_path):
    (tmp_path / "notes.wav").write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(tmp_path / "notes.wav")


def test_truncated_wav(tmp_path):
    path = write_wav(tmp_path / "full.wav", _sine(seconds=1.0), 16_000, "PCM_16")
    data = path.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(tmp_path / "cut.wav")


def test_nan_samples(tmp_path):
    audio = _sine()
    audio[0, 100] = np.nan
    write_wav(tmp_path / "nan.wav", audio, 16_000)
    with pytest.raises(AudioError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


def test_silent_clip(tmp_path):
    write_wav(tmp_path / "silence.wav", np.zeros((1, 16_000), np.float32), 16_000)
    with pytest.raises(AudioError, match="silent"):
        load_audio(tmp_path / "silence.wav")
    assert load_audio(tmp_path / "silence.wav", allow_silent=True).seconds == 1.0


def test_one_hour_header_is_refused_before_decoding(tmp_path):
    """A WAV header that declares an hour of audio (with almost no data) is refused from the header."""
    sr, seconds = 16_000, 3600
    n_bytes = sr * seconds * 2
    header = b"RIFF" + struct.pack("<I", 36 + n_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
    header += b"data" + struct.pack("<I", n_bytes)
    (tmp_path / "hour.wav").write_bytes(header + b"\x00" * 1000)
    with pytest.raises(AudioError, match="3600 s long; the limit is 600 s"):
        load_audio(tmp_path / "hour.wav")


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")


def test_fit_length_loops_pads_and_crops():
    a = np.arange(5, dtype=np.float32)[None]
    assert fit_length(a, 12).tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]]
    assert fit_length(a, 7, mode="pad").tolist() == [[0, 1, 2, 3, 4, 0, 0]]
    assert fit_length(a, 3, offset=1).tolist() == [[1, 2, 3]]


def test_clip_properties():
    c = Clip(np.zeros((2, 32_000), np.float32), 16_000, "x")
    assert c.channels == 2 and c.seconds == 2.0


def test_a_far_too_loud_clip_is_scaled_to_peak_one_with_a_sentence(tmp_path):
    """A float WAV may hold 1e30 (its square overflows float32): it is scaled, and the user is told."""
    loud = load_audio(write_wav(tmp_path / "loud.wav", _sine() * 2e30, 16_000))
    tamed, note = tame_peak(loud)
    assert np.abs(tamed.audio).max() == pytest.approx(1.0) and np.isfinite(tamed.audio ** 2).all()
    assert note == "loud.wav peaks at 1e+30, far outside the [-1, 1] range of audio; it was scaled down to peak 1.0"
    ordinary = Clip(_sine() * 2.4, 16_000, "hot.wav")  # 1.2: overshoot, kept as it is
    assert tame_peak(ordinary) == (ordinary, None)
    with pytest.raises(AudioError, match="NaN"):
        tame_peak(Clip(np.full((1, 10), np.inf, np.float32), 16_000, "inf.wav"))
