"""Model registry: names -> loaders, device/dtype choice, and clear errors for models that cannot load."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recap.backends.audioldm import AudioLDMBackend
from recap.backends.base import AudioBackend, BackendUnavailable, Cancelled, GenerationOutput, ModelDefaults, TokenVectors
from recap.backends.stable_audio import StableAudioBackend
from recap.backends.speed import compile_denoiser

log = logging.getLogger(__name__)

__all__ = [
    "COMPILE_MODES", "AudioBackend", "BackendSpec", "BackendUnavailable", "Cancelled", "GenerationOutput", "TokenVectors",
    "get_spec", "list_backends", "load_backend", "offline_fallback", "pick_device", "pick_dtype", "toy_weights_present",
]

SAO_ID = "stabilityai/stable-audio-open-1.0"
SAO_URL = f"https://huggingface.co/{SAO_ID}"
TOY_DIR = Path(__file__).resolve().parents[2] / "assets" / "toy"


@dataclass(frozen=True)
class BackendSpec:
    """How to build one named model.

    Attributes:
        name: What users type (``--model``).
        model_id: Hub id (or a local id for built-in models).
        family: "stable-audio" or "audioldm".
        pipeline: The diffusers pipeline class name used to load it.
        random_weights: Built from configs with random weights: its audio is not meaningful.
        gated: Needs an accepted licence and an HF token.
        licence: Licence to show users.
        description: One line for listings.
        builder: Builds the pipeline offline (built-in models) instead of ``from_pretrained`` on a hub id.
        defaults: Generation defaults when they differ from the family's (a model with a short window).
    """

    name: str
    model_id: str
    family: str
    pipeline: str
    random_weights: bool = False
    gated: bool = False
    licence: str = ""
    description: str = ""
    builder: Callable[[], Any] | None = None
    defaults: ModelDefaults | None = None

    @property
    def backend_class(self) -> type[AudioBackend]:
        return StableAudioBackend if self.family == "stable-audio" else AudioLDMBackend


def _tiny_sao():
    from recap.backends.tiny import tiny_stable_audio_pipeline

    return tiny_stable_audio_pipeline()


def _tiny_audioldm():
    from recap.backends.tiny import tiny_audioldm_pipeline

    return tiny_audioldm_pipeline()


def toy_weights_present() -> bool:
    """Whether the shipped `toy` model (``assets/toy``) is on disk."""
    return (TOY_DIR / "model_index.json").is_file() and (TOY_DIR / "transformer" / "diffusion_pytorch_model.safetensors").is_file()


def offline_fallback() -> str:
    """The model to use when the real one cannot be had: `toy` when its weights ship, else `tiny`."""
    return "toy" if toy_weights_present() else "tiny"


def _toy_sao():
    """The `toy` model: shipped fp16 weights loaded into a real ``StableAudioPipeline`` (as fp32; callers cast)."""
    from diffusers import StableAudioPipeline

    if not toy_weights_present():
        raise BackendUnavailable(f"the toy model's weights are missing from {TOY_DIR}; rebuild them with `recap toy train`")
    return StableAudioPipeline.from_pretrained(str(TOY_DIR), dtype=torch.float32)


_AUDIOLDM_LICENCE = "CC BY-NC-SA 4.0"
_SPECS: dict[str, BackendSpec] = {}
_ALIASES = {"sao": SAO_ID, "stable-audio-open": SAO_ID, "audioldm": "cvssp/audioldm-s-full-v2"}


def _register(spec: BackendSpec) -> None:
    _SPECS[spec.name] = spec


_register(BackendSpec(
    SAO_ID, SAO_ID, "stable-audio", "StableAudioPipeline", gated=True,
    licence="Stability AI Community License (gated: accept it on the model page)",
    description="Stable Audio Open 1.0: T5-base + 1.06 B DiT + Oobleck VAE, 44.1 kHz stereo, up to 47 s",
))
for _id, _desc in [
    ("cvssp/audioldm-s-full-v2", "AudioLDM small (v2), 16 kHz mono"),
    ("cvssp/audioldm-s-full", "AudioLDM small, 16 kHz mono"),
    ("cvssp/audioldm-m-full", "AudioLDM medium, 16 kHz mono"),
    ("cvssp/audioldm-l-full", "AudioLDM large, 16 kHz mono"),
]:
    _register(BackendSpec(_id, _id, "audioldm", "AudioLDMPipeline", licence=_AUDIOLDM_LICENCE, description=_desc))
_register(BackendSpec(
    "tiny", "recap/tiny-stable-audio", "stable-audio", "StableAudioPipeline", random_weights=True,
    licence="built here", description="Stable Audio architecture in miniature, RANDOM weights (tests/demo; audio is noise)",
    builder=_tiny_sao, defaults=ModelDefaults(seconds=2.0, steps=10, guidance=7.0),
))
_register(BackendSpec(
    "toy", "recap/toy-stable-audio", "stable-audio", "StableAudioPipeline", random_weights=False,
    licence="built here (see assets/toy/MODEL_CARD.md)",
    description="TOY WORLD: a small Stable Audio-family model trained here on synthetic beeps, buzzes, hums, chirps, "
    "sirens, clicks, hisses and bells (8 kHz mono, up to 1 s); follows pitch (low/mid/high) and rhythm "
    "(continuous/repeating) words, and cannot make real-world sounds, speech or music",
    builder=_toy_sao,
    # its whole window is 1.024 s; 25 steps and guidance 4 are where its steering is clear (MODEL_CARD.md)
    defaults=ModelDefaults(seconds=1.0, steps=25, guidance=4.0),
))
_register(BackendSpec(
    "tiny-audioldm", "recap/tiny-audioldm", "audioldm", "AudioLDMPipeline", random_weights=True,
    licence="built here", description="AudioLDM architecture in miniature, RANDOM weights (tests/demo; audio is noise)",
    builder=_tiny_audioldm, defaults=ModelDefaults(seconds=2.0, steps=10, guidance=2.5),
))


def get_spec(name: str) -> BackendSpec:
    """The spec for a model name or alias; raises ValueError listing the known names."""
    name = _ALIASES.get(name, name)
    if name in _SPECS:
        return _SPECS[name]
    if name.startswith("cvssp/audioldm"):
        return BackendSpec(name, name, "audioldm", "AudioLDMPipeline", licence=_AUDIOLDM_LICENCE, description=name)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(_SPECS)}")


def list_backends() -> list[tuple[BackendSpec, str]]:
    """Every known model with a sentence on whether it can be loaded here."""
    return [(spec, availability(spec)) for spec in _SPECS.values()]


def availability(spec: BackendSpec) -> str:
    if spec.name == "toy" and not toy_weights_present():
        return f"not available: its weights are missing from {TOY_DIR}"
    if spec.builder is not None:
        return "available (built offline)"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec.model_id, "model_index.json")
    except Exception:  # a malformed cache must not break a listing
        cached = None
    if isinstance(cached, str):
        return "available (in the local Hugging Face cache)"
    need = "accept the licence at the model page and set HF_TOKEN" if spec.gated else "network access"
    return f"not downloaded: first use needs {need}"


def pick_device(override: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU, unless ``override`` says otherwise."""
    if override:
        return torch.device(override)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float32": torch.float32, "fp32": torch.float32}


def pick_dtype(device: torch.device, override: str | torch.dtype | None = None) -> torch.dtype:
    """fp16 on CUDA (what the diffusers examples of both families use), fp32 on MPS and CPU."""
    if isinstance(override, torch.dtype):
        return override
    if override:
        if override not in _DTYPES:
            raise ValueError(f"unknown dtype {override!r}; use one of {', '.join(_DTYPES)}")
        return _DTYPES[override]
    return torch.float16 if device.type == "cuda" else torch.float32


def _hub_error(spec: BackendSpec, exc: BaseException) -> BackendUnavailable:
    """Turns whatever from_pretrained raised into a sentence a user can act on."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    alternatives = "Offline alternatives: --model tiny (random weights, for trying the tool)."
    if any(isinstance(c, GatedRepoError) for c in chain) or (spec.gated and any("401" in str(c) or "403" in str(c) for c in chain)):
        return BackendUnavailable(
            f"{spec.model_id} is gated. Accept its licence at https://huggingface.co/{spec.model_id} while logged in, "
            f"create a read token at https://huggingface.co/settings/tokens and set HF_TOKEN. {alternatives}"
        )
    if any(isinstance(c, RepositoryNotFoundError) for c in chain):
        return BackendUnavailable(f"{spec.model_id} was not found on the Hub (or your token has no access). {alternatives}")
    if any(isinstance(c, LocalEntryNotFoundError) for c in chain) or any(
        "offline" in str(c).lower() or "connect" in str(c).lower() or "resolve" in str(c).lower() for c in chain
    ):
        how = "accept the licence at the model page, set HF_TOKEN and " if spec.gated else ""
        return BackendUnavailable(
            f"{spec.model_id} is not in the local Hugging Face cache and the Hub cannot be reached. "
            f"To use it, {how}run once with network access (the weights are downloaded and cached). {alternatives}"
        )
    return BackendUnavailable(f"could not load {spec.model_id}: {type(exc).__name__}: {exc}. {alternatives}")


def pretrained_kwargs(spec: BackendSpec, dtype: torch.dtype) -> dict[str, Any]:
    """Arguments for ``Pipeline.from_pretrained`` (huggingface_hub reads HF_TOKEN itself)."""
    return {"torch_dtype": dtype}


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


def load_backend(
    name: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None, compile: str | None = None
) -> AudioBackend:
    """Loads a model by name and returns it ready to generate, frozen and in eval mode.

    Args:
        name: A registered name (``list_backends``), an alias (``sao``, ``audioldm``) or an AudioLDM hub id.
        device: Torch device; automatic when None (CUDA > MPS > CPU).
        dtype: Torch dtype or its name; automatic when None (fp16 on CUDA, fp32 elsewhere).
        compile: One of :data:`COMPILE_MODES` to ``torch.compile`` the denoiser (the first
            generation of each batch shape then compiles); None keeps it eager.

    Raises:
        ValueError: unknown name.
        BackendUnavailable: weights cannot be had here (gated, missing, offline), with what to do.
    """
    spec = get_spec(name)
    if compile is not None and compile not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile!r}; use one of {', '.join(COMPILE_MODES)}")
    dev = pick_device(str(device) if device is not None else None)
    dt = pick_dtype(dev, dtype)
    if spec.builder is not None:
        pipe = spec.builder()
    else:
        import diffusers

        pipeline_cls = getattr(diffusers, spec.pipeline)
        try:
            pipe = pipeline_cls.from_pretrained(spec.model_id, **pretrained_kwargs(spec, dt))
        except Exception as exc:  # from_pretrained wraps hub errors in OSError/ValueError: unwrap them
            raise _hub_error(spec, exc) from exc
    # from_pretrained already applied the dtype; tiny models are built in fp32 on the CPU.
    pipe = pipe.to(dev) if dt == torch.float32 or spec.builder is None else pipe.to(dev, dt)
    pipe.set_progress_bar_config(disable=True)
    backend = spec.backend_class(
        name=spec.name, model_id=spec.model_id, pipe=pipe, device=dev, dtype=dt,
        random_weights=spec.random_weights, description=spec.description,
    )
    if spec.defaults is not None:
        backend.defaults = spec.defaults
    backend.freeze()
    if compile is not None:
        compile_denoiser(backend.denoiser, mode=None if compile == "default" else compile)
    log.info("loaded %s on %s (%s)", backend.label, dev, dt)
    return backend
