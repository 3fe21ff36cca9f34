"""Loading a registered model: device and dtype choice, and clear errors for models that cannot load."""

from __future__ import annotations

import logging
from typing import Any

import torch

from recap.backends import registry
from recap.backends.base import AudioBackend, BackendUnavailable
from recap.backends.registry import BackendSpec, get_spec
from recap.backends.speed import compile_denoiser

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float32": torch.float32, "fp32": torch.float32}


def pick_device(override: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU, unless ``override`` says otherwise."""
    if override:
        return torch.device(override)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, override: str | torch.dtype | None = None) -> torch.dtype:
    """fp16 on CUDA (what the diffusers examples of both families use), fp32 on MPS and CPU."""
    if isinstance(override, torch.dtype):
        return override
    if override:
        if override not in _DTYPES:
            raise ValueError(f"unknown dtype {override!r}; use one of {', '.join(_DTYPES)}")
        return _DTYPES[override]
    return torch.float16 if device.type == "cuda" else torch.float32


def toy_pipeline() -> Any:
    """The `toy` model's builder: the shipped fp16 weights in a real ``StableAudioPipeline`` (as fp32; callers cast)."""
    from diffusers import StableAudioPipeline

    if not registry.toy_weights_present():
        raise BackendUnavailable(
            f"the toy model's weights are missing from {registry.TOY_DIR}; rebuild them with `recap toy train`"
        )
    return StableAudioPipeline.from_pretrained(str(registry.TOY_DIR), dtype=torch.float32)


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
    """Arguments for ``Pipeline.from_pretrained`` (huggingface_hub reads HF_TOKEN itself).

    ``dtype=``: diffusers 0.42 deprecates ``torch_dtype``.
    """
    return {"dtype": dtype}


def load_backend(
    name: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None, compile: str | None = None
) -> AudioBackend:
    """Loads a model by name and returns it ready to generate, frozen and in eval mode.

    Args:
        name: A registered name (:func:`recap.backends.registry.list_specs`), an alias (``sao``,
            ``audioldm``) or an AudioLDM hub id.
        device: Torch device; automatic when None (CUDA > MPS > CPU).
        dtype: Torch dtype or its name; automatic when None (fp16 on CUDA, fp32 elsewhere).
        compile: One of :data:`COMPILE_MODES` to ``torch.compile`` the denoiser (the first
            generation of each batch shape then compiles); None keeps it eager.

    Raises:
        ValueError: unknown name.
        BackendUnavailable: weights cannot be had here (gated, missing, offline), with what to do.
    """
    # 1. Check inputs
    spec = get_spec(name)
    if compile is not None and compile not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile!r}; use one of {', '.join(COMPILE_MODES)}")
    dev = pick_device(str(device) if device is not None else None)
    dt = pick_dtype(dev, dtype)
    # 2. Build or download the pipeline
    if spec.builds_offline:
        pipe = spec.build()
    else:
        import diffusers

        pipeline_cls = getattr(diffusers, spec.pipeline)
        try:
            pipe = pipeline_cls.from_pretrained(spec.model_id, **pretrained_kwargs(spec, dt))
        except Exception as exc:  # from_pretrained wraps hub errors in OSError/ValueError: unwrap them
            raise _hub_error(spec, exc) from exc
    # 3. Move it: from_pretrained already applied the dtype; models built here are fp32 on the CPU.
    pipe = pipe.to(dev) if dt == torch.float32 or not spec.builds_offline else pipe.to(dev, dt)
    pipe.set_progress_bar_config(disable=True)
    # 4. Wrap, freeze, compile
    backend = spec.backend_class(
        name=spec.name, model_id=spec.model_id, pipe=pipe, device=dev, dtype=dt,
        random_weights=spec.random_weights, description=spec.description,
    )
    backend.defaults = spec.defaults
    backend.freeze()
    if compile is not None:
        compile_denoiser(backend.denoiser, mode=None if compile == "default" else compile)
    log.info("loaded %s on %s (%s)", backend.label, dev, dt)
    return backend
