"""What every tab shares: settings, the lazily loaded models, the GPU gate, the files it may serve.

The context holds nothing that belongs to one visitor. Models are loaded on first use (not at
import, so the server is up in seconds), once, behind a lock, and used read-only by everyone:
learned tokens are applied per call (``tokens=``), so loading a token never changes what
another visitor's prompt means. Per-visitor values live in ``gr.State`` (the session's job
control, :class:`recap.ui.jobs.SessionJobs`; its tokens; its run) or in the browser.

On a ZeroGPU Space (``SPACES_ZERO_GPU=true``) every GPU-bound function runs in a forked worker
through ``spaces.GPU`` (:mod:`recap.ui.zerogpu`): the models are loaded at start-up, before the app
launches, since what a worker loads is gone when its call returns; each call asks for a duration
sized from its request. ``RECAP_EMULATE_ZERO_GPU=1`` does the same on any machine, forking a child
per call. Elsewhere the gate is the function itself behind a lock.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from recap.backends.registry import SAO_ID, available_specs, get_spec, offline_fallback, weights_cached
from recap.errors import ModelUnavailable
from recap.config import Settings, settings, zero_gpu_mode
from recap.ui import zerogpu

if TYPE_CHECKING:
    from recap.backends.base import AudioBackend

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

HF_HELP = (
    "To hear the real model, accept the Stable Audio Open licence at "
    f"https://huggingface.co/{SAO_ID} while logged in, create a read token at "
    "https://huggingface.co/settings/tokens, set it as `HF_TOKEN` (a Space secret, or an "
    "environment variable) and restart."
)


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
    spec = get_spec(wanted)
    if spec.builds_offline or not spec.gated or weights_cached(spec.model_id) or _hf_token_present():
        return spec.name, None
    fallback = offline_fallback(spec.name)
    return fallback, f"{spec.name} needs a Hugging Face token and none is set, so `{fallback}` is used instead. {HF_HELP}"


@dataclass
class AppContext:
    """Shared, read-only for handlers: settings, the start model, lazily loaded models.

    Attributes:
        settings: Where things are kept and which model is wanted.
        start_model: The model selected when a page opens.
        start_note: Why ``start_model`` differs from ``settings.model`` (None when it does not).
        train_chunk_steps: Steps per GPU call when training; None trains in one call. On
            ZeroGPU each call holds the GPU for a limited time, so training is chunked there.
        max_loaded: Most models kept in memory at once (least recently used goes first); None
            keeps every one (ZeroGPU: a worker only has the models the app held when it forked).
    """

    settings: Settings
    start_model: str
    start_note: str | None = None
    train_chunk_steps: int | None = None
    max_loaded: int | None = 2
    _backends: dict[str, AudioBackend] = field(default_factory=dict, init=False, repr=False)
    _failed: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _load_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _gpu_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # (task, seconds asked for) of each GPU call while emulating ZeroGPU: what the tests read
    gpu_calls: list[tuple[str, int]] = field(default_factory=list, init=False, repr=False)

    @classmethod
    def create(cls, config: Settings | None = None) -> AppContext:
        """Reads the environment (unless ``config`` is given) and decides the start model."""
        config = config or settings()
        start, note = choose_start_model(config.model)
        if not config.zero_gpu:
            return cls(settings=config, start_model=start, start_note=note)
        if config.zero_gpu == "spaces":
            import spaces  # type: ignore[import-not-found]  # noqa: F401  # before torch touches CUDA: it patches torch

        ctx = cls(settings=config, start_model=start, start_note=note, train_chunk_steps=50, max_loaded=None)
        ctx.preload()
        return ctx

    def preload(self) -> list[str]:
        """Loads, now, the start model and every model the picker offers that can load here.

        On ZeroGPU a model must be loaded before the app launches: ``spaces`` moves the weights
        the app holds into each GPU worker, and a model loaded inside a call is gone when it
        returns. A model that cannot load is recorded (its stand-in is loaded instead), as on
        first use elsewhere.

        Returns:
            The names of the models in memory afterwards.
        """
        wanted = [self.start_model, self.settings.model] + [s.name for s in available_specs()]
        for name in dict.fromkeys(get_spec(n).name for n in wanted):
            if name != self.start_model and choose_start_model(name)[1]:
                continue  # gated without a token: it would only load its stand-in, which is listed too
            try:
                self.backend(name)
            except Exception as exc:  # one model that fails must not keep the app from starting
                log.warning("could not preload %s: %s", name, exc)
                self._failed[name] = f"{name} could not be loaded at start-up ({type(exc).__name__})."
        return list(self._backends)

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
        spec = get_spec(name)
        name = spec.name
        if zerogpu.in_worker():
            return self._in_worker(name)
        with self._load_lock:
            if name in self._failed:
                return self._load(offline_fallback(name)), self._failed[name]
            try:
                return self._load(name), None
            except ModelUnavailable as exc:  # load_backend's sentence for every way a model cannot be had here
                why = str(exc)
                stand_in = offline_fallback(name)
                note = f"{why} The app uses `{stand_in}` instead."
                if spec.gated and "HF_TOKEN" not in note:
                    note += f" {HF_HELP}"
                self._failed[name] = note
                log.warning("%s is unavailable; using %s", name, stand_in)
                return self._load(stand_in), note

    def _in_worker(self, name: str) -> tuple[AudioBackend, str | None]:
        # A forked GPU worker: a model loaded here is gone when the call returns (and reloaded by
        # the next), and the lock may have been held by another thread when the worker forked.
        note = self._failed.get(name)
        loaded = offline_fallback(name) if note else name
        if loaded not in self._backends:
            raise RuntimeError(f"{loaded} is not loaded: inside a GPU call only the models loaded at start-up "
                               "can be used (on ZeroGPU a model loaded here would be loaded again by every call)")
        return self._backends[loaded], note

    def _load(self, name: str) -> AudioBackend:
        # Caller holds _load_lock: two visitors asking at once load a model once.
        if name in self._backends:
            self._backends[name] = self._backends.pop(name)  # most recently used last
            return self._backends[name]
        from recap.backends.loading import load_backend

        backend = load_backend(name, self.settings.device, self.settings.dtype, compile=self.settings.compile)
        while self.max_loaded is not None and len(self._backends) >= max(1, self.max_loaded):
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
    def gpu(self, fn: F, duration: int | Callable[..., int] = 120) -> F:
        """Wraps a GPU-bound function: run in a ZeroGPU worker on ZeroGPU, one caller at a time.

        Args:
            fn: The GPU-bound function. On ZeroGPU its arguments and results cross to a forked
                worker (:mod:`recap.ui.zerogpu`): a model argument must be one this context
                holds, and every other argument and result must pickle.
            duration: Seconds to ask ZeroGPU for, or a callable of ``fn``'s arguments returning
                them (e.g. :func:`recap.ui.zerogpu.grid_seconds`); unused elsewhere.

        The lock makes "one GPU job at a time" hold even for work started from events that are
        not in the ``gpu`` concurrency group (e.g. scoring prompts after an LLM call).
        Generator functions keep the lock until they are exhausted or closed.
        """
        target = _spaces_gpu(fn, duration, self.settings.zero_gpu, self._backends, self.gpu_calls)
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
    """True on a ZeroGPU Space (``SPACES_ZERO_GPU=true``) or when emulating one (``RECAP_EMULATE_ZERO_GPU=1``)."""
    return zero_gpu_mode() is not None


def _spaces_gpu(fn: F, duration: int | Callable[..., int], mode: str | None, backends: dict[str, Any],
                calls: list[tuple[str, int]]) -> F:
    if not mode:
        return fn
    if mode == "spaces":
        import spaces  # type: ignore[import-not-found]

        return zerogpu.wrap_for_worker(fn, backends, spaces.GPU, duration)  # type: ignore[return-value]
    from recap.ui.zerogpu_emulator import emulated_gpu

    emulate = functools.partial(emulated_gpu, log=calls)
    return zerogpu.wrap_for_worker(fn, backends, emulate, duration)  # type: ignore[return-value]


def _is_generator_function(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)
