"""Measurements of the `toy-music` model against its world (:mod:`recap.toy.music`).

Every number is read from generated audio by the world's model-free readers: the instrument
classifier (MFCC statistics), the tempo (``librosa.beat.beat_track``, right within
:data:`~recap.toy.music.TEMPO_TOLERANCE_BPM`) and the register (median pitch). The VAE's
reconstructions of real clips (:func:`rendering_check`) bound what any prompt can reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from recap.toy import music as M

if TYPE_CHECKING:
    from recap.backends.base import AudioBackend

# Instruments whose register and tempo prompts are measured: a struck, a bowed and a blown one.
PROBE_INSTRUMENTS = ("piano", "violin", "flute")


def generate_audio(backend: AudioBackend, prompts: Sequence[str], seeds: Sequence[int], steps: int | None = None,
                   guidance: float | None = None, seconds: float = 2.0) -> dict[str, np.ndarray]:
    """Every prompt's clips [len(seeds), T] (mono, the model's rate), all prompts in one batch."""
    batch = [p for p in prompts for _ in seeds]
    out = backend.generate(batch, list(seeds) * len(prompts), seconds=seconds, steps=steps, guidance=guidance)
    audio = out.audio[:, 0].numpy()
    return {p: audio[i * len(seeds) : (i + 1) * len(seeds)] for i, p in enumerate(prompts)}


def instrument_following(backend: AudioBackend, seeds: Sequence[int], steps: int | None = None,
                         guidance: float | None = None) -> dict[str, float]:
    """Share of "a <instrument> melody" clips the reference classifier reads as that instrument, per
    instrument (the held-out one included: its word was never trained). Chance: 1/7."""
    prompts = {i: f"a {i} melody" for i in M.INSTRUMENTS}
    audio = generate_audio(backend, list(prompts.values()), seeds, steps, guidance)
    classifier = M.reference_classifier()
    return {i: classifier.share(M.timbre(audio[p], backend.sample_rate), i) for i, p in prompts.items()}


def register_following(backend: AudioBackend, seeds: Sequence[int], steps: int | None = None,
                       guidance: float | None = None, instruments: Sequence[str] = PROBE_INSTRUMENTS) -> dict:
    """Share of "a <register> <instrument> melody" clips whose median pitch lies in that register (chance 1/3).

    Returns:
        {"share": {register: share}, "pitch": {register: median MIDI pitch of every clip}}.
    """
    prompts = {(r, i): f"a {r} {i} melody" for r in M.REGISTERS for i in instruments}
    audio = generate_audio(backend, list(prompts.values()), seeds, steps, guidance)
    out: dict = {"share": {}, "pitch": {}}
    for r in M.REGISTERS:
        pitch = np.concatenate([M.median_pitch(audio[prompts[r, i]], backend.sample_rate) for i in instruments])
        out["pitch"][r] = [round(float(p), 1) for p in pitch]
        out["share"][r] = float(np.mean([read == r for read in M.register_of(pitch)]))
    return out


def tempo_following(backend: AudioBackend, seeds: Sequence[int], steps: int | None = None,
                    guidance: float | None = None, instruments: Sequence[str] = PROBE_INSTRUMENTS) -> dict:
    """Share of "a <slow|fast> <instrument> melody" clips whose tempo is within 5 BPM of 70 / 140.

    Returns:
        {"share": {tempo: share}, "bpm": {tempo: every clip's measured BPM}}.
    """
    prompts = {(t, i): f"a {t} {i} melody" for t in M.TEMPOS for i in instruments}
    audio = generate_audio(backend, list(prompts.values()), seeds, steps, guidance)
    out: dict = {"share": {}, "bpm": {}}
    for t, target in M.TEMPOS.items():
        bpm = np.concatenate([M.tempo(audio[prompts[t, i]], backend.sample_rate) for i in instruments])
        out["bpm"][t] = [round(float(b), 1) for b in bpm]
        out["share"][t] = float(np.mean(np.abs(bpm - target) <= M.TEMPO_TOLERANCE_BPM))
    return out


def render(backend: AudioBackend, audio: np.ndarray) -> np.ndarray:
    """What the model's VAE makes of world clips [N, T]: decode(encode(x)), [N, T] at the world's rate."""
    latents = backend.encode_audio(np.asarray(audio, np.float32)[:, None], M.SAMPLE_RATE)
    return backend.decode(latents, seconds=audio.shape[-1] / M.SAMPLE_RATE)[:, 0].numpy()


def rendering_check(backend: AudioBackend, seed: int = 2024, keys: Sequence[str] = ("c",)) -> dict:
    """The readers on real clips (one of every spec in ``keys``, every instrument) vs on the VAE's reconstructions of them.

    Returns:
        {"instrument": {instrument: {"real", "rendered"}}, "register": {"real", "rendered"},
        "tempo": {"real", "rendered"}}: shares read right. What the reconstructions lose, no prompt can make.
    """
    specs = [s for s in M.all_specs(M.INSTRUMENTS) if s.key in keys]
    rng = np.random.default_rng(seed)
    audio = np.stack([M.synthesize(s, rng) for s in specs])
    rendered = render(backend, audio)[:, : audio.shape[-1]]
    classifier = M.reference_classifier()
    out: dict = {"instrument": {}}
    reads = {k: classifier.classify(M.timbre(a)) for k, a in (("real", audio), ("rendered", rendered))}
    for i in M.INSTRUMENTS:
        rows = [n for n, s in enumerate(specs) if s.instrument == i]
        out["instrument"][i] = {k: float(np.mean([r[n] == i for n in rows])) for k, r in reads.items()}
    regs = {k: M.register_of(M.median_pitch(a)) for k, a in (("real", audio), ("rendered", rendered))}
    out["register"] = {k: float(np.mean([r == s.register for r, s in zip(v, specs)])) for k, v in regs.items()}
    # tempo on a third of the clips (beat tracking is the slow reader)
    rows = list(range(0, len(specs), 3))
    bpm = np.array([s.bpm for s in specs])[rows]
    out["tempo"] = {k: float(np.mean(np.abs(M.tempo(a[rows]) - bpm) <= M.TEMPO_TOLERANCE_BPM))
                    for k, a in (("real", audio), ("rendered", rendered))}
    return out


def evaluate(backend: AudioBackend, seeds: Sequence[int], steps: int | None = None, guidance: float | None = None) -> dict:
    """Every measurement of this module, as one JSON-ready dict."""
    return {
        "seeds": list(seeds), "steps": steps or backend.defaults.steps, "guidance": guidance or backend.defaults.guidance,
        "instrument": instrument_following(backend, seeds, steps, guidance),
        "register": register_following(backend, seeds, steps, guidance),
        "tempo": tempo_following(backend, seeds, steps, guidance),
        "rendering": rendering_check(backend),
    }


def markdown(report: dict) -> str:
    """The measurements as model-card lines."""
    seeds = report["seeds"]
    trained = {i: v for i, v in report["instrument"].items() if i not in M.HELD_OUT_INSTRUMENTS}
    held = {i: v for i, v in report["instrument"].items() if i in M.HELD_OUT_INSTRUMENTS}
    probe = ", ".join(PROBE_INSTRUMENTS)
    rend = report["rendering"]
    lines = [
        f"Seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} per prompt, never used in training or tuning), "
        f"{report['steps']} steps, guidance {report['guidance']} (`recap toy eval --world music`):", "",
        "- **Instrument** (\"a <instrument> melody\", share read as that instrument by the reference classifier; "
        "chance 1/7): " + ", ".join(f"{i} {v:.0%}" for i, v in trained.items())
        + f"; mean {np.mean(list(trained.values())):.0%}. Held-out word (never in a caption): "
        + ", ".join(f"{i} {v:.0%}" for i, v in held.items()) + ".",
        f"- **Register** (\"a <low|mid|high> <instrument> melody\" for {probe}; median pitch in that register; "
        "chance 1/3): " + ", ".join(f"{r} {v:.0%}" for r, v in report["register"]["share"].items())
        + "; median pitch (MIDI) per register: "
        + "; ".join(f"{r} {np.median(v):.1f}" for r, v in report["register"]["pitch"].items()) + ".",
        f"- **Tempo** (\"a <slow|fast> <instrument> melody\" for {probe}; beat_track within 5 BPM of 70 / 140): "
        + ", ".join(f"{t} {v:.0%}" for t, v in report["tempo"]["share"].items())
        + "; measured BPM: " + "; ".join(f"{t} {sorted(v)}" for t, v in report["tempo"]["bpm"].items()) + ".",
        "- **The VAE's ceiling** (one real clip of every spec in C major, read right: real -> the VAE's reconstruction): "
        "instrument " + ", ".join(f"{i} {v['real']:.0%} -> {v['rendered']:.0%}" for i, v in rend["instrument"].items())
        + f"; register {rend['register']['real']:.0%} -> {rend['register']['rendered']:.0%}; tempo "
        f"{rend['tempo']['real']:.0%} -> {rend['tempo']['rendered']:.0%}.",
    ]
    followed = [i for i, v in trained.items() if v >= 0.5]
    missed = [i for i in trained if i not in followed]
    tempo_share = report["tempo"]["share"]
    lines += ["", "In short: instrument words are followed for " + (", ".join(followed) or "none")
              + " (at least half the clips), not for " + (", ".join(missed) or "none") + "; register words "
              + ("order the pitch low < mid < high" if _ordered(report["register"]["pitch"]) else "do NOT order the pitch")
              + f"; tempo words {'reach' if min(tempo_share.values()) >= 0.5 else 'do NOT reliably reach'} their BPM "
              + f"(slow {tempo_share['slow']:.0%}, fast {tempo_share['fast']:.0%} within 5 BPM). The held-out "
              + ", ".join(M.HELD_OUT_INSTRUMENTS) + " is not made by its untrained word."]
    return "\n".join(lines)


def _ordered(pitch: dict) -> bool:
    medians = [np.median(pitch[r]) for r in M.REGISTERS]
    return all(a < b for a, b in zip(medians, medians[1:]))


def model_card(config_dict: dict, timings: dict, measured: str = "") -> str:
    """The model card's Markdown: what the music world is, the recipe, how to rebuild it, what it can't do."""
    recipe = "\n".join(f"| `{k}` | {v} |" for k, v in config_dict.items())
    flags = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in config_dict.items() if k != "world")
    programs = ", ".join(f"{i} (GM {p + 1})" for i, p in M.PROGRAMS.items())
    return f"""# toy-music: a Stable Audio-family model of soundfont instruments

**This is a toy.** It was trained from scratch, here, on one CPU thread, in under 45 minutes, on short
phrases the project renders itself (`recap/toy/music.py`) with FluidSynth and Debian's General MIDI
soundfont TimGM6mb: {programs}. A clip is 2.048 s of 16 kHz mono: one note per beat of a scale or an
arpeggio within a fifth, in a register (low / mid / high: roots MIDI {", ".join(map(str, M.REGISTERS.values()))} in C), a tempo
(slow {M.TEMPOS["slow"]} / fast {M.TEMPOS["fast"]} BPM), an articulation (legato / staccato) and a key (C or D major). Its
vocabulary is {len(M.vocabulary())} words; any other word is `<unk>`. Load it with `load_backend("toy-music")` /
`--model toy-music`. It makes nothing but such phrases, and rough ones (see Measured).

Held out of training on purpose: the instrument **{", ".join(M.HELD_OUT_INSTRUMENTS)}** (in the vocabulary, never in a
caption; the VAE and the reference classifier did hear it).

Architecture and objective are `toy`'s (`assets/toy/MODEL_CARD.md`): `AutoencoderOobleck` (hop
{int(np.prod(config_dict["vae_ratios"]))}, {config_dict["vae_hidden"] // 2} latent channels, latent std folded in), `StableAudioDiTModel`,
a small `T5EncoderModel` with a word-level tokenizer (max {M.MAX_TOKENS} tokens), `StableAudioProjectionModel`,
Stable Audio Open's sampler; v-prediction, caption dropout, EMA; fp16 safetensors.

## Rebuild

```
recap toy train --world music --threads 1 --out assets/toy-music {flags}
```

Deterministic for a seed, torch version and thread count up to float nondeterminism of the CPU
kernels, and up to FluidSynth's: a re-render of a clip matches the first within a few thousandths
of full scale (its voices keep a little state between renders), not bit for bit.

Training time: VAE {timings.get("vae_s", "?")} s, DiT + text encoder {timings.get("dit_s", "?")} s, one torch thread on a 2-core
CPU shared with other jobs.

| setting | value |
|---|---|
{recipe}

## What the budget cost

`toy`'s VAE took 12,000 steps to render its world; this one had {config_dict["vae_steps"]} steps on 4x longer clips
at twice the rate, and the DiT {config_dict["dit_steps"]} steps of batch {config_dict["dit_batch"]} on {config_dict["clips_per_spec"]} clips of every
training spec ({config_dict["clips_per_spec"] * len(M.all_specs())} clips). The cost shows in the VAE: its reconstructions of real
clips keep pitch and rhythm better than timbre, and the reference classifier reads most of them as
another instrument (the ceiling below), and they carry a component at the VAE's 62.5 Hz frame rate
(hop 256 at 16 kHz) that a pitch tracker locks onto if allowed below 80 Hz. More VAE steps are the
first thing more CPU would buy.

## Measured
{measured or "(run `recap toy eval --world music --card` to measure)"}
"""
