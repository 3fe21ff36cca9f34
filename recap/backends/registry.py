"""The one model registry: every model recap knows, what a user must know about it, and where it comes from.

Pure standard library: the web app lists models, picks its start model and sizes its sliders
from here before anything heavy is imported (torch and diffusers take seconds).
:func:`recap.backends.loading.load_backend` turns a spec into a loaded backend.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAO_ID = "stabilityai/stable-audio-open-1.0"
SAO_URL = f"https://huggingface.co/{SAO_ID}"
# Where the `toy` model's weights ship (``recap toy train`` writes them).
TOY_DIR = Path(__file__).resolve().parents[2] / "assets" / "toy"
# Where the `toy-music` model's weights ship (``recap toy train --world music`` writes them).
TOY_MUSIC_DIR = Path(__file__).resolve().parents[2] / "assets" / "toy-music"

# Stable Audio Open 1.0 denoises a fixed window: "sample_size": 2097152 samples at "sample_rate":
# 44100 in its model_config.json (stable-audio-tools), i.e. diffusers' DiT sample_size of 1024
# latent frames times the Oobleck VAE's hop of 2*4*4*8*8 = 2048 samples.
SAO_MAX_SECONDS = 2_097_152 / 44_100  # 47.55 s
# AudioLDM's UNet is convolutional, so memory, not the architecture, limits a clip; recap allows
# three of its 10.24 s training clips (1024 mel frames at hop 160, 16 kHz).
AUDIOLDM_MAX_SECONDS = 3 * 1024 * 160 / 16_000  # 30.72 s
# Unknown AudioLDM hub ids are accepted by name; the pattern keeps markup and paths out.
_AUDIOLDM_ID = re.compile(r"cvssp/audioldm[\w.-]{0,60}")
_AUDIOLDM_LICENCE = "CC BY-NC-SA 4.0"
# Stable Audio 3 Medium: variable length up to 380 s (Stability-AI/stable-audio-3's model table; its
# duration conditioning saturates at 384 s). Only the frames a clip needs are denoised.
SA3_ID = "stabilityai/stable-audio-3-medium"
SA3_BASE_ID = "stabilityai/stable-audio-3-medium-base"
SA3_MAX_SECONDS = 380.0
_SA3_LICENCE = "Stability AI Community License (gated: accept it on the model page; the text encoder is T5Gemma, under Gemma's terms)"
# Stability publishes SA3 in its own format only: diffusers' script converts it to a local folder.
SA3_CONVERT = ("convert it with diffusers' scripts/convert_stable_audio_3_to_diffusers.py --checkpoint_path {model_id} "
               "--text_encoder_repo google/t5gemma-b-b-ul2 --output_dir $RECAP_HOME/models/{model_id} (see the README)")
# family -> the backend class that runs it, as "module:Class" (imported on first use)
_BACKENDS = {
    "stable-audio": "recap.backends.stable_audio:StableAudioBackend",
    "audioldm": "recap.backends.audioldm:AudioLDMBackend",
    "stable-audio-3": "recap.backends.stable_audio3:StableAudio3Backend",
}


@dataclass(frozen=True)
class ModelDefaults:
    """The model's own defaults for generation settings."""

    seconds: float
    steps: int
    guidance: float
    negative_prompt: str | None = None


# diffusers' documented example settings for Stable Audio Open 1.0.
SAO_DEFAULTS = ModelDefaults(seconds=10.0, steps=100, guidance=7.0)
# diffusers' AudioLDM defaults (num_inference_steps=10, guidance_scale=2.5); 5 s is a common length.
AUDIOLDM_DEFAULTS = ModelDefaults(seconds=5.0, steps=10, guidance=2.5)
# StableAudio3Pipeline's defaults: 10 s; the distilled checkpoint is made for 8 steps and has no CFG
# (guidance 1 is the only value its backend accepts).
SA3_DEFAULTS = ModelDefaults(seconds=10.0, steps=8, guidance=1.0)
# The base (rectified-flow) checkpoint: the pipeline's 100 Euler steps; CFG 7 is Stability's
# suggested value for its RF models (stable-audio-3 docs/workflows/inference.md).
SA3_BASE_DEFAULTS = ModelDefaults(seconds=10.0, steps=100, guidance=7.0)


# Prompts of the kind the open-vocabulary models were trained on (AudioCaps / Freesound style).
_OPEN_EXAMPLES = ("rain on a tin roof", "a dog barking in the distance", "footsteps on gravel",
                  "a hammer hitting a wooden surface", "an old telephone ringing in an empty room")


@dataclass(frozen=True)
class BackendSpec:
    """One named model: what it is, what a user must know, and how to build it.

    Attributes:
        name: What users type (``--model``) and the UI's dropdown value.
        model_id: Hub id (or a local id for models built here).
        family: "stable-audio", "audioldm" or "stable-audio-3".
        pipeline: The diffusers pipeline class name that loads it.
        label: How the UI's model picker shows it.
        max_seconds: Longest clip it makes (the loaded backend's ``max_seconds``).
        defaults: Generation settings when none are given.
        sample_rate: Hz of the audio it makes (the loaded backend's ``sample_rate``; known before loading).
        random_weights: Built from configs with random weights: its audio is noise.
        trained_here: Trained by ``recap toy train`` on the synthetic sounds of
            :mod:`recap.toy.world` (so that world's features describe its clips), with its weights
            shipped in :data:`TOY_DIR` (`toy-music`: on :mod:`recap.toy.music`, in :data:`TOY_MUSIC_DIR`).
        gated: Needs an accepted licence and an HF token.
        licence: Licence to show users.
        description: One line for listings.
        caveat: What a listener must know about its audio (shown above the UI's tabs).
        builder: ``"module:function"`` that builds the pipeline here (no download) instead of
            ``from_pretrained`` on the hub id; imported only when the model loads.
        examples: Prompts it follows, for the UI to offer (the first is the placeholder).
        closed_vocabulary: Its text encoder knows only a fixed list of words and reads every
            other word as <unk>: rewordings must keep to its words.
        world: The toy world it was trained on ("toy": :mod:`recap.toy.world`, "music":
            :mod:`recap.toy.music`), whose model-free features describe its clips; None otherwise.
        fixed_guidance: The guidance scale built into its weights (a guidance-distilled model), the
            only value its backend accepts; None when classifier-free guidance can be varied.
    """

    name: str
    model_id: str
    family: str
    pipeline: str
    label: str
    max_seconds: float
    defaults: ModelDefaults
    sample_rate: int
    random_weights: bool = False
    trained_here: bool = False
    gated: bool = False
    licence: str = ""
    description: str = ""
    caveat: str = ""
    builder: str | None = None
    examples: tuple[str, ...] = _OPEN_EXAMPLES
    closed_vocabulary: bool = False
    world: str | None = None
    fixed_guidance: float | None = None

    @property
    def negative_prompts(self) -> bool:
        """Whether a negative prompt means anything: it replaces the unconditional branch of CFG, so only with CFG."""
        return self.fixed_guidance is None

    @property
    def builds_offline(self) -> bool:
        """Built or shipped here: nothing to download."""
        return self.builder is not None

    @property
    def backend_class(self) -> type:
        """The :class:`recap.backends.base.AudioBackend` subclass of its family (imports torch)."""
        return _resolve(_BACKENDS[self.family])

    def build(self) -> Any:
        """The pipeline from :attr:`builder` (imports the model libraries)."""
        if self.builder is None:
            raise ValueError(f"{self.name} has no builder; it loads from the Hub as {self.model_id}")
        return _resolve(self.builder)()


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _audioldm(model_id: str, label: str, description: str) -> BackendSpec:
    return BackendSpec(model_id, model_id, "audioldm", "AudioLDMPipeline", label, AUDIOLDM_MAX_SECONDS,
                       AUDIOLDM_DEFAULTS, 16_000, licence=_AUDIOLDM_LICENCE, description=description)


# In the order the UI's picker and `recap models` list them.
_SPECS: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec(
        "toy", "recap/toy-stable-audio", "stable-audio", "StableAudioPipeline",
        label="toy: trained here on synthetic sounds (8 kHz, up to 1 s)",
        # 32 latent frames x hop 256 at 8 kHz (assets/toy/*/config.json)
        max_seconds=32 * 256 / 8_000,
        # 25 steps and guidance 4 are where its steering is clear (MODEL_CARD.md)
        defaults=ModelDefaults(seconds=1.0, steps=25, guidance=4.0), sample_rate=8_000,
        trained_here=True, licence="built here (see assets/toy/MODEL_CARD.md)",
        description="TOY WORLD: a small Stable Audio-family model trained here on synthetic beeps, buzzes, hums, "
        "chirps, sirens, clicks, hisses and bells (8 kHz mono, up to 1 s); follows pitch (low/mid/high) and "
        "rhythm (continuous/repeating) words, and cannot make real-world sounds, speech or music",
        caveat="`toy` is a small model trained here on a synthetic sound world (beeps, buzzes, hums, chirps, "
        "sirens, clicks, hisses and bells; 8 kHz mono, up to 1 s). It follows pitch and rhythm words, and "
        "cannot make real-world sounds, speech or music.",
        builder="recap.backends.loading:toy_pipeline",
        # words of its captions (recap.toy.world); any other word is <unk> to it
        examples=("a high repeating beep", "a low continuous hum", "a mid repeating siren", "a high continuous chirp",
                  "a low repeating buzz"),
        closed_vocabulary=True,
        world="toy",
    ),
    BackendSpec(
        "toy-music", "recap/toy-music-stable-audio", "stable-audio", "StableAudioPipeline",
        label="toy-music: trained here on soundfont instruments (16 kHz, up to 2 s)",
        # 128 latent frames x hop 256 at 16 kHz (assets/toy-music/*/config.json)
        max_seconds=128 * 256 / 16_000,
        defaults=ModelDefaults(seconds=2.0, steps=25, guidance=4.0), sample_rate=16_000,
        trained_here=True, licence="built here (see assets/toy-music/MODEL_CARD.md)",
        description="MUSIC TOY: a small Stable Audio-family model trained here on short phrases of six General MIDI "
        "instruments rendered with a soundfont (16 kHz mono, up to 2 s); words for instrument, register, tempo, "
        "articulation and key; nothing else",
        caveat="`toy-music` is a small model trained here, briefly, on soundfont renderings of short phrases (piano, "
        "organ, guitar, violin, trumpet, flute; 16 kHz mono, up to 2 s). It is a toy: its timbres are rough, and "
        "it cannot make other sounds, speech or real recordings.",
        builder="recap.backends.loading:toy_music_pipeline",
        # words of its captions (recap.toy.music); any other word is <unk> to it
        examples=("a slow legato low violin melody", "a fast staccato high flute", "a mid piano phrase in c major",
                  "a fast trumpet tune", "a slow smooth deep organ"),
        closed_vocabulary=True,
        world="music",
    ),
    BackendSpec(
        "tiny", "recap/tiny-stable-audio", "stable-audio", "StableAudioPipeline",
        label="tiny: offline demo, RANDOM weights (audio is noise)",
        max_seconds=256 * 256 / 16_000,  # 256 latent frames x hop 256 at 16 kHz (recap.backends.tiny)
        # short and cheap, so the offline demo answers in seconds on a CPU
        defaults=ModelDefaults(seconds=2.0, steps=10, guidance=7.0), sample_rate=16_000,
        random_weights=True, licence="built here",
        description="Stable Audio architecture in miniature, RANDOM weights (tests/demo; audio is noise)",
        builder="recap.backends.tiny:tiny_stable_audio_pipeline",
    ),
    BackendSpec(
        "tiny-audioldm", "recap/tiny-audioldm", "audioldm", "AudioLDMPipeline",
        label="tiny-audioldm: offline demo, RANDOM weights (audio is noise)",
        max_seconds=AUDIOLDM_MAX_SECONDS, defaults=ModelDefaults(seconds=2.0, steps=10, guidance=2.5),
        sample_rate=16_000,
        random_weights=True, licence="built here",
        description="AudioLDM architecture in miniature, RANDOM weights (tests/demo; audio is noise)",
        builder="recap.backends.tiny:tiny_audioldm_pipeline",
    ),
    BackendSpec(
        SAO_ID, SAO_ID, "stable-audio", "StableAudioPipeline",
        label="Stable Audio Open 1.0 (gated: needs HF_TOKEN)", max_seconds=SAO_MAX_SECONDS, defaults=SAO_DEFAULTS,
        sample_rate=44_100,
        gated=True, licence="Stability AI Community License (gated: accept it on the model page)",
        description="Stable Audio Open 1.0: T5-base + 1.06 B DiT + Oobleck VAE, 44.1 kHz stereo, up to 47.55 s",
    ),
    BackendSpec(
        "tiny-sa3", "recap/tiny-stable-audio-3", "stable-audio-3", "StableAudio3Pipeline",
        label="tiny-sa3: offline demo, RANDOM weights (audio is noise)",
        # variable length like SA3; 10 s keeps a CPU demo quick (hop 256 at 16 kHz: 625 latent frames)
        max_seconds=10.0,
        # the distilled checkpoint's sampler: 8 ping-pong steps, guidance fixed at 1
        defaults=ModelDefaults(seconds=2.0, steps=8, guidance=1.0), sample_rate=16_000,
        random_weights=True, licence="built here",
        description="Stable Audio 3 architecture (distilled sampler: guidance fixed at 1) in miniature, "
        "RANDOM weights (tests/demo; audio is noise)",
        builder="recap.backends.tiny:tiny_stable_audio3_pipeline", fixed_guidance=1.0,
    ),
    BackendSpec(
        SA3_ID, SA3_ID, "stable-audio-3", "StableAudio3Pipeline",
        label="Stable Audio 3 Medium (distilled; gated, converted locally)", max_seconds=SA3_MAX_SECONDS,
        defaults=SA3_DEFAULTS, sample_rate=44_100, gated=True, licence=_SA3_LICENCE,
        description="Stable Audio 3 Medium: T5Gemma + 1.4 B DiT + SAME-L, 44.1 kHz stereo, up to 380 s; "
        "distilled to 8 steps: guidance is fixed at 1 (no CFG, no negative prompt)",
        fixed_guidance=1.0,
    ),
    BackendSpec(
        SA3_BASE_ID, SA3_BASE_ID, "stable-audio-3", "StableAudio3Pipeline",
        label="Stable Audio 3 Medium base (CFG; gated, converted locally)", max_seconds=SA3_MAX_SECONDS,
        defaults=SA3_BASE_DEFAULTS, sample_rate=44_100, gated=True, licence=_SA3_LICENCE,
        description="Stable Audio 3 Medium base (not distilled): T5Gemma + 1.4 B DiT + SAME-L, 44.1 kHz stereo, "
        "up to 380 s; ~100 Euler steps with classifier-free guidance and negative prompts",
    ),
    _audioldm("cvssp/audioldm-s-full-v2", "AudioLDM small v2 (16 kHz)", "AudioLDM small (v2), 16 kHz mono"),
    _audioldm("cvssp/audioldm-s-full", "AudioLDM small (16 kHz)", "AudioLDM small, 16 kHz mono"),
    _audioldm("cvssp/audioldm-m-full", "AudioLDM medium (16 kHz)", "AudioLDM medium, 16 kHz mono"),
    _audioldm("cvssp/audioldm-l-full", "AudioLDM large (16 kHz)", "AudioLDM large, 16 kHz mono"),
)}
_ALIASES = {"sao": SAO_ID, "stable-audio-open": SAO_ID, "audioldm": "cvssp/audioldm-s-full-v2", "sa3": SA3_ID,
            "sa3-base": SA3_BASE_ID}
# Offline stand-ins per family, best first: the first whose weights are here is used.
_STAND_INS = {"stable-audio": ("toy", "tiny"), "audioldm": ("tiny-audioldm",), "stable-audio-3": ("tiny-sa3",)}


def get_spec(name: str) -> BackendSpec:
    """The spec of a model name or alias; unregistered AudioLDM hub ids get AudioLDM's.

    Raises:
        ValueError: an unknown name (named in the message, with the known ones).
    """
    spec = find_spec(name)
    if spec is None:
        raise ValueError(f"unknown model {str(name)[:80]!r}; known: {', '.join(_SPECS)}")
    return spec


def find_spec(name: object) -> BackendSpec | None:
    """:func:`get_spec`, or None for an unknown name (e.g. a run manifest written by another version)."""
    if not isinstance(name, str):
        return None
    name = _ALIASES.get(name, name)
    if name in _SPECS:
        return _SPECS[name]
    if _AUDIOLDM_ID.fullmatch(name):
        return _audioldm(name, name, name)
    return None


def toy_weights_present() -> bool:
    """Whether the shipped `toy` model (:data:`TOY_DIR`) is on disk."""
    return _pipeline_present(TOY_DIR)


def toy_music_weights_present() -> bool:
    """Whether the shipped `toy-music` model (:data:`TOY_MUSIC_DIR`) is on disk."""
    return _pipeline_present(TOY_MUSIC_DIR)


def _pipeline_present(folder: Path) -> bool:
    return (folder / "model_index.json").is_file() and (folder / "transformer" / "diffusion_pytorch_model.safetensors").is_file()


def weights_dir(spec: BackendSpec) -> Path | None:
    """Where a model trained here ships its weights (by the world it was trained on); None for any other."""
    if not spec.trained_here:
        return None
    # read at call time, so that a test can point a world's folder elsewhere
    return {"toy": TOY_DIR, "music": TOY_MUSIC_DIR}[spec.world]


def weights_present(spec: BackendSpec) -> bool:
    """False only for a model trained here whose shipped weights are missing."""
    return not spec.trained_here or _pipeline_present(weights_dir(spec))


def list_specs() -> list[BackendSpec]:
    """Every registered model, the toy first."""
    return list(_SPECS.values())


def available_specs() -> list[BackendSpec]:
    """The models the UI offers: every registered one but a trained-here model whose weights are missing."""
    return [spec for spec in _SPECS.values() if weights_present(spec)]


def offline_fallback(name: str | None = None) -> str:
    """The offline stand-in of ``name``'s family (default: Stable Audio's): `toy` when its weights
    ship (it follows prompts), else the random-weight miniature; `tiny-audioldm` for AudioLDM,
    `tiny-sa3` for Stable Audio 3."""
    family = "stable-audio" if name is None else get_spec(name).family
    candidates = [_SPECS[n] for n in _STAND_INS[family]]
    return next((s.name for s in candidates if weights_present(s)), candidates[-1].name)


def weights_cached(model_id: str) -> bool:
    """True when the model's files are in the local Hugging Face cache (no network used)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "model_index.json"), str)
    except Exception:  # a malformed cache must not break a listing or the app's start
        return False


def local_folder(spec: BackendSpec) -> Path | None:
    """``$RECAP_HOME/models/<model id>/`` when it holds a diffusers pipeline (``model_index.json``).

    Where a locally converted checkpoint goes (Stable Audio 3 is published in Stability's format
    only); :func:`recap.backends.loading.load_backend` loads it instead of the Hub id. The folder
    comes from the owner's settings and the registered id, never from what a visitor types.
    """
    if spec.builds_offline:
        return None
    from recap.config import settings

    folder = settings().home / "models" / spec.model_id
    return folder if (folder / "model_index.json").is_file() else None


def availability(spec: BackendSpec) -> str:
    """A sentence on whether ``spec`` can be loaded here, and what it takes when it cannot."""
    if not weights_present(spec):
        return f"not available: its weights are missing from {weights_dir(spec)}"
    if spec.builds_offline:
        return "available (built offline)"
    folder = local_folder(spec)
    if folder is not None:
        return f"available (local folder {folder})"
    if weights_cached(spec.model_id):
        return "available (in the local Hugging Face cache)"
    if spec.family == "stable-audio-3":
        return f"not converted: {SA3_CONVERT.format(model_id=spec.model_id)}"
    need = "accept the licence at the model page and set HF_TOKEN" if spec.gated else "network access"
    return f"not downloaded: first use needs {need}"
