"""Magnitude spectrograms in dB, frequency-bin clipping, and plotly figures of a run.

The thesis figures use an STFT with 512 frequency bins (n_fft = 1022) and show only rows
100-150 (:data:`THESIS_BINS`), where the differences between rewordings were easiest to see at
44.1 kHz. Rows are *bins*, not Hz: bin k is centred on ``k * sample_rate / n_fft`` Hz, so the
same rows mean different bands at different sample rates (100-150 is 783-1,166 Hz at 8 kHz but
4.3-6.5 kHz at 44.1 kHz). So figures show every row by default, with Hz on the axis, and a band
is best named in Hz (:func:`hz_to_bins` converts it to rows).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from recap.errors import BadInput
from recap.limits import finite, whole
from recap.metrics.similarity import ClipKey
from recap.analysis.figures import save_figure, write_if_changed

logger = logging.getLogger(__name__)

N_FFT = 1022  # 1 + n_fft // 2 = 512 frequency bins, as in the thesis figures
THESIS_BINS = (100, 150)  # the thesis's rows: a preset, not the default (see the module docstring)
DEFAULT_BINS = None  # every row, 0 Hz to Nyquist, whatever the model's sample rate
DIFF_CLIP_DB = 30.0  # the difference view's colour scale: ±30 dB (a silent gap would stretch it to ±130)
SILENCE_DB = -80.0  # dB re full scale: a cell below this in both clips is silence, left blank in differences
MAX_N_FFT = 16384
MAX_FIGURE_FRAMES = 20_000


@dataclass(frozen=True)
class SpectrogramConfig:
    """How spectrograms are computed and shown.

    Attributes:
        n_fft: FFT size; 1022 gives 512 bins.
        hop_length: STFT hop in samples.
        bins: half-open row range [lo, hi) to keep; None (the default) keeps all rows;
            :data:`THESIS_BINS` is the thesis's 100-150.
        hz: a band (lo_hz, hi_hz) to keep instead of ``bins``; wins over ``bins`` when set.
        amin: magnitude floor before the log (1e-5 -> -100 dB), so silence is finite.
        max_frames: figures average neighbouring frames down to at most this many columns,
            so a 47 s clip does not make a 50 MB HTML file; None shows every frame.
    """

    n_fft: int = N_FFT
    hop_length: int = 256
    bins: tuple[int, int] | None = DEFAULT_BINS  # every row: bins are not Hz (module docstring)
    hz: tuple[float, float] | None = None
    amin: float = 1e-5
    max_frames: int | None = 800

    def __post_init__(self) -> None:
        # Checked where the config is made, so the CLI and the UI refuse a bad range before any work.
        n_fft = whole("n_fft", self.n_fft, 2, MAX_N_FFT)
        rows = n_fft // 2 + 1
        object.__setattr__(self, "n_fft", n_fft)
        object.__setattr__(self, "hop_length", whole("hop_length", self.hop_length, 1, n_fft))
        if self.bins is not None:
            lo, hi = _pair("bins", self.bins)
            lo, hi = whole("lowest bin", lo, 0, rows - 1), whole("highest bin", hi, 1, rows)
            if lo >= hi:
                raise BadInput(f"bin range [{lo}, {hi}) is empty: the lowest bin must be below the highest")
            object.__setattr__(self, "bins", (lo, hi))
        if self.hz is not None:
            lo_hz, hi_hz = _pair("hz", self.hz)
            lo_hz, hi_hz = finite("lowest Hz", lo_hz, 0.0, 1e6), finite("highest Hz", hi_hz, 0.0, 1e6)
            if lo_hz >= hi_hz:
                raise BadInput(f"band {lo_hz:g}-{hi_hz:g} Hz is empty: the lowest frequency must be below the highest")
            object.__setattr__(self, "hz", (lo_hz, hi_hz))
        amin = finite("amin", self.amin, 0.0, 1.0)
        if amin <= 0:
            raise BadInput(f"amin must be above 0, got {amin}")
        object.__setattr__(self, "amin", amin)
        if self.max_frames is not None:
            object.__setattr__(self, "max_frames", whole("max_frames", self.max_frames, 1, MAX_FIGURE_FRAMES))


def _pair(name: str, value: Any) -> tuple[Any, Any]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise BadInput(f"{name} must be two numbers (low, high), got {str(value)[:40]!r}")
    return value[0], value[1]


@dataclass(frozen=True)
class Spectrogram:
    """A (possibly clipped) magnitude spectrogram in dB.

    Attributes:
        db: [n_rows, n_frames] float32, 20*log10(|STFT|) relative to full scale 1.0 (a fixed
            reference, so panels of different clips share one colour scale meaningfully).
        sample_rate: Hz of the audio it came from.
        n_fft: FFT size used.
        hop_length: hop in samples.
        first_bin: index of the first kept row within the full 1 + n_fft // 2 rows.
    """

    db: np.ndarray
    sample_rate: int
    n_fft: int
    hop_length: int
    first_bin: int = 0

    @property
    def bins(self) -> np.ndarray:
        """[n_rows] bin index of each row."""
        return np.arange(self.first_bin, self.first_bin + self.db.shape[0])

    @property
    def freqs(self) -> np.ndarray:
        """[n_rows] centre frequency of each row in Hz."""
        return self.bins * self.sample_rate / self.n_fft

    @property
    def times(self) -> np.ndarray:
        """[n_frames] centre time of each frame in seconds."""
        return np.arange(self.db.shape[1]) * self.hop_length / self.sample_rate


def stft_db(
    audio: Any,
    sample_rate: int,
    n_fft: int = N_FFT,
    hop_length: int = 256,
    amin: float = 1e-5,
) -> Spectrogram:
    """Magnitude STFT in dB of a clip (channels are averaged to mono first).

    Args:
        audio: [T] or [C, T] float samples in [-1, 1] (numpy or torch).
        sample_rate: Hz.
        n_fft: FFT size (1022 -> 512 bins).
        hop_length: hop in samples.
        amin: magnitude floor.

    Returns:
        Spectrogram with all 1 + n_fft // 2 rows.
    """
    if hasattr(audio, "detach"):
        audio = audio.detach().to("cpu").float().numpy()
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"audio must be [T] or [C, T] with T > 0; got shape {np.shape(audio)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive; got {sample_rate}")
    if n_fft < 2 or hop_length < 1:
        raise ValueError(f"bad STFT sizes: n_fft={n_fft}, hop_length={hop_length}")
    mag = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop_length, center=True))
    db = librosa.amplitude_to_db(mag, ref=1.0, amin=amin, top_db=None).astype(np.float32)
    return Spectrogram(db=db, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length)


def clip_bins(spec: Spectrogram, lo: int, hi: int) -> Spectrogram:
    """Keeps rows [lo, hi) (absolute bin indices) of a full or already clipped spectrogram."""
    first, last = spec.first_bin, spec.first_bin + spec.db.shape[0]
    if not first <= lo < hi <= last:
        raise ValueError(f"bin range [{lo}, {hi}) is not inside the available rows [{first}, {last})")
    return replace(spec, db=spec.db[lo - first : hi - first], first_bin=lo)


def hz_to_bins(lo_hz: float, hi_hz: float, sample_rate: int, n_fft: int = N_FFT) -> tuple[int, int]:
    """Half-open bin range whose centres cover the band [lo_hz, hi_hz].

    Raises:
        ValueError: if the band is empty or outside 0..Nyquist.
    """
    nyquist = sample_rate / 2
    if not 0 <= lo_hz < hi_hz <= nyquist:
        raise ValueError(f"band {lo_hz}-{hi_hz} Hz must satisfy 0 <= lo < hi <= Nyquist ({nyquist} Hz)")
    lo = int(np.floor(lo_hz * n_fft / sample_rate))
    hi = int(np.ceil(hi_hz * n_fft / sample_rate)) + 1
    return lo, min(hi, n_fft // 2 + 1)


def band_caption(lo: int, hi: int, sample_rate: int, n_fft: int = N_FFT) -> str:
    """What the half-open row range [lo, hi) is in Hz at ``sample_rate``, e.g.
    ``"bins 0–511 = 0–4,000 Hz at 8,000 Hz (7.8 Hz a bin)"``."""
    step = sample_rate / n_fft
    return (f"bins {lo}–{hi - 1} = {lo * step:,.0f}–{(hi - 1) * step:,.0f} Hz at {sample_rate:,} Hz "
            f"({step:.1f} Hz a bin)")


def spectrogram_of(audio: Any, sample_rate: int, config: SpectrogramConfig = SpectrogramConfig()) -> Spectrogram:
    """:func:`stft_db` followed by the clipping the config asks for."""
    spec = stft_db(audio, sample_rate, config.n_fft, config.hop_length, config.amin)
    if config.hz is not None:
        return clip_bins(spec, *hz_to_bins(config.hz[0], config.hz[1], sample_rate, config.n_fft))
    if config.bins is not None:
        return clip_bins(spec, *config.bins)
    return spec


def _pool_frames(db: np.ndarray, times: np.ndarray, max_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    if max_frames is None or db.shape[1] <= max_frames:
        return db, times
    factor = int(np.ceil(db.shape[1] / max_frames))
    n = db.shape[1] // factor * factor
    blocks = db[:, :n].reshape(db.shape[0], -1, factor)
    if np.isnan(blocks).any():  # a masked difference: a column is blank only when all of it is
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pooled = np.nanmean(blocks, axis=2)
    else:
        pooled = blocks.mean(axis=2)
    return pooled, times[:n].reshape(-1, factor).mean(axis=1)


def _layout(keys: list[ClipKey]) -> tuple[list[str], list[int]]:
    labels = list(dict.fromkeys(label for label, _ in keys))
    seeds = sorted({seed for _, seed in keys})
    return labels, seeds


_HOVER = "t %{x:.2f} s<br>%{y:,.0f} Hz<br>bin %{customdata}<br>%{z:.1f} dB<extra>%{meta}</extra>"


def _grid(panels: Mapping[ClipKey, Spectrogram], title: str, max_frames: int | None) -> go.Figure:
    keys = list(panels)
    labels, seeds = _layout(keys)
    fig = make_subplots(
        rows=len(labels),
        cols=len(seeds),
        shared_xaxes=True,
        shared_yaxes=True,
        subplot_titles=[f"{label} · seed {seed}" if (label, seed) in panels else ""
                        for label in labels for seed in seeds],
        vertical_spacing=min(0.08, 0.3 / max(len(labels), 1)),
        horizontal_spacing=min(0.04, 0.2 / max(len(seeds), 1)),
    )
    for (label, seed), spec in panels.items():
        db, times = _pool_frames(spec.db, spec.times, max_frames)
        rows = np.repeat(spec.bins[:, None], db.shape[1], axis=1)
        fig.add_trace(
            go.Heatmap(z=db, x=times, y=spec.freqs, customdata=rows, coloraxis="coloraxis",
                       hovertemplate=_HOVER, meta=f"{label} · seed {seed}", name=f"{label}__seed{seed}"),
            row=labels.index(label) + 1,
            col=seeds.index(seed) + 1,
        )
    fig.update_layout(title=title, height=max(300, 220 * len(labels)), width=max(500, 380 * len(seeds)))
    fig.update_xaxes(title_text="time (s)", row=len(labels))
    fig.update_yaxes(title_text="frequency (Hz)", col=1)
    return fig


def spectrogram_grid(
    spectrograms: Mapping[ClipKey, Spectrogram],
    title: str = "Spectrograms",
    max_frames: int | None = 800,
) -> go.Figure:
    """One heatmap panel per clip: rows are variants (in the given order), columns seeds.

    All panels share one colour axis so equal colours mean equal dB across clips: up to the
    loudest cell of any panel, down to 90 dB below it (quieter cells are all "silence"). The
    axes are seconds and Hz; hovering a cell shows time, Hz, bin and dB.

    Args:
        spectrograms: spectrogram per (variant, seed), usually clipped to the same rows.
        title: figure title.
        max_frames: see :class:`SpectrogramConfig`.

    Returns:
        A figure with exactly one trace per clip.
    """
    if not spectrograms:
        raise ValueError("no spectrograms to plot")
    fig = _grid(spectrograms, title, max_frames)
    hi = max(float(s.db.max()) for s in spectrograms.values())
    lo = max(min(float(s.db.min()) for s in spectrograms.values()), hi - 90.0)
    fig.update_layout(coloraxis={"colorscale": "Magma", "cmin": lo, "cmax": hi,
                                 "colorbar": {"title": {"text": "dB"}}})
    return fig


def difference_grid(
    spectrograms: Mapping[ClipKey, Spectrogram],
    baseline: str = "baseline",
    title: str = "Difference to baseline (same seed)",
    max_frames: int | None = 800,
    clip_db: float = DIFF_CLIP_DB,
    silence_db: float = SILENCE_DB,
) -> go.Figure:
    """Panels of variant − baseline in dB, paired by seed, on a diverging scale centred at 0.

    Where both clips are silent the difference of two noise floors means nothing and would set
    the scale (a gap against a tone is 100 dB), so such cells are blank (NaN) and the colours
    stop at ±``clip_db`` (larger differences show the end colour; hovering gives the value).

    Args:
        clip_db: half-width of the colour scale in dB.
        silence_db: dB re full scale below which a cell of both clips counts as silence.

    Returns:
        A figure with one trace per non-baseline clip whose baseline seed exists.

    Raises:
        ValueError: if no such pair exists or paired spectrograms differ in shape.
    """
    base = {seed: s for (label, seed), s in spectrograms.items() if label == baseline}
    diffs: dict[ClipKey, Spectrogram] = {}
    for (label, seed), spec in spectrograms.items():
        if label == baseline or seed not in base:
            continue
        ref = base[seed]
        if spec.db.shape != ref.db.shape or spec.first_bin != ref.first_bin:
            raise ValueError(f"{label} seed {seed}: spectrogram {spec.db.shape} from bin {spec.first_bin} "
                             f"does not match baseline {ref.db.shape} from bin {ref.first_bin}")
        silent = (spec.db < silence_db) & (ref.db < silence_db)
        diffs[(label, seed)] = replace(spec, db=np.where(silent, np.nan, spec.db - ref.db).astype(np.float32))
    if not diffs:
        raise ValueError(f"no variant clip shares a seed with baseline {baseline!r}")
    fig = _grid(diffs, title, max_frames)
    fig.update_layout(coloraxis={"colorscale": "RdBu_r", "cmin": -clip_db, "cmax": clip_db, "cmid": 0.0,
                                 "colorbar": {"title": {"text": f"Δ dB (±{clip_db:g})"}}})
    return fig


def write_run_figures(
    run_dir: str | Path,
    config: SpectrogramConfig = SpectrogramConfig(),
    baseline: str = "baseline",
    static: bool = True,
) -> list[Path]:
    """Spectrogram grid and difference view of a run, into ``RUN_DIR/figures/``.

    Writes ``spectrograms.html`` (every clip: variants x seeds), ``difference.html`` (variant −
    baseline, same seed; when the run has variants besides the baseline), PNG and SVG copies
    (``static``, when a browser can render them: :func:`recap.analysis.figures.save_figure`), and
    ``figures.json`` with the config that made them.

    Returns:
        The paths written or confirmed up to date.
    """
    from recap.audio_io import load_audio
    from recap.paths import json_bytes
    from recap.generation.runs import load_run

    run = load_run(run_dir)
    folder = Path(run.path) / "figures"
    specs: dict[ClipKey, Spectrogram] = {}
    for c in run.clips:
        clip = load_audio(run.audio_path(c), max_seconds=None, allow_silent=True)
        specs[(c.variant, int(c.seed))] = spectrogram_of(clip.audio, clip.sample_rate, config)
    if not specs:
        raise ValueError(f"run {run.run_id} has no clips to plot")
    first = specs[next(iter(specs))]
    rows = band_caption(first.first_bin, first.first_bin + first.db.shape[0], first.sample_rate, first.n_fft)
    title = f"Run {run.run_id}: spectrograms ({rows}; dB re full scale)"
    written = save_figure(spectrogram_grid(specs, title, config.max_frames), folder / "spectrograms", static)
    if any(label == baseline for label, _ in specs) and any(label != baseline for label, _ in specs):
        diff = difference_grid(specs, baseline, f"Run {run.run_id}: variant − {baseline}, same seed ({rows})",
                               config.max_frames)
        written += save_figure(diff, folder / "difference", static)
    meta = {"run_id": run.run_id, "baseline": baseline, "config": asdict(config)}
    write_if_changed(folder / "figures.json", json_bytes(meta))
    return written + [folder / "figures.json"]
