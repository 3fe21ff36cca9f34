"""What every tab shares: settings, the lazily loaded models, the GPU gate, per-session job control.

The context holds nothing that belongs to one visitor. Models are loaded on first use (not at
import, so the server is up in seconds), once, behind a lock, and used read-only by everyone:
learned tokens are applied per call (``tokens=``), so loading a token never changes what
another visitor's prompt means. Per-visitor values live in ``gr.State`` (:class:`SessionJobs`,
the session's tokens, its run) or in the browser.

On a ZeroGPU Space (the ``spaces`` package is importable) every GPU-bound function is wrapped
in ``spaces.GPU``; elsewhere that wrapper is the function itself.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from recap.config import OFFLINE_MODEL, Settings, settings

if TYPE_CHECKING:
    from recap.backends import AudioBackend

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

SAO_ID = "stabilityai/stable-audio-open-1.0"
HF_HELP = (
    "To hear the real model, accept the Stable Audio Open licence at "
    f"https://huggingface.co/{SAO_ID} while logged in, create a read token at "
    "https://huggingface.co/settings/tokens, set it as `HF_TOKEN` (a Space secret, or an "
    "environment variable) and restart."
)


@dataclass(frozen=True)
class ModelInfo:
    """What the UI needs to know about a model before loading it (loading is slow).

    Attributes:
        name: The name ``recap.backends.load_backend`` takes.
        label: How the dropdown shows it.
        family: "stable-audio" or "audioldm".
        random_weights: Built offline with random weights: its audio is noise.
        gated: Needs an accepted licence and ``HF_TOKEN``.
        seconds, steps, guidance: Defaults for the generation controls (the tiny models get
            short, cheap ones so the offline demo answers in seconds on a CPU).
        max_seconds: Longest clip the model makes.
        caveat: What a listener must know about its audio (shown above the tabs).
    """

    name: str
    label: str
    family: str
    random_weights: bool = False
    gated: bool = False
    seconds: float = 10.0
    steps: int = 100
    guidance: float = 7.0
    max_seconds: float = 47.0
    caveat: str = ""

    @property
    def builder_only(self) -> bool:
        """Built or shipped here: nothing to download."""
        return self.random_weights or self.name == "toy"


TOY = ModelInfo(
    "toy", "toy: trained here on synthetic sounds (8 kHz, up to 1 s)", "stable-audio", seconds=1.0, steps=25,
    guidance=4.0, max_seconds=1.0,
    caveat=("`toy` is a small model trained here on a synthetic sound world (beeps, buzzes, hums, chirps, sirens, "
            "clicks, hisses and bells; 8 kHz mono, up to 1 s). It follows pitch and rhythm words, and cannot make "
            "real-world sounds, speech or music."))
# Where recap.backends looks for the shipped toy model (checked here without importing the model
# libraries, which would slow the start-up by seconds).
TOY_DIR = Path(__file__).resolve().parents[2] / "assets" / "toy"

MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("tiny", "tiny: offline demo, RANDOM weights (audio is noise)", "stable-audio", True,
              seconds=2.0, steps=10, guidance=7.0, max_seconds=4.0),
    ModelInfo("tiny-audioldm", "tiny-audioldm: offline demo, RANDOM weights (audio is noise)", "audioldm", True,
              seconds=2.0, steps=10, guidance=2.5, max_seconds=30.0),
    ModelInfo(SAO_ID, "Stable Audio Open 1.0 (gated: needs HF_TOKEN)", "stable-audio", gated=True,
              seconds=10.0, steps=100, guidance=7.0, max_seconds=47.0),
    ModelInfo("cvssp/audioldm-s-full-v2", "AudioLDM small v2 (16 kHz)", "audioldm", seconds=5.0, steps=10,
              guidance=2.5, max_seconds=30.0),
    ModelInfo("cvssp/audioldm-s-full", "AudioLDM small (16 kHz)", "audioldm", seconds=5.0, steps=10,
              guidance=2.5, max_seconds=30.0),
    ModelInfo("cvssp/audioldm-m-full", "AudioLDM medium (16 kHz)", "audioldm", seconds=5.0, steps=10,
              guidance=2.5, max_seconds=30.0),
    ModelInfo("cvssp/audioldm-l-full", "AudioLDM large (16 kHz)", "audioldm", seconds=5.0, steps=10,
              guidance=2.5, max_seconds=30.0),
)
_ALIASES = MappingProxyType({"sao": SAO_ID, "stable-audio-open": SAO_ID, "audioldm": "cvssp/audioldm-s-full-v2"})


def toy_present() -> bool:
    """Whether the toy model's weights ship in this checkout (as ``recap.backends.toy_weights_present``)."""
    return (TOY_DIR / "model_index.json").is_file() and \
        (TOY_DIR / "transformer" / "diffusion_pytorch_model.safetensors").is_file()


def available_models() -> tuple[ModelInfo, ...]:
    """The dropdown's models: the toy first when it ships, then the rest."""
    return ((TOY,) if toy_present() else ()) + MODELS


def model_info(name: str) -> ModelInfo:
    """The UI's facts about a model; unknown AudioLDM ids get AudioLDM's defaults."""
    name = _ALIASES.get(name, name)
    for m in (TOY, *MODELS):
        if m.name == name:
            return m
    if re.fullmatch(r"cvssp/audioldm[\w.-]{0,60}", name):
        return ModelInfo(name, name, "audioldm", seconds=5.0, steps=10, guidance=2.5, max_seconds=30.0)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(m.name for m in MODELS)}")


def offline_model_for(name: str) -> str:
    """The offline stand-in of the same family as ``name``: the toy model when it ships (it follows
    prompts), else the random-weight miniature (as ``recap.backends.offline_fallback``)."""
    if model_info(name).family == "audioldm":
        return "tiny-audioldm"
    return TOY.name if toy_present() else OFFLINE_MODEL


def _weights_cached(model_id: str) -> bool:
    """True when the model's files are in the local Hugging Face cache (no network used)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "model_index.json"), str)
    except Exception:  # a broken cache must not stop the app from starting
        return False


def _hf_token_present() -> bool:
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:
        return bool(os.environ.get("HF_TOKEN"))


def choose_start_model(wanted: str) -> tuple[str, str | None]:
    """The model the app starts on and, when it is not ``wanted``, why (for the banner).

    Decided without loading anything: a gated model that is neither cached nor reachable with
    a token cannot load, so the app starts on the offline stand-in instead of failing later.
    A model that still fails on first use falls back then (:meth:`AppContext.backend`).
    """
    info = model_info(wanted)
    if info.builder_only or not info.gated or _weights_cached(info.name) or _hf_token_present():
        return info.name, None
    fallback = offline_model_for(info.name)
    return fallback, f"{info.name} needs a Hugging Face token and none is set, so `{fallback}` is used instead. {HF_HELP}"


class SessionJobs:
    """One visitor's job control, kept in ``gr.State``: the Stop flag and a scratch folder.

    A job calls :meth:`begin` for a fresh ``threading.Event`` it passes to the core as ``stop=``;
    the Stop button calls :meth:`stop`. :meth:`arm` runs when a button is clicked, before the job
    waits in the queue, so a Stop pressed while waiting still stops it.

    ``gr.State`` deep-copies its initial value for every new session: a copy is a fresh object.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._armed = False
        self._scratch: Path | None = None

    def __deepcopy__(self, memo: dict) -> SessionJobs:
        return SessionJobs()

    def arm(self) -> None:
        with self._lock:
            self._event = threading.Event()
            self._armed = True

    def begin(self) -> threading.Event:
        with self._lock:
            if not self._armed:
                self._event = threading.Event()
            self._armed = False
            return self._event

    def stop(self) -> None:
        with self._lock:
            self._event.set()

    @property
    def scratch(self) -> Path:
        """A private temporary folder of this session (previews, checkpoints, downloads)."""
        with self._lock:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="recap-session-"))
            return self._scratch

    def close(self) -> None:
        """Removes the scratch folder (called when Gradio drops the session)."""
        with self._lock:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None


def close_session(jobs: Any) -> None:
    if isinstance(jobs, SessionJobs):
        jobs.close()


@dataclass
class AppContext:
    """Shared, read-only for handlers: settings, the start model, lazily loaded models.

    Attributes:
        settings: Where things are kept and which model is wanted.
        start_model: The model selected when a page opens.
        start_note: Why ``start_model`` differs from ``settings.model`` (None when it does not).
        train_chunk_steps: Steps per GPU call when training; None trains in one call. On
            ZeroGPU each call holds the GPU for a limited time, so training is chunked there.
        max_loaded: Most models kept in memory at once (least recently used goes first).
    """

    settings: Settings
    start_model: str
    start_note: str | None = None
    train_chunk_steps: int | None = None
    max_loaded: int = 2
    _backends: dict[str, AudioBackend] = field(default_factory=dict, init=False, repr=False)
    _failed: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _load_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _gpu_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def create(cls, config: Settings | None = None) -> AppContext:
        """Reads the environment (unless ``config`` is given) and decides the start model."""
        config = config or settings()
        start, note = choose_start_model(config.model)
        chunk = 50 if zero_gpu() else None
        return cls(settings=config, start_model=start, start_note=note, train_chunk_steps=chunk)

    @property
    def home(self) -> Path:
        return self.settings.home

    # ------------------------------------------------------------------ models
    def backend(self, name: str) -> tuple[AudioBackend, str | None]:
        """The loaded model ``name`` and, when it could not be loaded, the stand-in and why.

        Returns:
            (backend, note): ``note`` is None when ``backend`` is the model asked for; otherwise
            it says why the random-weight stand-in of the same family is used instead.

        Raises:
            ValueError: unknown model name.
        """
        name = model_info(name).name
        with self._load_lock:
            if name in self._failed:
                return self._load(offline_model_for(name)), self._failed[name]
            try:
                return self._load(name), None
            except Exception as exc:
                from recap.backends import BackendUnavailable

                if not isinstance(exc, BackendUnavailable):
                    raise
                stand_in = offline_model_for(name)
                note = f"{exc} The app uses `{stand_in}` instead."
                if model_info(name).gated and "HF_TOKEN" not in note:
                    note += f" {HF_HELP}"
                self._failed[name] = note
                log.warning("%s is unavailable; using %s", name, stand_in)
                return self._load(stand_in), note

    def _load(self, name: str) -> AudioBackend:
        # Caller holds _load_lock: two visitors asking at once load a model once.
        if name in self._backends:
            self._backends[name] = self._backends.pop(name)  # most recently used last
            return self._backends[name]
        from recap.backends import load_backend

        backend = load_backend(name, self.settings.device, self.settings.dtype, compile=self.settings.compile)
        while len(self._backends) >= max(1, self.max_loaded):
            dropped = next(iter(self._backends))
            log.info("unloading %s to make room for %s", dropped, name)
            del self._backends[dropped]
        self._backends[name] = backend
        return backend

    def loaded(self) -> list[dict[str, Any]]:
        """``describe()`` of every model in memory (for the About tab)."""
        with self._load_lock:
            return [b.describe() | {"label": b.label} for b in self._backends.values()]

    def failures(self) -> dict[str, str]:
        with self._load_lock:
            return dict(self._failed)

    # ------------------------------------------------------------------ GPU gate
    def gpu(self, fn: F, duration: int = 120) -> F:
        """Wraps a GPU-bound function: ``spaces.GPU`` on ZeroGPU, and one caller at a time.

        The lock makes "one GPU job at a time" hold even for work started from events that are
        not in the ``gpu`` concurrency group (e.g. scoring prompts after an LLM call).
        Generator functions keep the lock until they are exhausted or closed.
        """
        target = _spaces_gpu(fn, duration)
        lock = self._gpu_lock
        if _is_generator_function(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                with lock:
                    yield from target(*args, **kwargs)

            return gen_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return target(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    # ------------------------------------------------------------------ serving files
    def allowed_paths(self) -> list[str]:
        """Folders Gradio may serve directly: run folders, whose ids carry 64 random bits, so a
        run's files are reached only through a link its maker was given.

        Nothing of a listening study is served from its folder: a rater's clips are handed out as
        per-rater copies, and the answer key is kept outside every served folder. ``study.sqlite``
        and the token files are never served; downloads are copied to temporary folders first.
        """
        self.settings.runs_dir.mkdir(parents=True, exist_ok=True)
        return [str(self.settings.runs_dir.resolve())]

    def blocked_paths(self) -> list[str]:
        db = self.settings.study_db.resolve()
        return [str(db), f"{db}-wal", f"{db}-shm", str(self.settings.tokens_dir.resolve()),
                str((self.home / "studies").resolve()), str((self.home / "study_keys").resolve())]


def zero_gpu() -> bool:
    """True on a ZeroGPU Space (the ``spaces`` package is importable)."""
    return importlib.util.find_spec("spaces") is not None


def _spaces_gpu(fn: F, duration: int) -> F:
    if not zero_gpu():
        return fn
    import spaces  # type: ignore[import-not-found]

    return spaces.GPU(duration=duration)(fn)


def _is_generator_function(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)
