"""Spectrograms, bin clipping and figures (recap.analysis.spectrogram)."""

from __future__ import annotations

import numpy as np
import pytest

from recap.analysis.figures import save_figure
from recap.analysis.spectrogram import (
    N_FFT,
    THESIS_BINS,
    SpectrogramConfig,
    band_caption,
    clip_bins,
    difference_grid,
    hz_to_bins,
    spectrogram_grid,
    spectrogram_of,
    stft_db,
)

SR = 16_000


def sine(hz: float, seconds: float = 0.5, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_full_spectrogram_has_512_bins():
    spec = stft_db(sine(1000.0), SR)
    assert N_FFT == 1022
    assert spec.db.shape[0] == 512
    assert spec.freqs[-1] == pytest.approx(SR / 2)


@pytest.mark.parametrize("bin_index", [40, 125, 300])
def test_a_sine_on_a_bin_centre_peaks_in_that_bin(bin_index):
    hz = bin_index * SR / N_FFT
    spec = stft_db(sine(hz), SR)
    assert int(np.argmax(spec.db.mean(axis=1))) == bin_index
    # full-scale reference: a 0.5 amplitude sine is far above the -100 dB floor
    assert spec.db.max() > -20


def test_stereo_is_mixed_to_mono():
    stereo = np.stack([sine(2000.0), sine(2000.0)])
    np.testing.assert_allclose(stft_db(stereo, SR).db, stft_db(sine(2000.0), SR).db, atol=1e-4)


def test_clipping_keeps_exactly_the_asked_rows():
    spec = stft_db(sine(4000.0), SR)
    clipped = clip_bins(spec, 100, 150)
    assert clipped.db.shape == (50, spec.db.shape[1])
    assert list(clipped.bins) == list(range(100, 150))
    np.testing.assert_array_equal(clipped.db, spec.db[100:150])
    # clipping again works in absolute bin numbers
    again = clip_bins(clipped, 120, 130)
    np.testing.assert_array_equal(again.db, spec.db[120:130])
    assert again.freqs[0] == pytest.approx(120 * SR / N_FFT)
    with pytest.raises(ValueError, match=r"\[90, 130\)"):
        clip_bins(clipped, 90, 130)


def test_config_default_is_the_whole_range_the_thesis_rows_a_preset_and_hz_band_selects_rows():
    # bins 100-150 are 783-1,166 Hz at 8 kHz: a 2 kHz beep would not be in them, so every row is the default
    beep = sine(2000.0, sr=8000)
    spec = spectrogram_of(beep, 8000)
    assert (spec.first_bin, spec.db.shape[0]) == (0, 512)
    assert abs(spec.freqs[int(np.argmax(spec.db.mean(axis=1)))] - 2000.0) < 8000 / N_FFT
    thesis = spectrogram_of(sine(3000.0), SR, SpectrogramConfig(bins=THESIS_BINS))
    assert (thesis.first_bin, thesis.db.shape[0]) == (100, 50)
    assert band_caption(*THESIS_BINS, 8000) == "bins 100–149 = 783–1,166 Hz at 8,000 Hz (7.8 Hz a bin)"
    lo, hi = hz_to_bins(2000.0, 3000.0, SR)
    band = spectrogram_of(sine(3000.0), SR, SpectrogramConfig(hz=(2000.0, 3000.0)))
    assert band.freqs[0] <= 2000.0 and band.freqs[-1] >= 3000.0
    assert (band.first_bin, band.first_bin + band.db.shape[0]) == (lo, hi)
    with pytest.raises(ValueError, match="Nyquist"):
        hz_to_bins(1000.0, 9000.0, SR)


def _panels():
    clips = {
        ("baseline", 0): sine(3500.0),
        ("baseline", 1): sine(3600.0),
        ("reword-1", 0): sine(3800.0),
        ("reword-1", 1): sine(3900.0),
        ("reword-2", 0): sine(4000.0),
    }
    return {key: spectrogram_of(audio, SR, SpectrogramConfig(bins=THESIS_BINS)) for key, audio in clips.items()}


def test_grid_has_one_trace_per_clip_with_a_shared_colour_scale():
    panels = _panels()
    fig = spectrogram_grid(panels)
    assert len(fig.data) == len(panels)
    assert {tr.name for tr in fig.data} == {f"{label}__seed{seed}" for label, seed in panels}
    assert {tr.coloraxis for tr in fig.data} == {"coloraxis"}
    top = max(float(s.db.max()) for s in panels.values())
    assert fig.layout.coloraxis.cmin == pytest.approx(max(min(float(s.db.min()) for s in panels.values()), top - 90))
    trace = fig.data[0]
    for field in ("%{x", "%{y", "Hz", "bin", "dB"):
        assert field in trace.hovertemplate
    # the axes are seconds and Hz; hover data carries each row's bin
    np.testing.assert_allclose(np.asarray(trace.y), np.arange(100, 150) * SR / N_FFT)
    assert fig.layout.yaxis.title.text == "frequency (Hz)" and "time (s)" in str(fig.layout)
    assert np.asarray(trace.customdata)[0, 0] == 100


def test_difference_grid_is_variant_minus_baseline_same_seed():
    panels = _panels()
    fig = difference_grid(panels)
    assert sorted(tr.name for tr in fig.data) == ["reword-1__seed0", "reword-1__seed1", "reword-2__seed0"]
    by_name = {tr.name: tr for tr in fig.data}
    variant, base = panels[("reword-1", 1)].db, panels[("baseline", 1)].db
    silent = (variant < -80) & (base < -80)  # below -80 dB re full scale in both: blank
    expected = np.where(silent, np.nan, variant - base)
    assert silent.any() and not silent.all()
    np.testing.assert_allclose(np.asarray(by_name["reword-1__seed1"].z, dtype=float), expected, atol=1e-5)
    assert fig.layout.coloraxis.cmid == 0.0
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-30.0, 30.0)
    with pytest.raises(ValueError, match="no variant clip shares a seed"):
        difference_grid({k: v for k, v in panels.items() if k[0] != "baseline"})


def test_long_clips_are_pooled_for_display():
    spec = spectrogram_of(sine(3000.0, seconds=6.0), SR)
    fig = spectrogram_grid({("baseline", 0): spec}, max_frames=100)
    assert np.asarray(fig.data[0].z).shape[1] <= 100
    assert spec.db.shape[1] > 300


def test_save_figure_writes_html_atomically_and_reproducibly(tmp_path):
    fig = spectrogram_grid(_panels())
    written = save_figure(fig, tmp_path / "figures" / "spectrograms")
    html = tmp_path / "figures" / "spectrograms.html"
    # for papers: the same figure as PNG and SVG (kaleido driving Debian's Chromium)
    png, svg = tmp_path / "figures" / "spectrograms.png", tmp_path / "figures" / "spectrograms.svg"
    assert written == [html, png, svg]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and svg.read_text().lstrip().startswith("<svg")
    assert (tmp_path / "figures" / "plotly.min.js").stat().st_size > 100_000
    text = html.read_text()
    assert 'src="plotly.min.js"' in text
    first = html.read_bytes()
    save_figure(fig, tmp_path / "figures" / "spectrograms", static=False)
    assert html.read_bytes() == first
    assert not [p for p in (tmp_path / "figures").iterdir() if p.name.endswith(".tmp")]


def test_the_difference_view_blanks_silence_in_both_clips_and_clips_its_scale():
    # a beep with a silent gap against a quieter beep with the same gap: the gap is blank, not -0 dB
    # of two noise floors, and a tone against silence (~100 dB) does not stretch the scale
    tone = sine(1000.0, seconds=1.0)
    gap = tone.copy()
    gap[4000:12000] = 0.0
    quiet = 0.1 * gap
    a = spectrogram_of(gap, SR)
    b = spectrogram_of(quiet, SR)
    c = spectrogram_of(tone, SR)
    fig = difference_grid({("baseline", 0): a, ("quiet", 0): b, ("tone", 0): c}, max_frames=None)
    z = {tr.name: np.asarray(tr.z, dtype=float) for tr in fig.data}
    row = int(round(1000.0 * N_FFT / SR))
    assert np.isnan(z["quiet__seed0"][row, 30])  # frame 30 (~0.48 s) is inside the gap of both
    assert z["quiet__seed0"][row, 5] == pytest.approx(-20.0, abs=0.5)  # -20 dB where both sound
    assert not np.isnan(z["tone__seed0"][row, 30]) and z["tone__seed0"][row, 30] > 30  # beyond the scale
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-30.0, 30.0)
