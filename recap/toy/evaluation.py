"""Measurements of the `toy` model against its world: prompt steering, rewording vs content, Textual Inversion.

Every number comes from the world's reference features (``toyworld.features``) or from VAE
latents, never from the model's own loss, so it says what the generated audio is like.
``recap toy eval``, the model card and the tests use these same functions.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from typing import Any

import numpy as np
import torch

from recap.toy import world as W
from recap.audio_io import Clip
from recap.backends.base import AudioBackend
from recap.metrics.uncertainty import t_interval

log = logging.getLogger(__name__)

PITCH_PAIR = ("a low hum", "a high beep")
RHYTHM_PAIR = ("a repeating beep", "a continuous beep")
# (prompt, its rewording with trained synonyms, the same words for another source)
# (prompt, a rewording in trained synonyms, one in held-out synonyms, another source)
REWORDINGS = (
    ("a high repeating beep", "a shrill pulsing tone", "a bright intermittent beep", "a high repeating hiss"),
    ("a low continuous hum", "a deep steady hum", "a bass constant drone", "a low continuous clicks"),
    ("a mid repeating siren", "a medium pulsing siren", "a mid intermittent siren", "a mid repeating bell"),
)


def generate_features(
    backend: AudioBackend, prompts: Sequence[str], seeds: Sequence[int], steps: int | None = None,
    guidance: float | None = None, tokens: dict[str, torch.Tensor] | None = None,
) -> dict[str, np.ndarray]:
    """Reference features [len(seeds), 5] of every prompt's clips, all prompts in one batch."""
    audio = generate_audio(backend, prompts, seeds, steps, guidance, tokens)
    return {p: W.features(a, backend.sample_rate) for p, a in audio.items()}


def generate_audio(
    backend: AudioBackend, prompts: Sequence[str], seeds: Sequence[int], steps: int | None = None,
    guidance: float | None = None, tokens: dict[str, torch.Tensor] | None = None, seconds: float = 1.0,
) -> dict[str, np.ndarray]:
    """Every prompt's clips [len(seeds), T] (mono, the model's rate), all prompts in one batch."""
    batch_prompts = [p for p in prompts for _ in seeds]
    out = backend.generate(batch_prompts, list(seeds) * len(prompts), seconds=seconds, steps=steps, guidance=guidance, tokens=tokens)
    audio = out.audio[:, 0].numpy()
    return {p: audio[i * len(seeds) : (i + 1) * len(seeds)] for i, p in enumerate(prompts)}


@dataclass
class Steering:
    """How far two prompts' clips differ in one reference feature, over the same seeds."""

    prompts: tuple[str, str]
    feature: str
    values: tuple[list[float], list[float]]

    @property
    def separated(self) -> bool:
        """Every clip of the first prompt lies on one side of every clip of the second."""
        a, b = self.values
        return min(a) > max(b) or max(a) < min(b)

    @property
    def gap(self) -> float:
        """Distance between the closest clips of the two prompts (negative when they overlap)."""
        a, b = self.values
        return max(min(a) - max(b), min(b) - max(a))


def steering(backend: AudioBackend, seeds: Sequence[int], steps: int | None = None, guidance: float | None = None) -> list[Steering]:
    """Pitch (centroid in Hz) and rhythm (loudness variation) contrasts, generated in one batch."""
    feats = generate_features(backend, PITCH_PAIR + RHYTHM_PAIR, seeds, steps, guidance)
    col = {n: i for i, n in enumerate(W.FEATURE_NAMES)}
    centroid = {p: [float(2 ** v) for v in feats[p][:, col["log2_centroid"]]] for p in PITCH_PAIR}
    loud = {p: [float(v) for v in feats[p][:, col["loudness_variation"]]] for p in RHYTHM_PAIR}
    return [
        Steering(PITCH_PAIR, "centroid_hz", (centroid[PITCH_PAIR[0]], centroid[PITCH_PAIR[1]])),
        Steering(RHYTHM_PAIR, "loudness_variation", (loud[RHYTHM_PAIR[0]], loud[RHYTHM_PAIR[1]])),
    ]


def rewording_cosines(backend: AudioBackend, seeds: Sequence[int], steps: int | None = None,
                      guidance: float | None = None) -> list[dict[str, Any]]:
    """Clip latent cosine (each clip re-encoded; same seed) of each prompt with its rewording in
    trained synonyms, its rewording in held-out synonyms and another source's prompt.

    Returns:
        Per prompt: the texts, and for each comparison its mean over seeds (``cos_<name>``) with a
        t interval over seeds (``ci_<name>``: [low, high], None below 3 seeds).
    """
    prompts = [p for row in REWORDINGS for p in row]
    batch = [p for p in prompts for _ in seeds]
    out = backend.generate(batch, list(seeds) * len(prompts), seconds=1.0, steps=steps, guidance=guidance)
    z = backend.encode_audio(out.audio, backend.sample_rate).flatten(1)
    z = z / z.norm(dim=1, keepdim=True)
    n, width = len(seeds), len(REWORDINGS[0])
    rows = []
    for k, texts in enumerate(REWORDINGS):
        block = z[width * k * n : width * (k + 1) * n].view(width, n, -1)
        row: dict[str, Any] = dict(zip(("prompt", "reworded", "held_out", "other"), texts))
        for j, name in enumerate(("reworded", "held_out", "other"), 1):
            per_seed = (block[0] * block[j]).sum(-1).tolist()
            interval = t_interval(per_seed, unit="seed")
            row[f"cos_{name}"] = interval.estimate
            row[f"ci_{name}"] = None if interval.low is None else [interval.low, interval.high]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- Textual Inversion
@dataclass
class TIProtocol:
    """A Textual Inversion check on a source the model never saw named.

    Attributes:
        spec: What the training and the unseen clips are (one source, pitch band and rhythm).
        n_train / n_unseen: Clips to learn from / to compare against (disjoint draws).
        init_word: The class word the token starts from, and the baseline it must beat.
        prompt: Template of the generated prompt.
        ti: Keyword arguments for ``TIConfig`` (steps, learning_rate, n_vectors, ...).
        seeds: Generation seeds; steps / guidance: generation settings (None = model defaults).
    """

    spec: W.SoundSpec = field(default_factory=lambda: W.SoundSpec("warble", "mid", "continuous"))
    n_train: int = 3
    n_unseen: int = 8
    init_word: str = "siren"
    prompt: str = "a recording of a {}"
    ti: dict = field(default_factory=lambda: {"steps": 100, "learning_rate": 2e-2, "batch_size": 4})
    seeds: tuple[int, ...] = tuple(range(8))
    steps: int | None = None
    guidance: float | None = None
    data_seed: int = 7


@dataclass
class TIResult:
    """How close a token's generated clips come to unseen clips of the source it learned.

    ``*_distance``: mean standardised feature distance to the unseen clips' mean features (all five
    features); ``*_fm_distance`` only the two pitch-modulation ones (depth, speed): what makes a
    warble a warble rather than a beep or a siren of the same pitch.

    ``*_share``: share of clips a :class:`~recap.toy.world.SpecClassifier` fitted on world clips
    reads as the learned source. ``rendered_*`` are the unseen clips passed through the model's
    own VAE (encode -> decode): what the frozen decoder can make of the source, and so the most
    any prompt or token can reach; ``ceiling_distance`` is their distance to the real clips.
    """

    token_distance: float
    init_distance: float
    token_fm_distance: float
    init_fm_distance: float
    token_share: float
    init_share: float
    rendered_share: float
    token_rendered_distance: float
    init_rendered_distance: float
    ceiling_distance: float
    token_features: list[float]
    init_features: list[float]
    target_features: list[float]
    protocol: dict
    losses: list[float]

    @property
    def margin(self) -> float:
        """How much closer the token's clips are than the init word's (> 0: the token learned)."""
        return self.init_distance - self.token_distance


def world_clips(spec: W.SoundSpec, n: int, seed: int) -> list[Clip]:
    rng = np.random.default_rng(seed)
    return [Clip(W.synthesize(spec, rng)[None], W.SAMPLE_RATE, f"{spec.source}-{seed}-{i}") for i in range(n)]


def render(backend: AudioBackend, audio: np.ndarray, sr: int = W.SAMPLE_RATE) -> np.ndarray:
    """What the model's VAE makes of world clips [N, T] at ``sr``: decode(encode(x)), [N, T'] at the model's rate."""
    latents = backend.encode_audio(np.asarray(audio, np.float32)[:, None], sr)
    return backend.decode(latents, seconds=audio.shape[-1] / sr)[:, 0].numpy()


@functools.lru_cache(maxsize=4)
def world_classifier(n_per_spec: int = 6, seed: int = 4321) -> W.SpecClassifier:
    """The reference classifier, fitted on clips of every source (held-out ones included).

    Cached: a sweep asks for the same one dozens of times, and fitting synthesises 324 clips.
    """
    audio, specs = W.dataset(n_per_spec, seed, sources=W.SOURCES)
    classifier = W.fit_classifier(audio, specs)
    classifier.centroids.setflags(write=False)  # shared between callers
    classifier.scale.setflags(write=False)
    return classifier


def textual_inversion_check(backend: AudioBackend, protocol: TIProtocol, placeholder: str = "<toy-x>") -> TIResult:
    """Trains a token on ``n_train`` clips and compares its clips with the init word's, by reference features."""
    from recap.tokens.training import TIConfig, train_token

    train = world_clips(protocol.spec, protocol.n_train, protocol.data_seed)
    unseen = world_clips(protocol.spec, protocol.n_unseen, protocol.data_seed + 1000)
    config = TIConfig(placeholder=placeholder, init="word", init_word=protocol.init_word, seconds=1.0,
                      random_crop=False, augment_copies=1, checkpoint_every=0, seed=protocol.data_seed, **protocol.ti)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        token = train_token(backend, train, config, checkpoint_dir=Path(tmp))
    scale = W.feature_scale()
    unseen_audio = np.stack([c.audio[0] for c in unseen])
    target = W.features(unseen_audio).mean(0)
    rendered = W.features(render(backend, unseen_audio))
    prompts = [protocol.prompt.format(placeholder), protocol.prompt.format(protocol.init_word)]
    feats = generate_features(backend, prompts, protocol.seeds, protocol.steps, protocol.guidance, tokens=token.as_tokens())
    dist = {p: W.feature_distance(feats[p], target, scale) for p in prompts}
    rendered_dist = {p: W.feature_distance(feats[p], rendered.mean(0), scale) for p in prompts}
    fm = slice(3, 5)
    fm_dist = {p: W.feature_distance(feats[p][:, fm], target[fm], scale[fm]) for p in prompts}
    classifier = world_classifier()
    source = protocol.spec.source
    return TIResult(
        token_distance=float(dist[prompts[0]].mean()), init_distance=float(dist[prompts[1]].mean()),
        token_fm_distance=float(fm_dist[prompts[0]].mean()), init_fm_distance=float(fm_dist[prompts[1]].mean()),
        token_share=classifier.share(feats[prompts[0]], source), init_share=classifier.share(feats[prompts[1]], source),
        rendered_share=classifier.share(rendered, source),
        token_rendered_distance=float(rendered_dist[prompts[0]].mean()),
        init_rendered_distance=float(rendered_dist[prompts[1]].mean()),
        ceiling_distance=float(W.feature_distance(rendered, target, scale).mean()),
        token_features=feats[prompts[0]].mean(0).round(4).tolist(), init_features=feats[prompts[1]].mean(0).round(4).tolist(),
        target_features=target.round(4).tolist(), protocol=asdict(protocol), losses=token.meta["losses"],
    )


# ----------------------------------------------------------------------------- TI against its controls
# Another concept of the warble's pitch band and rhythm: a token that learned only "a mid steady
# tone" scores as well as one trained on this, so the warble token must beat it.
CONTROL_SPEC = W.SoundSpec("beep", "mid", "continuous")
TI_MEASURES = ("distance", "fm_distance", "vibrato_share", "vibrato_depth", "warble_share")


def _measure(audio: np.ndarray, target: np.ndarray, scale: np.ndarray, classifier: W.SpecClassifier,
             source: str) -> dict[str, float]:
    feats = W.features(audio)
    vib = W.vibrato(audio)
    fm = slice(3, 5)
    return {"distance": float(W.feature_distance(feats, target, scale).mean()),
            "fm_distance": float(W.feature_distance(feats[:, fm], target[fm], scale[fm]).mean()),
            "vibrato_share": float(np.mean([v.present for v in vib])),
            "vibrato_depth": float(np.median([v.depth for v in vib])),
            "warble_share": classifier.share(feats, source)}


def ti_controls(backend: AudioBackend, draws: Sequence[int], seeds: Sequence[int], ti: dict | None = None,
                steps: int | None = None, guidance: float | None = None, n_train: int = 3, n_unseen: int = 8,
                init_word: str = "siren", on_draw: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The warble token against everything that could explain its result, per clip draw.

    For each draw (an independent set of training and unseen clips, and so an independent
    token) it trains the warble token and a control token on :data:`CONTROL_SPEC` (same init
    word, same recipe), generates every condition on ``seeds`` and measures each against the
    draw's unseen warbles: feature distance (all five features), pitch-modulation distance,
    vibrato (share with vibrato, median depth; :func:`recap.toy.world.vibrato`) and the share the
    reference classifier reads as a warble. The conditions: the token, the control token, plain
    words naming the warble's pitch and rhythm ("a mid continuous beep"), the untrained word
    ("a mid continuous warble": in the vocabulary, never in a training caption), the init word,
    and two references that involve no prompt: the unseen warbles through the model's VAE (the
    ceiling any prompt can reach) and the unseen warbles themselves.

    Intervals are over draws (the independent unit: one token per draw), none below 3 draws.
    ``margin`` is, per draw, the strongest control's distance minus the token's (> 0: the
    token is closer than every control).
    """
    from recap.tokens.training import TIConfig, train_token
    import tempfile
    from pathlib import Path

    ti = {"steps": 100, "learning_rate": 2e-2, "batch_size": 4, **(ti or {})}
    spec = W.SoundSpec("warble", "mid", "continuous")
    scale, classifier = W.feature_scale(), world_classifier()
    words = {"plain words": f"a {spec.pitch} {spec.rhythm} beep", "untrained word": f"a {spec.pitch} {spec.rhythm} warble",
             "init word": f"a recording of a {init_word}"}
    per_draw: dict[str, dict[str, list[float]]] = {}
    for draw in draws:
        unseen = np.stack([c.audio[0] for c in world_clips(spec, n_unseen, draw + 1000)])
        target = W.features(unseen).mean(0)
        tokens = {}
        for name, placeholder, trained_on in (("token", "<toy-x>", spec), ("control token", "<toy-c>", CONTROL_SPEC)):
            config = TIConfig(placeholder=placeholder, init="word", init_word=init_word, seconds=1.0, random_crop=False,
                              augment_copies=1, checkpoint_every=0, seed=draw, **ti)
            with tempfile.TemporaryDirectory() as tmp:
                token = train_token(backend, world_clips(trained_on, n_train, draw), config, checkpoint_dir=Path(tmp))
            tokens.update(token.as_tokens())
        prompts = {"token": "a recording of a <toy-x>", "control token": "a recording of a <toy-c>", **words}
        audio = generate_audio(backend, list(prompts.values()), seeds, steps, guidance, tokens=tokens)
        clips = {name: audio[p] for name, p in prompts.items()}
        clips["VAE ceiling"] = render(backend, unseen)
        clips["real warbles"] = unseen
        for name, a in clips.items():
            for measure, value in _measure(a, target, scale, classifier, spec.source).items():
                per_draw.setdefault(name, {}).setdefault(measure, []).append(value)
        if on_draw is not None:
            on_draw(draw)
    controls = ["control token", "plain words", "untrained word", "init word"]
    margins = [min(per_draw[c]["distance"][i] for c in controls) - per_draw["token"]["distance"][i]
               for i in range(len(draws))]

    def interval(values: list[float]) -> dict[str, Any]:
        iv = t_interval(values, unit="draw")
        return {"mean": iv.estimate, "low": iv.low, "high": iv.high, "n": len(values), "values": values}

    return {"draws": list(draws), "seeds": list(seeds), "ti": ti, "init_word": init_word, "n_train": n_train,
            "n_unseen": n_unseen, "control_spec": asdict(CONTROL_SPEC), "prompts": {**prompts},
            "conditions": {name: {m: interval(v) for m, v in measures.items()} for name, measures in per_draw.items()},
            "margin": interval(margins)}


def controls_table(report: dict[str, Any], measures: Sequence[str]) -> list[str]:
    """A controls report's table rows (markdown): every condition, every measure, mean [95% over draws]."""
    def cell(m: dict, top: float | None) -> str:
        # every measure is >= 0 and a share <= 1: a t interval over 3 draws may reach past them,
        # so its ends are cut at the possible range
        if m["low"] is None:
            return f"{m['mean']:.2f}"
        high = m["high"] if top is None else min(m["high"], top)
        return f"{m['mean']:.2f} [{max(m['low'], 0.0):.2f}, {high:.2f}]"

    lines = ["| condition | " + " | ".join(measures) + " |", "|" + "---|" * (len(measures) + 1)]
    for name, values in report["conditions"].items():
        prompt = report["prompts"].get(name)
        label = f"{name} (`{prompt}`)" if prompt else name
        lines.append(f"| {label} | " + " | ".join(cell(values[m], 1.0 if m.endswith("share") else None)
                                                  for m in measures) + " |")
    return lines


def interval_text(m: dict[str, Any]) -> str:
    """"mean, 95% interval [low, high]" of an interval dict (just the mean below 3 values)."""
    return f"{m['mean']:.2f}" + ("" if m["low"] is None else f", 95% interval [{m['low']:.2f}, {m['high']:.2f}]")


def ti_controls_markdown(report: dict[str, Any]) -> str:
    """The controls table for the model card: every condition, every measure, mean [95% over draws]."""
    lines = controls_table(report, TI_MEASURES)
    m = report["margin"]
    lines.append("")
    lines.append(f"Margin (strongest control's distance minus the token's, per draw; > 0 = the token is closer): "
                 f"{interval_text(m)} over {m['n']} draws; seeds {report['seeds'][0]}-{report['seeds'][-1]}.")
    lines.append("")
    lines.append(ti_controls_verdict(report))
    return "\n".join(lines)


def ti_controls_verdict(report: dict[str, Any]) -> str:
    """What the controls table says about the token, in one sentence computed from it."""
    c, m = report["conditions"], report["margin"]
    token, init = c["token"], c["init word"]
    controls = ["control token", "plain words", "untrained word"]
    best = min(controls, key=lambda k: c[k]["distance"]["mean"])
    if m["low"] is not None and m["low"] > 0:
        verdict = "The token's clips are closer to the unseen warbles than every control's"
    elif m["high"] is not None and m["high"] < 0:
        verdict = f"The token does **not** beat its controls: the {best}'s clips land closer than the token's"
    else:
        verdict = f"The token does **not** clearly beat its controls (the margin's interval spans 0; the {best}'s clips land closest"
    close = f"{c[best]['distance']['mean']:.2f} vs {token['distance']['mean']:.2f}"
    verdict = f"{verdict}, {close})" if verdict.endswith("closest") else f"{verdict} ({close})"
    return (f"{verdict}, although it is far "
            f"closer than its init word ({init['distance']['mean']:.2f}). The warble's defining vibrato is in "
            f"{token['vibrato_share']['mean']:.0%} of the token's clips (depth {token['vibrato_depth']['mean']:.3f} "
            f"octave) against {c['real warbles']['vibrato_share']['mean']:.0%} of real warbles "
            f"({c['real warbles']['vibrato_depth']['mean']:.3f}) and {c['VAE ceiling']['vibrato_share']['mean']:.0%} of "
            "their VAE renderings: what the token reproduces is the warble's pitch band and steadiness, which plain "
            "words give as well.")


def prompt_following(backend: AudioBackend, seeds: Sequence[int], steps: int | None = None,
                     guidance: float | None = None) -> dict[str, float]:
    """Share of generated clips whose source / pitch / rhythm the reference classifier reads as the prompt's.

    One prompt "a {pitch} {rhythm} {source}" per trained (source, pitch, rhythm), every seed, one
    batch. Chance is 1/8, 1/3 and 1/2; the VAE's reconstructions bound the source column (see
    :func:`rendering_check`).
    """
    specs = W.all_specs()
    prompts = [f"a {s.pitch} {s.rhythm} {s.source}" for s in specs]
    feats = generate_features(backend, prompts, seeds, steps, guidance)
    classifier = world_classifier()
    hits = {"source": [], "pitch": [], "rhythm": []}
    for spec, prompt in zip(specs, prompts):
        for read in classifier.classify(feats[prompt]):
            for attribute, values in hits.items():
                values.append(getattr(read, attribute) == getattr(spec, attribute))
    return {attribute: float(np.mean(values)) for attribute, values in hits.items()}


def rendering_check(backend: AudioBackend, n_per_spec: int = 4, seed: int = 2024) -> dict:
    """What the model's VAE keeps of each source: the reference classifier on real clips vs on their renderings.

    Returns:
        {"sources": {source: {"real": share read as the source, "rendered": the same for
        decode(encode(x))}}, "warble_fm_speed": (real, rendered), "steady_high_beep_loudness_variation":
        (real, rendered)}. A source the renderings lose is one no prompt and no token can make.
    """
    audio, specs = W.dataset(n_per_spec, seed, sources=W.SOURCES)
    classifier = world_classifier()
    real = W.features(audio)
    rendered = W.features(render(backend, audio))
    read_real, read_rendered = classifier.classify(real), classifier.classify(rendered)
    out: dict = {"sources": {}}
    for source in W.SOURCES:
        rows = [i for i, s in enumerate(specs) if s.source == source]
        out["sources"][source] = {
            "real": float(np.mean([read_real[i].source == source for i in rows])),
            "rendered": float(np.mean([read_rendered[i].source == source for i in rows])),
        }
    col = {n: i for i, n in enumerate(W.FEATURE_NAMES)}
    warble = [i for i, s in enumerate(specs) if s.source == "warble" and s.rhythm == "continuous"]
    beep = [i for i, s in enumerate(specs) if s == W.SoundSpec("beep", "high", "continuous")]
    out["warble_fm_speed"] = (float(real[warble, col["fm_speed"]].mean()), float(rendered[warble, col["fm_speed"]].mean()))
    out["steady_high_beep_loudness_variation"] = (
        float(real[beep, col["loudness_variation"]].mean()), float(rendered[beep, col["loudness_variation"]].mean()))
    return out


def rendering_markdown(check: dict) -> str:
    """The rendering check as model-card lines."""
    shares = ", ".join(f"{src} {v['real']:.0%} -> {v['rendered']:.0%}" for src, v in check["sources"].items())
    fm, loud = check["warble_fm_speed"], check["steady_high_beep_loudness_variation"]
    return (f"- Source read by the reference classifier, real clips -> the VAE's reconstructions of them: {shares}.\n"
            f"- Warble pitch-modulation speed, real {fm[0]:.3f} -> reconstructed {fm[1]:.3f}; loudness variation of "
            f"steady high beeps, real {loud[0]:.3f} -> reconstructed {loud[1]:.3f}.")


# ----------------------------------------------------------------------------- what moves the needle
@dataclass(frozen=True)
class SweepSetting:
    """One row of a Textual Inversion sweep: changes to :class:`TIProtocol` (``ti`` merges into its dict)."""

    name: str
    changes: dict = field(default_factory=dict)


# One knob at a time from the protocol's defaults: the levers the TI literature names.
SWEEP = (
    SweepSetting("defaults: init 'siren', 1 vector, lr 0.02, 100 steps, CFG 4"),
    SweepSetting("init 'beep'", {"init_word": "beep"}),
    SweepSetting("init 'chirp'", {"init_word": "chirp"}),
    SweepSetting("init 'hum'", {"init_word": "hum"}),
    SweepSetting("init 'warble' (in the vocabulary, never trained)", {"init_word": "warble"}),
    SweepSetting("2 vectors", {"ti": {"n_vectors": 2}}),
    SweepSetting("4 vectors", {"ti": {"n_vectors": 4}}),
    SweepSetting("400 steps", {"ti": {"steps": 400}}),
    SweepSetting("lr 0.005", {"ti": {"learning_rate": 5e-3}}),
    SweepSetting("lr 0.05", {"ti": {"learning_rate": 5e-2}}),
    SweepSetting("pull toward init, weight 0.1", {"ti": {"init_weight": 0.1}}),
    SweepSetting("generate with CFG 1 (none)", {"guidance": 1.0}),
    SweepSetting("generate with CFG 7", {"guidance": 7.0}),
    SweepSetting("generate '{}' alone", {"prompt": "{}"}),
    SweepSetting("generate 'a mid continuous {}'", {"prompt": "a mid continuous {}"}),
    # the two single changes that helped most, together
    SweepSetting("2 vectors and 400 steps", {"ti": {"n_vectors": 2, "steps": 400}}),
)
SWEEP_COLUMNS = ("token_distance", "init_distance", "token_rendered_distance", "token_fm_distance", "token_share", "init_share")


def sweep_protocol(setting: SweepSetting, data_seed: int) -> TIProtocol:
    base = TIProtocol(data_seed=data_seed)
    changes = dict(setting.changes)
    return replace(base, ti={**base.ti, **changes.pop("ti", {})}, **changes)


def ti_sweep(
    backend: AudioBackend, settings: Sequence[SweepSetting] = SWEEP, data_seeds: Sequence[int] = (7, 8, 9, 10),
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Runs :func:`textual_inversion_check` for every setting and training-clip draw; means per setting.

    Returns:
        {"rows": [{"setting": name, column: mean over draws, ...}], "rendered_share", "ceiling_distance",
        "data_seeds"}: the last two describe the VAE's renderings of the unseen clips (the same for every row).
    """
    rows, ceiling, rendered = [], [], []
    total = len(settings) * len(data_seeds)
    for i, setting in enumerate(settings):
        results = []
        for j, seed in enumerate(data_seeds):
            if progress is not None:
                progress(i * len(data_seeds) + j, total, setting.name)
            results.append(textual_inversion_check(backend, sweep_protocol(setting, seed)))
        rows.append({"setting": setting.name, **{c: float(np.mean([getattr(r, c) for r in results])) for c in SWEEP_COLUMNS}})
        ceiling += [r.ceiling_distance for r in results]
        rendered += [r.rendered_share for r in results]
    if progress is not None:
        progress(total, total, "done")
    return {"rows": rows, "rendered_share": float(np.mean(rendered)), "ceiling_distance": float(np.mean(ceiling)),
            "data_seeds": list(data_seeds)}


def sweep_markdown(sweep: dict) -> str:
    """The sweep as the table the model card links to."""
    head = ("| setting | distance to unseen warbles: token | init word | token to the VAE's renderings | "
            "pitch-modulation distance | read as warble: token | init word |\n|---|---|---|---|---|---|---|")
    lines = [f"| {r['setting']} | {r['token_distance']:.3f} | {r['init_distance']:.3f} | {r['token_rendered_distance']:.3f} | "
             f"{r['token_fm_distance']:.3f} | {r['token_share']:.0%} | {r['init_share']:.0%} |" for r in sweep["rows"]]
    return "\n".join([head, *lines])


# ----------------------------------------------------------------------------- model card
def model_card(config_dict: dict, timings: dict, measured: str = "", rendering: str = "") -> str:
    """The model card's Markdown: what the toy world is, the recipe, how to rebuild it, what it can't do."""
    recipe = "\n".join(f"| `{k}` | {v} |" for k, v in config_dict.items())
    flags = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in config_dict.items())
    held = ", ".join(f"{k} -> '{v}'" for k, v in W.HELD_OUT_SYNONYMS.items())
    return f"""# toy: a Stable Audio-family model of a synthetic sound world

**This is a toy.** It was trained from scratch, here, on sounds the project synthesises itself
(`recap/toy/world.py`). It makes short (up to 1.024 s) 8 kHz mono clips of {len(W.TRAIN_SOURCES)} synthetic
sources -- {", ".join(W.TRAIN_SOURCES)} -- in three pitch bands (low / mid / high) and two rhythms
(continuous / repeating). It cannot make real-world sounds, speech or music, and its vocabulary is
{len(W.vocabulary())} words; any other word is `<unk>`. It exists so that the workbench has an offline model that
really follows prompts, and so that methods (rewording, Textual Inversion) can be verified for real.

Architecture: the diffusers `StableAudioPipeline` components -- `AutoencoderOobleck` (1 channel,
hop {int(np.prod(config_dict["vae_ratios"]))}, {config_dict["vae_hidden"] // 2} latent channels, latent std folded into the
weights because the pipeline applies no latent scaling), `StableAudioDiTModel`, `T5EncoderModel`
with a word-level tokenizer (max {W.MAX_TOKENS} tokens), `StableAudioProjectionModel` and Stable Audio
Open's `CosineDPMSolverMultistepScheduler` settings. Weights are stored as fp16 safetensors and
loaded as fp32 on the CPU. Load it with `load_backend("toy")` / `--model toy`.

Held out of training on purpose: the source **{", ".join(W.HELD_OUT_SOURCES)}** (never in a caption; the VAE
did hear it), and the synonyms {held} (in the vocabulary, never in a caption).

## Rebuild

```
recap toy train --out assets/toy {flags}
```

Training is deterministic for a given seed, torch version and thread count up to float
nondeterminism of the CPU kernels. Stage 1 trains the VAE on freshly synthesised crops with a
multi-resolution STFT + L1 loss on the posterior mean (a plain autoencoder; the latent
std is folded in afterwards); stage 2 encodes {config_dict["clips_per_spec"]} clips of every
(source, pitch, rhythm) once and trains the DiT, the T5 encoder and the projection jointly with
v-prediction on t ~ U[0,1], alpha = cos(t pi/2), sigma = sin(t pi/2), {int(config_dict["caption_dropout"] * 100)} % caption dropout
(the whole cross-attention sequence zeroed, as the pipeline's unconditional branch does), AdamW,
EMA {config_dict["ema"]} (the EMA weights are shipped).

Training time: VAE {timings.get("vae_s", "?")} s, DiT + text encoder {timings.get("dit_s", "?")} s, on {timings.get("hardware", "a 2-core CPU shared with other jobs")}.

| setting | value |
|---|---|
{recipe}

## Known limits

The VAE is the model's ear and voice: anything its decoder cannot make, no prompt and no Textual
Inversion token can make either. At this size and CPU budget it keeps pitch and rhythm well and
source identity only in part, and it renders the warble's fast (9-13 Hz) vibrato in most but not
all clips. Measured by
`recap toy eval` (reference classifier of `recap/toy/world.py`, 4 clips of every source x pitch x
rhythm):

{rendering or "(run `recap toy eval --card` to measure)"}

The reconstructions of unseen warbles are the ceiling for Textual Inversion on the held-out
warble: see `TI_SWEEP.md` (`recap toy ti-sweep --card`) for every setting tried against it.

## Measured
{measured or "(run `recap toy eval` to measure)"}
"""
