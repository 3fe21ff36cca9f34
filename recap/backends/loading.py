"""Loading a registered model: device and dtype choice, and clear errors for models that cannot load."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from recap.backends import registry
from recap.backends.base import AudioBackend
from recap.errors import ModelUnavailable
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


@contextlib.contextmanager
def quiet_build() -> Iterator[None]:
    """Silences what building or loading a pipeline prints that no user can act on.

    ``AutoencoderOobleck`` (diffusers) and ``SpeechT5HifiGan`` (transformers) call
    ``torch.nn.utils.weight_norm``, which torch deprecates with a FutureWarning per layer (120 for
    one Oobleck VAE); the fix belongs upstream. Only that message is filtered, only while inside
    (``warnings.catch_warnings`` swaps the process-wide filter list, so another thread's
    weight_norm warning in that moment is filtered too: harmless).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.nn\.utils\.weight_norm` is deprecated", category=FutureWarning)
        yield


@contextlib.contextmanager
def _no_loading_bars() -> Iterator[None]:
    """Hides diffusers' and transformers' loading progress bars (restored after): loading the toy
    model's six local components takes well under a second and prints two bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    shown = [(m, m.is_progress_bar_enabled()) for m in (diffusers_logging, transformers_logging)]
    for module, _ in shown:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, enabled in shown:
            if enabled:
                module.enable_progress_bar()


def toy_pipeline() -> Any:
    """The `toy` model's builder: the shipped fp16 weights in a real ``StableAudioPipeline`` (as fp32; callers cast)."""
    return _trained_here_pipeline("toy", "recap toy train")


def toy_music_pipeline() -> Any:
    """The `toy-music` model's builder, as :func:`toy_pipeline`."""
    return _trained_here_pipeline("toy-music", "recap toy train --world music")


def _trained_here_pipeline(name: str, rebuild: str) -> Any:
    """A model trained here, from the folder its weights ship in (:func:`registry.weights_dir`)."""
    from diffusers import StableAudioPipeline

    spec = registry.get_spec(name)
    if not registry.weights_present(spec):
        raise ModelUnavailable(
            f"the {name} model's weights are missing from {registry.weights_dir(spec)}; rebuild them with `{rebuild}`"
        )
    with _no_loading_bars():
        return StableAudioPipeline.from_pretrained(str(registry.weights_dir(spec)), dtype=torch.float32)


def _keeps_fp32(module: torch.nn.Module, dtype: torch.dtype) -> list[str]:
    """The submodule names ``from_pretrained(..., dtype=dtype)`` would leave in float32.

    transformers keeps ``_keep_in_fp32_modules`` in fp32 for fp16 only (T5's ``wo``: its
    activations overflow fp16) and ``_keep_in_fp32_modules_strict`` for fp16 and bf16; diffusers
    keeps its models' ``_keep_in_fp32_modules`` for any dtype. Matched by name part, as both do.
    """
    from transformers import PreTrainedModel

    if dtype == torch.float32:
        return []
    keep = set(getattr(module, "_keep_in_fp32_modules_strict", None) or [])
    if not isinstance(module, PreTrainedModel) or dtype == torch.float16:
        keep |= set(getattr(module, "_keep_in_fp32_modules", None) or [])
    return sorted(keep)


def cast_pipeline(pipe: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Moves a pipeline built here (fp32 on the CPU) to ``device`` and ``dtype`` as ``from_pretrained``
    would load it: the modules each model keeps in float32 (:func:`_keeps_fp32`) stay float32.

    ``pipe.to(device, dtype)`` would cast them too; T5's fp16 ``wo`` overflows on real prompts.
    """
    pipe = pipe.to(device)
    if dtype == torch.float32:
        return pipe
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        # torch's own cast: diffusers' ModelMixin.to logs "modules ... should be kept in float32: []"
        # on every dtype cast, even for models that keep none, and this function keeps them itself
        torch.nn.Module.to(component, dtype=dtype)
        keep = _keeps_fp32(component, dtype)
        for name, sub in component.named_modules():
            if keep and any(k in name.split(".") for k in keep):
                sub.to(dtype=torch.float32)
    return pipe


def _hub_error(spec: BackendSpec, exc: BaseException) -> ModelUnavailable:
    """Turns whatever from_pretrained raised into a sentence a user can act on."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    alternatives = "Offline alternatives: --model tiny (random weights, for trying the tool)."
    if any(isinstance(c, GatedRepoError) for c in chain) or (spec.gated and any("401" in str(c) or "403" in str(c) for c in chain)):
        return ModelUnavailable(
            f"{spec.model_id} is gated. Accept its licence at https://huggingface.co/{spec.model_id} while logged in, "
            f"create a read token at https://huggingface.co/settings/tokens and set HF_TOKEN. {alternatives}"
        )
    if any(isinstance(c, RepositoryNotFoundError) for c in chain):
        return ModelUnavailable(f"{spec.model_id} was not found on the Hub (or your token has no access). {alternatives}")
    if any(isinstance(c, LocalEntryNotFoundError) for c in chain) or any(
        "offline" in str(c).lower() or "connect" in str(c).lower() or "resolve" in str(c).lower() for c in chain
    ):
        how = "accept the licence at the model page, set HF_TOKEN and " if spec.gated else ""
        return ModelUnavailable(
            f"{spec.model_id} is not in the local Hugging Face cache and the Hub cannot be reached. "
            f"To use it, {how}run once with network access (the weights are downloaded and cached). {alternatives}"
        )
    return ModelUnavailable(f"could not load {spec.model_id}: {type(exc).__name__}: {exc}. {alternatives}")


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
            ``audioldm``, ``sa3``) or an AudioLDM hub id. A registered Hub model with a local copy in
            ``$RECAP_HOME/models/<model id>`` (:func:`recap.backends.registry.local_folder`) loads from it.
        device: Torch device; automatic when None (CUDA > MPS > CPU).
        dtype: Torch dtype or its name; automatic when None (fp16 on CUDA, fp32 elsewhere).
        compile: One of :data:`COMPILE_MODES` to ``torch.compile`` the denoiser (the first
            generation of each batch shape then compiles); None keeps it eager.

    Raises:
        ValueError: unknown name.
        ModelUnavailable: weights cannot be had here (gated, missing, offline), with what to do.
    """
    # 1. Check inputs
    spec = get_spec(name)
    if compile is not None and compile not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile!r}; use one of {', '.join(COMPILE_MODES)}")
    dev = pick_device(str(device) if device is not None else None)
    dt = pick_dtype(dev, dtype)
    # 2. Build or download the pipeline
    with quiet_build():
        if spec.builds_offline:
            try:
                pipe = spec.build()
            except OSError as exc:  # shipped files unreadable or missing: a sentence, never the raw error
                raise ModelUnavailable(f"{spec.name} could not be built here: its files could not be read "
                                       f"({type(exc).__name__}). Offline alternative: --model tiny.") from exc
        else:
            import diffusers

            pipeline_cls = getattr(diffusers, spec.pipeline)
            # a local copy (e.g. a converted Stable Audio 3 checkpoint) wins over the Hub
            source = registry.local_folder(spec) or spec.model_id
            try:
                pipe = pipeline_cls.from_pretrained(str(source), **pretrained_kwargs(spec, dt))
            except Exception as exc:  # from_pretrained wraps hub errors in OSError/ValueError: unwrap them
                if spec.family == "stable-audio-3" and source == spec.model_id:
                    # not on the Hub in diffusers' format: downloading cannot help, converting does
                    raise ModelUnavailable(
                        f"{spec.model_id} has no diffusers-format copy here: Stability publishes Stable Audio 3 in its "
                        f"own format only. Accept its licence at https://huggingface.co/{spec.model_id} while logged in, "
                        f"then {registry.SA3_CONVERT.format(model_id=spec.model_id)}. Offline alternative: "
                        f"--model tiny-sa3 (random weights, for trying the tool)."
                    ) from exc
                raise _hub_error(spec, exc) from exc
    # 3. Move it: from_pretrained already applied the dtype; models built here are fp32 on the CPU.
    pipe = cast_pipeline(pipe, dev, dt) if spec.builds_offline else pipe.to(dev)
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
