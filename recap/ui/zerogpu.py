"""ZeroGPU as it really behaves, and a CPU stand-in that behaves the same way.

On a ZeroGPU Space (``SPACES_ZERO_GPU=true``) ``spaces.GPU`` runs each call in a worker process
forked from the app (``multiprocessing`` "fork" context, ``spaces/zero/wrappers.py``): the
arguments and the result (or each item a generator yields) cross a pipe pickled; whatever the
call changes in memory stays in the worker; an exception other than ``gr.Error`` reaches the app
only as ``gr.Error("ZeroGPU worker error", <class name>)``. Models must be on the GPU's side
before the app launches: ``spaces`` turns a start-up ``.to("cuda")`` into placeholders, packs the
weights at launch and moves them into each worker (``spaces/zero/torch/patching.py``).

:class:`GpuCall` is what :meth:`recap.ui.context.AppContext.gpu` puts around a GPU-bound
function so that it works there unchanged, and behaves the same off ZeroGPU:

- a loaded model argument crosses as a :class:`BackendRef` (its name), looked up in the child in
  the models the worker inherited by fork: a model's tensors are never pickled;
- a ``threading.Event`` (the visitor's Stop) crosses as a :class:`StopFlag`, a file the app
  creates when the event is set, so Stop reaches the child;
- a local callback (``progress=lambda ...``) crosses as a :class:`Relay`: the child appends each
  call's arguments to a file, a thread of the app reads them and makes the call (return values
  are dropped: callbacks only);
- an exception crosses as a ``gr.Error`` carrying the pickled original, and is raised again as
  itself in the app, so ``Cancelled`` and recap's sentences reach the page as they do elsewhere.

``RECAP_EMULATE_ZERO_GPU=1`` (or ``Settings(zero_gpu="emulate")``) replaces ``spaces.GPU`` by
:func:`recap.ui.zerogpu_emulator.emulated_gpu`: each call forks a child with plain pickling both ways, so the tests show on
a CPU what a Space would do.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import os
import pickle
import shutil
import tempfile
import threading
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

log = logging.getLogger(__name__)

# What one ZeroGPU call may request: 5 minutes (Hugging Face staff, zero-gpu-explorers/README
# discussion 7; a larger request is refused as "ZeroGPU illegal duration"); spaces' default is 60 s.
MAX_SECONDS = 300
MIN_SECONDS = 30  # what a call asks for at least: moving the weights to the GPU takes seconds on its own

_in_worker = False  # True only in a forked child (the ZeroGPU worker or the emulator's)


def in_worker() -> bool:
    """Whether this process is a GPU worker forked from the app."""
    return _in_worker


# ----------------------------------------------------------------------------- durations
@dataclass(frozen=True)
class GpuCost:
    """How long GPU work is expected to take, on ZeroGPU's card, for the largest model offered.

    Attributes:
        fixed: Seconds every call pays: weights moved to the GPU, text encoded, files written.
        per_clip_step: Seconds of one denoising step of one clip (Stable Audio Open, 47 s window).
        per_clip: Seconds per clip outside the denoising loop: decoding, re-encoding, scoring.
        per_train_item: Seconds of one Textual Inversion step per batch item (forward and backward).
    """

    fixed: float = 15.0
    per_clip_step: float = 0.1
    per_clip: float = 1.5
    per_train_item: float = 0.15


COST = GpuCost()


def clamp_seconds(estimate: float) -> int:
    """An estimate as the duration one call requests: at least MIN_SECONDS, at most MAX_SECONDS."""
    return int(min(MAX_SECONDS, max(MIN_SECONDS, round(estimate))))


def _model_steps(backend: Any, steps: Any) -> int:
    if isinstance(steps, int) and steps > 0:
        return steps
    from recap.backends.registry import get_spec

    try:
        return int(get_spec(backend.name).defaults.steps)
    except Exception:  # an unknown backend (a test double): the largest model's default
        return 100


def grid_seconds(backend: Any, variants: list[Any], config: Any, *args: Any, **kwargs: Any) -> int:
    """Duration of ``generate_and_analyze``: clips (variants x seeds) x steps, plus each clip's scoring."""
    clips = max(1, len(variants)) * max(1, len(getattr(config, "seeds", None) or [0]))
    steps = _model_steps(backend, getattr(config, "steps", None))
    return clamp_seconds(COST.fixed + clips * (steps * COST.per_clip_step + COST.per_clip))


def training_seconds(backend: Any, clips: list[str], config: Any, *args: Any, **kwargs: Any) -> int:
    """Duration of one ``train_chunk`` call: its steps x batch, plus the previews it makes."""
    steps = int(getattr(config, "steps", 0) or 0)
    batch = int(getattr(config, "batch_size", 1) or 1)
    every = int(getattr(config, "preview_every", 0) or 0)
    previews = steps // every if every > 0 else 0
    preview_steps = _model_steps(backend, getattr(config, "preview_steps", None))
    return clamp_seconds(COST.fixed + steps * batch * COST.per_train_item
                         + previews * (preview_steps * COST.per_clip_step + COST.per_clip))


def transfer_seconds(backend: Any, source: str, prompt: str, config: Any, *args: Any, **kwargs: Any) -> int:
    """Duration of ``run_transfer``: strengths x seeds x steps (an upper bound: low strengths run fewer)."""
    clips = max(1, len(getattr(config, "strengths", None) or [1])) * max(1, len(getattr(config, "seeds", None) or [0]))
    steps = _model_steps(backend, getattr(config, "steps", None))
    return clamp_seconds(COST.fixed + clips * (steps * COST.per_clip_step + COST.per_clip))


# ----------------------------------------------------------------------------- what crosses the pipe
@dataclass(frozen=True)
class BackendRef:
    """A loaded model, by the name it has in the app's model cache."""

    name: str


@dataclass
class StopFlag:
    """The visitor's Stop on the child's side: set when its file exists (the app creates it)."""

    path: str
    _local: bool = False

    def is_set(self) -> bool:
        return self._local or os.path.exists(self.path)

    def set(self) -> None:  # the child stopping its own worker thread (e.g. a closed generator)
        self._local = True

    def wait(self, timeout: float | None = None) -> bool:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        return self.is_set()


@dataclass(frozen=True)
class Relay:
    """A callback on the child's side: each call's arguments are appended to a file the app reads."""

    path: str

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        line = json.dumps({"args": args, "kwargs": kwargs}, default=str)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class CarriedError(gr.Error):
    """An exception of the child, pickled inside the one kind ``spaces`` passes back (``gr.Error``)."""

    def __init__(self, message: str, payload: bytes | None = None, child_traceback: str = "") -> None:
        super().__init__(message, print_exception=False)
        self.payload = payload
        self.child_traceback = child_traceback

    def __reduce__(self) -> Any:
        return (CarriedError, (self.message, self.payload, self.child_traceback))

    @classmethod
    def of(cls, exc: BaseException) -> CarriedError:
        try:
            payload = pickle.dumps(exc)
        except Exception:
            payload = None
        return cls(f"{type(exc).__name__}: {exc}", payload, "".join(traceback.format_exception(exc)))

    def original(self) -> BaseException:
        """The child's exception itself, or a RuntimeError with its text when it did not pickle."""
        if self.payload is not None:
            try:
                return pickle.loads(self.payload)
            except Exception:
                pass
        return RuntimeError(f"in the GPU worker: {self.message}")


def _is_local_callable(value: Any) -> bool:
    # A module-level function pickles by reference and crosses as it is; a lambda, a local
    # function, a bound method or a partial holds state that does not.
    if isinstance(value, types.FunctionType):
        return "<" in value.__qualname__
    return isinstance(value, (types.MethodType, functools.partial))


# ----------------------------------------------------------------------------- the call
@dataclass
class GpuCall:
    """The app's side of one call: translates its arguments and serves the child's Stop and callbacks.

    Args:
        backends: The app's model cache (name -> loaded model), read to name a model argument.
    """

    backends: dict[str, Any]
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="recap-gpu-call-")))
    _watches: list[tuple[threading.Event, Path]] = field(default_factory=list)
    _relays: list[tuple[Callable[..., Any], Path, list[int]]] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def outbound(self, value: Any) -> Any:
        """``value`` as it crosses to the child (see the module docstring)."""
        from recap.backends.base import AudioBackend

        if isinstance(value, AudioBackend):
            for name, loaded in self.backends.items():
                if loaded is value:
                    return BackendRef(name)
            raise RuntimeError(f"{value.label} is not in the app's model cache: on ZeroGPU a GPU call can only "
                               "use a model loaded at start-up")
        if isinstance(value, threading.Event):
            path = self.folder / f"stop-{len(self._watches)}"
            self._watches.append((value, path))
            return StopFlag(str(path))
        if _is_local_callable(value):
            path = self.folder / f"relay-{len(self._relays)}.jsonl"
            path.touch()
            self._relays.append((value, path, [0]))
            return Relay(str(path))
        return value

    def start(self) -> None:
        """Starts mirroring Stop into the child and making the child's callbacks' calls."""
        if self._watches or self._relays:
            ctx = contextvars.copy_context()  # gr.Progress reads the event's context
            self._thread = threading.Thread(target=ctx.run, args=(self._serve,), name="recap-gpu-relay", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while True:
            finished = self._done.wait(0.1)
            for event, path in self._watches:
                if event.is_set() and not path.exists():
                    path.touch()
            for callback, path, offset in self._relays:
                with open(path, "rb") as f:
                    f.seek(offset[0])
                    data = f.read()
                complete = data[: data.rfind(b"\n") + 1]
                offset[0] += len(complete)
                for line in complete.decode("utf-8").splitlines():
                    call = json.loads(line)
                    try:
                        callback(*call["args"], **call["kwargs"])
                    except Exception:
                        log.exception("a GPU call's callback failed")
            if finished:  # one last pass after the call returned: its final callbacks are made
                return

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        shutil.rmtree(self.folder, ignore_errors=True)


def _inbound(value: Any, backends: dict[str, Any]) -> Any:
    if isinstance(value, BackendRef):
        if value.name not in backends:
            raise RuntimeError(f"model {value.name!r} was loaded after this GPU worker started; "
                               "on ZeroGPU every model must be loaded at start-up")
        return backends[value.name]
    return value


def wrap_for_worker(fn: Callable[..., Any], backends: dict[str, Any], spaces_gpu: Callable[..., Any],
                    duration: int | Callable[..., int]) -> Callable[..., Any]:
    """``fn`` as the app calls it, run in a GPU worker by ``spaces_gpu`` (``spaces.GPU`` or
    :func:`recap.ui.zerogpu_emulator.emulated_gpu`) with its arguments and errors carried across (see the module docstring).

    Args:
        backends: The app's model cache; the worker reads the copy it inherited by fork.
        duration: Seconds to request, or a callable of ``fn``'s arguments that returns them
            (called in the app, on the untranslated request).
    """

    def enter(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        global _in_worker
        _in_worker = True  # this process is the worker: a nested GPU call runs in it directly
        return tuple(_inbound(a, backends) for a in args), {k: _inbound(v, backends) for k, v in kwargs.items()}

    def child(seconds: int, args: tuple, kwargs: dict) -> Any:
        args, kwargs = enter(args, kwargs)
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise CarriedError.of(exc) from None

    def child_gen(seconds: int, args: tuple, kwargs: dict) -> Iterator[Any]:
        args, kwargs = enter(args, kwargs)
        try:
            yield from fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise CarriedError.of(exc) from None

    generator = inspect.isgeneratorfunction(fn)
    task = child_gen if generator else child
    task.__name__ = task.__qualname__ = getattr(fn, "__name__", "gpu_task")
    # The duration is worked out in the app from the untranslated request and crosses as the task's
    # first argument: spaces calls a duration callable with the task's own arguments.
    target = spaces_gpu(task, duration=_first_argument)

    def prepare(args: tuple, kwargs: dict) -> tuple[int, GpuCall, tuple, dict]:
        seconds = int(duration(*args, **kwargs)) if callable(duration) else int(duration)
        call = GpuCall(backends)
        try:
            return seconds, call, tuple(call.outbound(a) for a in args), {k: call.outbound(v) for k, v in kwargs.items()}
        except BaseException:
            call.close()
            raise

    if generator:

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            if _in_worker:
                yield from fn(*args, **kwargs)
                return
            seconds, call, out_args, out_kwargs = prepare(args, kwargs)
            call.start()
            try:
                yield from target(seconds, out_args, out_kwargs)
            except CarriedError as exc:
                raise _original(exc) from None
            finally:
                call.close()

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _in_worker:
            return fn(*args, **kwargs)
        seconds, call, out_args, out_kwargs = prepare(args, kwargs)
        call.start()
        try:
            return target(seconds, out_args, out_kwargs)
        except CarriedError as exc:
            raise _original(exc) from None
        finally:
            call.close()

    return wrapper


def _first_argument(seconds: int, *args: Any, **kwargs: Any) -> int:
    return seconds


def _original(exc: CarriedError) -> BaseException:
    log.debug("GPU worker traceback:\n%s", exc.child_traceback)
    return exc.original()
