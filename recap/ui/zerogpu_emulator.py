"""``spaces.GPU`` on a CPU: every GPU call in a child forked for it, as ZeroGPU runs it.

``RECAP_EMULATE_ZERO_GPU=1`` (or ``Settings(zero_gpu="emulate")``) wraps the app's GPU calls with
:func:`emulated_gpu`, so that tests prove on a CPU what a ZeroGPU Space does to them: arguments
and results cross pickled, what the call changes stays in the child, errors come back as
``spaces`` brings them (:mod:`recap.ui.zerogpu` is what makes the app behave the same there).
"""

from __future__ import annotations

import functools
import inspect
import multiprocessing
import pickle
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from recap.ui.zerogpu import MAX_SECONDS

def emulated_gpu(task: Callable[..., Any], duration: int | Callable[..., int] = 60,
                 log: list[tuple[str, int]] | None = None) -> Callable[..., Any]:
    """``spaces.GPU`` on a CPU: each call runs ``task`` in a child forked for it, as ZeroGPU does.

    Arguments go to the child pickled and the result (each yielded item) comes back pickled, with
    plain :mod:`pickle`: what fails here fails on a Space. A fresh child per call is the strict
    case (a Space may reuse an idle worker, and nothing may rely on either). Exceptions come back
    as ``spaces`` brings them: a ``gr.Error`` as itself, any other as
    ``gr.Error("ZeroGPU worker error")`` naming its class (and here its text, to find it quickly).
    """
    fork = multiprocessing.get_context("fork")

    def seconds_of(args: tuple, kwargs: dict) -> int:
        seconds = int(duration(*args, **kwargs)) if callable(duration) else int(duration)
        if not 0 < seconds <= MAX_SECONDS:
            raise gr.Error(f"The requested GPU duration ({seconds}s) is larger than the maximum allowed",
                           title="ZeroGPU illegal duration")
        if log is not None:
            log.append((task.__name__, seconds))
        return seconds

    def spawn(body: Callable[..., None], payload: bytes) -> tuple[Any, Any, Any]:
        parent_end, child_end = fork.Pipe()
        stop = fork.Event()
        with warnings.catch_warnings():  # "multi-threaded, fork() may deadlock": spaces forks the same way
            warnings.simplefilter("ignore", DeprecationWarning)
            process = fork.Process(target=body, args=(child_end, stop, payload), daemon=True)
            process.start()
        child_end.close()
        return process, parent_end, stop

    def receive(conn: Any, process: Any) -> tuple[str, Any]:
        try:
            kind, data = pickle.loads(conn.recv_bytes())
        except EOFError:
            process.join()
            raise gr.Error("GPU task aborted", title="ZeroGPU worker error") from None
        if kind == "error":
            raise data
        return kind, data

    if inspect.isgeneratorfunction(task):

        def gen_body(conn: Any, stop: Any, payload: bytes) -> None:
            args, kwargs = pickle.loads(payload)
            gen = task(*args, **kwargs)
            try:
                for item in gen:
                    if stop.is_set():
                        gen.close()
                        break
                    data, ok = _packed("item", item)
                    conn.send_bytes(data)
                    if not ok:  # an item that does not pickle ends the call, as in spaces
                        return
                conn.send_bytes(_packed("end", None)[0])
            except Exception as exc:
                conn.send_bytes(_packed("error", _as_spaces_error(exc))[0])

        @functools.wraps(task)
        def gen_handler(*args: Any, **kwargs: Any) -> Iterator[Any]:
            seconds_of(args, kwargs)
            process, conn, stop = spawn(gen_body, pickle.dumps((args, kwargs)))
            try:
                while True:
                    kind, item = receive(conn, process)
                    if kind == "end":
                        return
                    try:
                        yield item
                    except GeneratorExit:
                        stop.set()
                        raise
            finally:
                process.join(timeout=30)
                conn.close()

        return gen_handler

    def body(conn: Any, stop: Any, payload: bytes) -> None:
        args, kwargs = pickle.loads(payload)
        try:
            conn.send_bytes(_packed("ok", task(*args, **kwargs))[0])
        except Exception as exc:
            conn.send_bytes(_packed("error", _as_spaces_error(exc))[0])

    @functools.wraps(task)
    def handler(*args: Any, **kwargs: Any) -> Any:
        seconds_of(args, kwargs)
        process, conn, _ = spawn(body, pickle.dumps((args, kwargs)))
        try:
            return receive(conn, process)[1]
        finally:
            process.join(timeout=30)
            conn.close()

    return handler


def _packed(kind: str, value: Any) -> tuple[bytes, bool]:
    """(the message, whether ``value`` pickled); one that does not comes back as an error, as in spaces."""
    try:
        return pickle.dumps((kind, value)), True
    except Exception as exc:
        return pickle.dumps(("error", _as_spaces_error(exc))), False


def _as_spaces_error(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    return gr.Error(f"{type(exc).__name__}: {exc}", title="ZeroGPU worker error", print_exception=False)
