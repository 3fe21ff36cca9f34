"""The music world: short phrases played by General MIDI instruments, rendered with FluidSynth.

Every clip is rendered on the fly from a :class:`MusicSpec` (instrument x register x tempo x
articulation x key, plus a random phrase shape, velocities and start offset) through FluidSynth
with Debian's General MIDI soundfont (``timgm6mb-soundfont``), so the world needs no data files
and a seed reproduces any clip. The `toy-music` model (``recap toy train --world music``) is
trained on this world. Model-free readers say what a clip is without trusting the model: an
instrument classifier (nearest centroid on MFCC statistics), a tempo reading
(``librosa.beat.beat_track``) and a register reading (median pitch).

Kept out of training on purpose: ``HELD_OUT_INSTRUMENTS`` (the marimba: in the vocabulary, rendered
for the VAE and the classifier, never named in a training caption).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recap.toy import world as W

log = logging.getLogger(__name__)

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
SAMPLE_RATE = 16_000
CLIP_SAMPLES = 32_768  # 2.048 s
MAX_TOKENS = 20

# General MIDI programs (0-based), chosen to sound clearly different from each other.
PROGRAMS = {"piano": 0, "organ": 19, "guitar": 24, "violin": 40, "trumpet": 56, "flute": 73, "marimba": 12}
INSTRUMENTS = tuple(PROGRAMS)
HELD_OUT_INSTRUMENTS = ("marimba",)
TRAIN_INSTRUMENTS = tuple(i for i in INSTRUMENTS if i not in HELD_OUT_INSTRUMENTS)
# MIDI note of the phrase's root per register in C major; a key shifts it (D: +2). Phrases stay
# within a fifth above the root, so roots 15 semitones apart keep the registers' pitches apart.
REGISTERS = {"low": 45, "mid": 60, "high": 75}
TEMPOS = {"slow": 70, "fast": 140}  # BPM: one note per beat
ARTICULATIONS = {"legato": 0.95, "staccato": 0.25}  # share of the beat a note is held
# The key word transposes the register's root: "c" plays on it, "d" two semitones above. They are C
# and D major in the mid register only (low: A and B major, high: E flat and F major).
KEYS = {"c": 0, "d": 2}

# Words a caption may use for each attribute value; the first is the canonical word.
INSTRUMENT_WORDS = {"piano": ("piano",), "organ": ("organ",), "guitar": ("guitar", "nylon guitar"),
                    "violin": ("violin", "fiddle"), "trumpet": ("trumpet",), "flute": ("flute",), "marimba": ("marimba",)}
REGISTER_WORDS = {"low": ("low", "deep"), "mid": ("mid", "middle"), "high": ("high",)}
TEMPO_WORDS = {"slow": ("slow",), "fast": ("fast", "quick")}
ARTICULATION_WORDS = {"legato": ("legato", "smooth"), "staccato": ("staccato", "detached")}
NOUNS = ("melody", "phrase", "tune")
PREFIXES = ("", "a", "the sound of a", "a recording of a", "a short clip of a", "a solo")
SPECIALS = ("<pad>", "</s>", "<unk>")


def vocabulary() -> list[str]:
    """Every word of the world's tokenizer, specials first (pad id 0, eos id 1 as in T5)."""
    groups = [PREFIXES, NOUNS, [w for v in INSTRUMENT_WORDS.values() for w in v]]
    groups += [[w for v in d.values() for w in v] for d in (REGISTER_WORDS, TEMPO_WORDS, ARTICULATION_WORDS)]
    groups += [[f"in {k} major" for k in KEYS], [f"at {b} bpm" for b in TEMPOS.values()], [",", "and", "with", "music"]]
    words: list[str] = []
    for group in groups:
        for phrase in group:
            for w in phrase.split():
                if w not in words:
                    words.append(w)
    return list(SPECIALS) + words


def build_tokenizer(out: Path):
    """A word-level ``tokenizers`` model over :func:`vocabulary`, saved as a transformers tokenizer."""
    return W.save_word_tokenizer(vocabulary(), out, MAX_TOKENS)


# ----------------------------------------------------------------------------- specs and rendering
@dataclass(frozen=True)
class MusicSpec:
    """What one clip is: the attributes a caption can name."""

    instrument: str
    register: str
    tempo: str
    articulation: str
    key: str

    def __post_init__(self) -> None:
        for name, known in (("instrument", PROGRAMS), ("register", REGISTERS), ("tempo", TEMPOS),
                            ("articulation", ARTICULATIONS), ("key", KEYS)):
            if getattr(self, name) not in known:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; known: {', '.join(known)}")

    @property
    def bpm(self) -> int:
        return TEMPOS[self.tempo]


def all_specs(instruments: tuple[str, ...] = TRAIN_INSTRUMENTS) -> list[MusicSpec]:
    return [MusicSpec(i, r, t, a, k) for i in instruments for r in REGISTERS for t in TEMPOS for a in ARTICULATIONS for k in KEYS]


def soundfont_missing() -> str | None:
    """Why this world cannot render here (a sentence), or None when it can."""
    if not SOUNDFONT.is_file():
        return f"the General MIDI soundfont {SOUNDFONT} is missing (Debian package timgm6mb-soundfont)"
    try:
        import fluidsynth  # noqa: F401  (loads libfluidsynth through ctypes)
    except (ImportError, OSError) as err:
        return f"FluidSynth is unavailable ({err}); install pyfluidsynth and Debian's libfluidsynth3"
    return None


_BLOCK = 64  # FluidSynth's internal block (samples)


class _Renderer:
    """One FluidSynth instance with the soundfont loaded; reverb and chorus off (no tails between clips)."""

    def __init__(self) -> None:
        import fluidsynth

        why = soundfont_missing()
        if why is not None:
            raise RuntimeError(why)
        self.fs = fluidsynth.Synth(gain=0.5, samplerate=float(SAMPLE_RATE), **{"synth.reverb.active": 0, "synth.chorus.active": 0})
        self.sfid = self.fs.sfload(str(SOUNDFONT))
        # float output has no dither (the int16 writer's dither would make renders differ in the last bit)
        self._write = fluidsynth._fl.fluid_synth_write_float
        self._write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._write.restype = ctypes.c_int

    def samples(self, n: int) -> np.ndarray:
        """The next ``n`` samples, mono (mean of left and right), float32."""
        left, right = np.zeros(n, np.float32), np.zeros(n, np.float32)
        if n > 0:
            self._write(self.fs.synth, n, left.ctypes.data, 0, 1, right.ctypes.data, 0, 1)
        return 0.5 * (left + right)

    def render(self, program: int, notes: list[tuple[int, int, int, int]], samples: int) -> np.ndarray:
        """``notes`` as (start sample, end sample, MIDI key, velocity), sorted by start, on a fresh synth state."""
        # a reset leaves voices sounding (measured): they are stopped after it
        self.fs.system_reset()
        self.samples(_BLOCK)
        self.fs.all_sounds_off(0)
        self.samples(4 * _BLOCK)
        self.fs.program_select(0, self.sfid, 0, program)
        events = sorted([(s, 1, k, v) for s, _, k, v in notes] + [(e, 0, k, 0) for _, e, k, _ in notes])
        out, now = [], 0
        for at, on, key, velocity in events:
            # FluidSynth applies events at block boundaries: events on them make a render independent
            # of whatever was rendered before it
            at = min(at // _BLOCK * _BLOCK, samples)
            out.append(self.samples(at - now))
            now = at
            if on:
                self.fs.noteon(0, key, velocity)
            else:
                self.fs.noteoff(0, key)
        out.append(self.samples(samples - now))
        self.fs.all_sounds_off(0)
        self.samples(-samples % _BLOCK)  # back on a block boundary
        return np.concatenate(out)


@functools.lru_cache(maxsize=1)
def _renderer() -> _Renderer:
    """The process's one FluidSynth instance (loading the soundfont takes a moment)."""
    return _Renderer()


def phrase(spec: MusicSpec, rng: np.random.Generator, samples: int = CLIP_SAMPLES) -> list[tuple[int, int, int, int]]:
    """The notes of one clip: (start sample, end sample, MIDI key, velocity), one per beat from a random offset.

    The shape is drawn: a scale or an arpeggio, rising from the register's root or falling from
    its fifth, in the spec's key.
    """
    root = REGISTERS[spec.register] + KEYS[spec.key]
    shape = int(rng.integers(4))
    steps = [0, 2, 4, 5, 7, 5, 4, 2] if shape < 2 else [0, 4, 7, 4]
    if shape % 2:  # falling: from the fifth down
        steps = [7 - s for s in steps]
    beat = 60.0 / spec.bpm * SAMPLE_RATE
    start = rng.uniform(0.0, 0.1) * SAMPLE_RATE
    held = ARTICULATIONS[spec.articulation] * beat
    notes = []
    for i in range(int((samples - start) // beat) + 1):
        on = int(start + i * beat)
        if on >= samples:
            break
        notes.append((on, int(on + held), root + steps[i % len(steps)], int(rng.integers(80, 111))))
    return notes


def synthesize(spec: MusicSpec, rng: np.random.Generator, samples: int = CLIP_SAMPLES) -> np.ndarray:
    """One clip of ``spec`` as float32 [samples] at :data:`SAMPLE_RATE`, peak about 0.3-0.8."""
    x = _renderer().render(PROGRAMS[spec.instrument], phrase(spec, rng, samples), samples)
    return (x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.8)).astype(np.float32)


def caption(spec: MusicSpec, rng: np.random.Generator, p_attribute: float = 0.7) -> str:
    """A training caption: a prefix, some of register / tempo / articulation words, the instrument, maybe a noun and the key.

    Each attribute is named with ``p_attribute``; the tempo sometimes as "at <bpm> bpm".
    """
    words = [str(rng.choice(d[getattr(spec, a)])) for d, a in ((REGISTER_WORDS, "register"), (TEMPO_WORDS, "tempo"),
                                                             (ARTICULATION_WORDS, "articulation")) if rng.random() < p_attribute]
    rng.shuffle(words)
    words.append(str(rng.choice(INSTRUMENT_WORDS[spec.instrument])))
    if rng.random() < 0.6:
        words.append(str(rng.choice(NOUNS)))
    if rng.random() < 0.3:
        words.append(f"in {spec.key} major")
    if rng.random() < 0.2:
        words.append(f"at {spec.bpm} bpm")
    return " ".join([str(rng.choice(PREFIXES)), *words]).strip()


def dataset(n_per_spec: int, seed: int, instruments: tuple[str, ...] = TRAIN_INSTRUMENTS) -> tuple[np.ndarray, list[MusicSpec]]:
    """``n_per_spec`` clips of every spec: audio [N, CLIP_SAMPLES] float32 and the spec of each row."""
    if n_per_spec < 1:
        raise ValueError(f"n_per_spec must be >= 1, got {n_per_spec}")
    rng = np.random.default_rng(seed)
    specs = [s for s in all_specs(instruments) for _ in range(n_per_spec)]
    return np.stack([synthesize(s, rng) for s in specs]), specs


# ----------------------------------------------------------------------------- model-free readers
def _as_batch(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    return x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x[None]


def timbre(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """MFCC statistics of clips [T] / [B, T] / [B, 1, T]: [B, 40] (means then stds of 20 MFCCs over
    frames within 40 dB of the loudest)."""
    import librosa

    out = []
    for x in _as_batch(audio):
        m = librosa.feature.mfcc(y=x, sr=sr, n_mfcc=20, n_fft=1024, hop_length=256)
        rms = librosa.feature.rms(y=x, frame_length=1024, hop_length=256)[0][: m.shape[1]]
        loud = rms > rms.max() * 0.01 if rms.max() > 0 else np.ones_like(rms, bool)
        out.append(np.concatenate([m[:, loud].mean(1), m[:, loud].std(1)]))
    return np.stack(out)


@dataclass
class InstrumentClassifier:
    """Nearest (instrument, register) centroid of standardised MFCC statistics, read as the instrument."""

    labels: list[tuple[str, str]]
    centroids: np.ndarray  # [n_labels, 40]
    scale: np.ndarray  # [40]

    def classify(self, feats: np.ndarray) -> list[str]:
        d = np.linalg.norm((np.asarray(feats)[:, None] - self.centroids[None]) / self.scale, axis=-1)
        return [self.labels[i][0] for i in d.argmin(1)]

    def share(self, feats: np.ndarray, instrument: str) -> float:
        """Share of clips (feature rows) read as ``instrument``."""
        return float(np.mean([r == instrument for r in self.classify(feats)]))


def fit_classifier(audio: np.ndarray, specs: list[MusicSpec]) -> InstrumentClassifier:
    """Centroids per (instrument, register) of ``audio`` [N, T] with labels ``specs``."""
    feats = timbre(audio)
    labels = sorted({(s.instrument, s.register) for s in specs}, key=lambda l: (INSTRUMENTS.index(l[0]), list(REGISTERS).index(l[1])))
    centroids = np.stack([feats[[i for i, s in enumerate(specs) if (s.instrument, s.register) == l]].mean(0) for l in labels])
    return InstrumentClassifier(labels, centroids, feats.std(0) + 1e-6)


@functools.lru_cache(maxsize=2)
def reference_classifier(n_per_spec: int = 1, seed: int = 4321) -> InstrumentClassifier:
    """The classifier fitted on a fixed draw of every instrument (held-out one included); cached per process."""
    audio, specs = dataset(n_per_spec, seed, INSTRUMENTS)
    return fit_classifier(audio, specs)


def tempo(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Tempo (BPM) of clips [T] / [B, T] by ``librosa.beat.beat_track`` (hop 256): [B] float."""
    import librosa

    return np.array([float(np.atleast_1d(librosa.beat.beat_track(y=x, sr=sr, hop_length=256)[0])[0]) for x in _as_batch(audio)])


TEMPO_TOLERANCE_BPM = 5.0


def median_pitch(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Median MIDI pitch of clips [T] / [B, T] by ``librosa.yin`` over frames within 20 dB of the loudest: [B].

    The search starts at 80 Hz: the world's lowest note is 110 Hz (MIDI 45), and a VAE with a hop of
    256 samples at 16 kHz leaves a faint 62.5 Hz frame-rate buzz that yin locks onto when allowed (measured).
    """
    return np.array([float(np.median(midi)) for midi in _pitch_track(audio, sr)])


def _pitch_track(audio: np.ndarray, sr: int) -> list[np.ndarray]:
    """Each clip's MIDI pitch per frame (``librosa.yin``, 80-2000 Hz) over frames within 20 dB of its loudest."""
    import librosa

    out = []
    for x in _as_batch(audio):
        f0 = librosa.yin(x, fmin=80.0, fmax=2000.0, sr=sr, frame_length=1024, hop_length=256)
        rms = librosa.feature.rms(y=x, frame_length=1024, hop_length=256)[0][: len(f0)]
        loud = rms > rms.max() * 0.1 if rms.max() > 0 else np.ones_like(rms, bool)
        out.append(librosa.hz_to_midi(f0[: len(rms)][loud]))
    return out


# Every phrase (a scale or an arpeggio within a fifth) uses only the first five degrees of its major scale
PHRASE_DEGREES = (0, 2, 4, 5, 7)


def key_of(audio: np.ndarray, registers: Sequence[str], sr: int = SAMPLE_RATE) -> list[str]:
    """The key word ("c" / "d") whose phrase notes hold most of each clip's pitched frames; "?" on a tie.

    A key here transposes the register's root (:data:`KEYS`), so the notes it allows depend on the
    register: each clip is read against the register it was asked for (``registers``, one per clip).
    """
    out = []
    for midi, register in zip(_pitch_track(audio, sr), registers, strict=True):
        counts = np.bincount(np.round(midi).astype(int) % 12, minlength=12)
        votes = {k: int(counts[[(REGISTERS[register] + shift + d) % 12 for d in PHRASE_DEGREES]].sum())
                 for k, shift in KEYS.items()}
        best = max(votes.values())
        winners = [k for k, v in votes.items() if v == best]
        out.append(winners[0] if len(winners) == 1 else "?")
    return out


def register_of(pitch: np.ndarray) -> list[str]:
    """The register whose phrases' median pitch (root + 0-9 semitones) lies nearest each MIDI pitch."""
    centres = {r: root + 1 + 3.5 for r, root in REGISTERS.items()}  # the keys' mean offset (1) plus a phrase's middle
    return [min(centres, key=lambda r: abs(centres[r] - p)) for p in np.atleast_1d(pitch)]
