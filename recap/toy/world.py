"""The toy sound world: synthetic sources, their captions, the word-level vocabulary, reference features.

Every clip is synthesised on the fly from a :class:`SoundSpec` (source x pitch band x rhythm plus
random amplitude, frequency, phase and timing jitter), so the world needs no data files and a
seed reproduces any clip. The `toy` model (``recap.toy.train``) is trained on this world; the
reference features (:func:`features`) are plain signal measurements that say what a clip of this
world sounds like without trusting the model: spectral centroid, loudness-envelope variation,
spectral flatness, pitch-modulation depth and speed; :class:`SpecClassifier` reads them as the
nearest (source, pitch, rhythm).

Kept out of training on purpose, so that studies can measure generalisation honestly:
``HELD_OUT_SOURCES`` (the warble, for Textual Inversion) and ``HELD_OUT_SYNONYMS`` (words that are
in the vocabulary but never appear in a training caption).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 8_000
CLIP_SAMPLES = 8_192  # 1.024 s: 32 latent frames at the VAE's hop of 256
MAX_TOKENS = 16

SOURCES = ("beep", "buzz", "hum", "chirp", "siren", "clicks", "hiss", "bell", "warble")
HELD_OUT_SOURCES = ("warble",)
TRAIN_SOURCES = tuple(s for s in SOURCES if s not in HELD_OUT_SOURCES)
PITCHES = {"low": (110.0, 220.0), "mid": (400.0, 800.0), "high": (1400.0, 2400.0)}  # Hz, log-uniform within
RHYTHMS = ("continuous", "repeating")

# Words a caption may use for each attribute value; the first is the canonical word.
PITCH_WORDS = {"low": ("low", "deep"), "mid": ("mid", "medium"), "high": ("high", "shrill")}
RHYTHM_WORDS = {"continuous": ("continuous", "steady"), "repeating": ("repeating", "pulsing")}
SOURCE_WORDS = {s: (s,) for s in SOURCES} | {"beep": ("beep", "tone")}
# In the vocabulary, never in a training caption: what they mean is the model's guess.
HELD_OUT_SYNONYMS = {"low": "bass", "high": "bright", "continuous": "constant", "repeating": "intermittent", "hum": "drone"}

PREFIXES = (
    "", "a", "the sound of a", "a recording of a", "a clean recording of a", "a close-up recording of a",
    "a short clip of a", "an audio clip of a", "a good recording of a",
)
SPECIALS = ("<pad>", "</s>", "<unk>")


def vocabulary() -> list[str]:
    """Every word of the world's tokenizer, specials first (pad id 0, eos id 1 as in T5)."""
    words: list[str] = []
    groups = [PREFIXES, ["sound", "-", ","]]
    groups += [w for v in PITCH_WORDS.values() for w in v], [w for v in RHYTHM_WORDS.values() for w in v]
    groups += [[w for v in SOURCE_WORDS.values() for w in v], list(HELD_OUT_SYNONYMS.values())]
    groups += [["pitched", "pitch", "and", "with", "of", "an", "in", "the", "noise", "sound", "clip", "loud", "quiet"]]
    for group in groups:
        for phrase in group:
            for w in phrase.replace("-", " - ").split():
                if w not in words:
                    words.append(w)
    return list(SPECIALS) + words


def build_tokenizer(out: Path):
    """A word-level ``tokenizers`` model over :func:`vocabulary`, saved as a transformers tokenizer."""
    return save_word_tokenizer(vocabulary(), out, MAX_TOKENS)


def save_word_tokenizer(words: list[str], out: Path, max_tokens: int):
    """A word-level tokenizer over ``words`` (specials first: pad id 0, eos id 1 as in T5), saved
    to ``out`` as a transformers tokenizer; every toy world builds its own this way."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_tokens
    )
    fast.save_pretrained(str(out))
    return fast


# ----------------------------------------------------------------------------- sounds
@dataclass(frozen=True)
class SoundSpec:
    """What one clip is: the attributes a caption can name."""

    source: str
    pitch: str
    rhythm: str

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; known: {', '.join(SOURCES)}")
        if self.pitch not in PITCHES:
            raise ValueError(f"unknown pitch {self.pitch!r}; known: {', '.join(PITCHES)}")
        if self.rhythm not in RHYTHMS:
            raise ValueError(f"unknown rhythm {self.rhythm!r}; known: {', '.join(RHYTHMS)}")


def all_specs(sources: tuple[str, ...] = TRAIN_SOURCES) -> list[SoundSpec]:
    return [SoundSpec(s, p, r) for s in sources for p in PITCHES for r in RHYTHMS]


def _harmonics(phase: np.ndarray, f0: float, weights: list[float]) -> np.ndarray:
    """Sum of harmonics k*phase with the given weights, dropping those above 0.95 x Nyquist."""
    out = np.zeros_like(phase)
    for k, w in enumerate(weights, 1):
        if k * f0 < 0.95 * SAMPLE_RATE / 2:
            out += w * np.sin(k * phase)
    return out


def _gate(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """On/off envelope at 3-6 Hz, duty 35-60 %, 5 ms ramps (so the gating itself does not click)."""
    rate, duty, offset = rng.uniform(3.0, 6.0), rng.uniform(0.35, 0.6), rng.uniform(0, 1)
    square = (((t * rate + offset) % 1.0) < duty).astype(np.float64)
    ramp = max(1, int(0.005 * SAMPLE_RATE))
    return np.convolve(square, np.ones(ramp) / ramp, mode="same")


def synthesize(spec: SoundSpec, rng: np.random.Generator, samples: int = CLIP_SAMPLES) -> np.ndarray:
    """One clip of ``spec`` as float32 [samples] at :data:`SAMPLE_RATE`, peak about 0.2-0.8."""
    t = np.arange(samples) / SAMPLE_RATE
    lo, hi = PITCHES[spec.pitch]
    f = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    phi0 = rng.uniform(0, 2 * np.pi)
    src = spec.source
    if src in ("beep", "hum", "buzz"):
        phase = 2 * np.pi * f * t + phi0
        weights = {"beep": [1.0], "hum": [1.0, 0.6, 0.4, 0.25, 0.15, 0.1], "buzz": [1.0 / k if k % 2 else 0.0 for k in range(1, 16)]}[src]
        x = _harmonics(phase, f, weights)
        if src == "hum":  # a slow beating makes it hum rather than beep
            x *= 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6))
    elif src in ("siren", "warble", "chirp"):
        if src == "siren":  # slow wide sweep
            inst = f * (1 + 0.25 * np.sin(2 * np.pi * rng.uniform(1.0, 2.0) * t + rng.uniform(0, 6)))
        elif src == "warble":  # fast narrow vibrato
            inst = f * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(9.0, 13.0) * t + rng.uniform(0, 6)))
        else:  # upward glides restarting every 80-140 ms
            period = rng.uniform(0.08, 0.14)
            inst = f * 2 ** (((t / period) % 1.0) - 0.5)
        phase = 2 * np.pi * np.cumsum(inst) / SAMPLE_RATE + phi0
        x = _harmonics(phase, f, [1.0, 0.3] if src == "warble" else [1.0])
    elif src == "hiss":  # noise band around f
        spectrum = np.fft.rfft(rng.standard_normal(samples))
        freqs = np.fft.rfftfreq(samples, 1 / SAMPLE_RATE)
        spectrum *= np.exp(-0.5 * (np.log2(np.maximum(freqs, 1.0) / f) / 0.35) ** 2)
        x = np.fft.irfft(spectrum, samples)
        x /= np.abs(x).max() + 1e-9
    elif src == "clicks":  # a train of short resonant ticks at 20-35 per second
        x = np.zeros(samples)
        step = int(SAMPLE_RATE / rng.uniform(20, 35))
        tick = np.sin(2 * np.pi * f * t[:160]) * np.exp(-t[:160] / 0.004)
        for start in range(int(rng.integers(0, step)), samples - 160, step):
            x[start : start + 160] += tick
    else:  # bell: inharmonic partials, struck
        partials = sum(a * np.sin(2 * np.pi * f * r * t + phi0 * r) for r, a in ((1.0, 1.0), (2.76, 0.5), (5.4, 0.25)) if f * r < 3800)
        if spec.rhythm == "continuous":  # one long ring
            x = partials * np.exp(-t / rng.uniform(1.5, 3.0))
        else:  # strikes every 0.18-0.3 s
            period = rng.uniform(0.18, 0.3)
            x = partials * np.exp(-((t + rng.uniform(0, period)) % period) / 0.05)
    if spec.rhythm == "repeating" and src != "bell":
        x = x * _gate(t, rng)
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.2, 0.8)
    return x.astype(np.float32)


def caption(spec: SoundSpec, rng: np.random.Generator, p_attribute: float = 0.7) -> str:
    """A training caption: a prefix, then pitch and rhythm words (each named with ``p_attribute``), then the source.

    Only training words are used: never a held-out synonym.
    """
    words = []
    if rng.random() < p_attribute:
        words.append(str(rng.choice(PITCH_WORDS[spec.pitch])))
    if rng.random() < p_attribute:
        words.append(str(rng.choice(RHYTHM_WORDS[spec.rhythm])))
    if len(words) == 2 and rng.random() < 0.5:
        words.reverse()
    words.append(str(rng.choice(SOURCE_WORDS[spec.source])))
    prefix = str(rng.choice(PREFIXES))
    text = " ".join([prefix, *words]).strip()
    return text + " sound" if rng.random() < 0.1 else text


def dataset(n_per_spec: int, seed: int, sources: tuple[str, ...] = TRAIN_SOURCES) -> tuple[np.ndarray, list[SoundSpec]]:
    """``n_per_spec`` clips of every spec: audio [N, CLIP_SAMPLES] float32 and the spec of each row."""
    if n_per_spec < 1:
        raise ValueError(f"n_per_spec must be >= 1, got {n_per_spec}")
    rng = np.random.default_rng(seed)
    specs = [s for s in all_specs(sources) for _ in range(n_per_spec)]
    return np.stack([synthesize(s, rng) for s in specs]), specs


# ----------------------------------------------------------------------------- reference features
FEATURE_NAMES = ("log2_centroid", "loudness_variation", "flatness", "fm_depth", "fm_speed")
_N_FFT, _HOP = 512, 128


def features(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Plain spectral measurements of clips, independent of any model.

    Args:
        audio: [T] or [B, T] or [B, 1, T] mono float audio at ``sr``.
        sr: Sample rate in Hz.

    Returns:
        [B, 5] float64, columns :data:`FEATURE_NAMES`: log2 of the power-weighted spectral centroid
        (Hz); std/mean of the frame RMS envelope (0 = steady, ~1 = on/off); mean spectral flatness
        (0 tone .. 1 white noise); std of log2 of the per-frame peak frequency (pitch-modulation
        depth, octaves); mean |frame-to-frame change| of that log2 peak (modulation speed).
        Silent frames (40 dB under the loudest) are left out of the spectral columns.
    """
    x = np.asarray(audio, dtype=np.float64)
    x = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x[None]
    if x.shape[-1] < _N_FFT:
        raise ValueError(f"clips must have at least {_N_FFT} samples, got {x.shape[-1]}")
    frames = np.lib.stride_tricks.sliding_window_view(x, _N_FFT, axis=-1)[:, ::_HOP]  # [B, F, N]
    power = np.abs(np.fft.rfft(frames * np.hanning(_N_FFT), axis=-1)) ** 2  # [B, F, K]
    freqs = np.fft.rfftfreq(_N_FFT, 1 / sr)
    out = np.zeros((x.shape[0], len(FEATURE_NAMES)))
    for b in range(x.shape[0]):
        p = power[b]
        energy = p.sum(-1)
        loud = energy > energy.max() * 1e-4 if energy.max() > 0 else np.ones_like(energy, bool)
        total = p[loud].sum(0)
        centroid = float((total * freqs).sum() / max(total.sum(), 1e-12))
        rms = np.sqrt((frames[b] ** 2).mean(-1))
        flat = np.exp(np.log(p[loud] + 1e-12).mean(-1)) / (p[loud].mean(-1) + 1e-12)
        k = p[loud][:, 1:-1].argmax(-1) + 1  # parabolic interpolation of the peak bin
        a, c, d = (np.log(p[loud][np.arange(len(k)), k + o] + 1e-12) for o in (-1, 0, 1))
        shift = 0.5 * (a - d) / np.where(np.abs(a - 2 * c + d) > 1e-9, a - 2 * c + d, 1e-9)
        peak = np.log2(np.maximum((k + np.clip(shift, -0.5, 0.5)) * sr / _N_FFT, 1.0))
        out[b] = [
            np.log2(max(centroid, 1.0)), rms.std() / max(rms.mean(), 1e-9), float(flat.mean()),
            float(peak.std()), float(np.abs(np.diff(peak)).mean()) if len(peak) > 1 else 0.0,
        ]
    return out


@functools.lru_cache(maxsize=4)
def feature_scale(n_per_spec: int = 4, seed: int = 12345) -> np.ndarray:
    """Std of every feature over the whole world (held-out sources included): [5], to standardise distances.

    Cached and read-only: every distance asks for it, and it synthesises 216 clips.
    """
    audio, _ = dataset(n_per_spec, seed, sources=SOURCES)
    scale = features(audio).std(0) + 1e-6
    scale.setflags(write=False)
    return scale


def feature_distance(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Euclidean distance between feature rows [..., 5] after dividing by ``scale``."""
    return np.linalg.norm((np.asarray(a) - np.asarray(b)) / scale, axis=-1)


@dataclass
class SpecClassifier:
    """Nearest (source, pitch, rhythm) centroid of standardised reference features.

    A plain, model-free reader of what a clip of this world is: fitted on synthesised clips, it
    says which source a generated clip sounds like (``classify``), so "does the token sound like
    a warble" is a count, not an impression.
    """

    specs: list[SoundSpec]
    centroids: np.ndarray  # [n_specs, 5]
    scale: np.ndarray  # [5]

    def classify(self, feats: np.ndarray) -> list[SoundSpec]:
        d = np.linalg.norm((np.asarray(feats)[:, None] - self.centroids[None]) / self.scale, axis=-1)
        return [self.specs[i] for i in d.argmin(1)]

    def share(self, feats: np.ndarray, source: str) -> float:
        """Share of clips (feature rows) read as ``source``."""
        return float(np.mean([s.source == source for s in self.classify(feats)]))


def fit_classifier(audio: np.ndarray, specs: list[SoundSpec]) -> SpecClassifier:
    """Centroids per spec of ``audio`` [N, T] with labels ``specs`` (e.g. from :func:`dataset`)."""
    feats = features(audio)
    labels = sorted(set(specs), key=lambda s: (SOURCES.index(s.source), list(PITCHES).index(s.pitch), RHYTHMS.index(s.rhythm)))
    centroids = np.stack([feats[[i for i, s in enumerate(specs) if s == spec]].mean(0) for spec in labels])
    return SpecClassifier(labels, centroids, feats.std(0) + 1e-6)


# ----------------------------------------------------------------------------- vibrato
# A warble is defined by its vibrato: the pitch swings by about ±8 % (±0.11 octave) 9-13 times a
# second. The five features above blur that into two averages (fm_depth, fm_speed), so a steady
# tone of the right pitch scores close to a warble; this measure looks at the band itself.
VIBRATO_BAND_HZ = (8.0, 14.0)
# A clip "has vibrato" when the pitch track's amplitude in that band exceeds this (octaves). Set
# from world clips only, never from generated ones (see tests/test_toy.py for the rates it gives).
VIBRATO_MIN_OCTAVES = 0.03
_VIB_FFT, _VIB_HOP = 256, 32  # 250 pitch frames a second at 8 kHz: the band sits well below Nyquist


@dataclass(frozen=True)
class Vibrato:
    """Pitch modulation of one clip: amplitude (octaves) of the pitch track in the vibrato band,
    the frequency (Hz) of its strongest component there, and whether it counts as vibrato."""

    depth: float
    rate: float
    present: bool


def vibrato(audio: np.ndarray, sr: int = SAMPLE_RATE) -> list[Vibrato]:
    """The vibrato of clips [T] / [B, T] / [B, 1, T]: a model-free reading of a pitch track.

    The pitch track is the per-frame log2 frequency of the strongest spectral peak (parabolic
    interpolation, 4 ms hop), over frames within 30 dB of the loudest; its amplitude spectrum
    (Hann window, amplitude-normalised) gives the depth at the band's strongest bin.
    """
    x = np.asarray(audio, dtype=np.float64)
    x = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x[None]
    frames = np.lib.stride_tricks.sliding_window_view(x, _VIB_FFT, axis=-1)[:, ::_VIB_HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(_VIB_FFT), axis=-1)) ** 2
    frame_rate = sr / _VIB_HOP
    out = []
    for p in power:
        energy = p.sum(-1)
        loud = energy > energy.max() * 1e-3 if energy.max() > 0 else np.zeros_like(energy, bool)
        if loud.sum() < 16:  # too little sound for a pitch track
            out.append(Vibrato(0.0, 0.0, False))
            continue
        k = p[:, 1:-1].argmax(-1) + 1
        a, c, d = (np.log(p[np.arange(len(k)), k + o] + 1e-12) for o in (-1, 0, 1))
        shift = 0.5 * (a - d) / np.where(np.abs(a - 2 * c + d) > 1e-9, a - 2 * c + d, 1e-9)
        track = np.log2(np.maximum((k + np.clip(shift, -0.5, 0.5)) * sr / _VIB_FFT, 1.0))
        # silent frames take the track's median, so gaps add no modulation of their own
        track = np.where(loud, track, np.median(track[loud]))
        track = track - track.mean()
        window = np.hanning(len(track))
        amplitude = 2 * np.abs(np.fft.rfft(track * window)) / window.sum()
        freqs = np.fft.rfftfreq(len(track), 1 / frame_rate)
        band = (freqs >= VIBRATO_BAND_HZ[0]) & (freqs <= VIBRATO_BAND_HZ[1])
        i = int(np.argmax(np.where(band, amplitude, -1.0)))
        depth = float(amplitude[i])
        out.append(Vibrato(depth, float(freqs[i]), depth >= VIBRATO_MIN_OCTAVES))
    return out
