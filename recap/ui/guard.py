"""Bounds on what one HTTP request may make the server hold, enforced before Gradio reads it.

Gradio's ``max_file_size`` bounds each file of an upload, but one multipart request may carry a
thousand of them, an upload is written to the disk while it streams in, and any other POST (an
event's JSON) is read into memory whole. This ASGI middleware bounds the whole body of every
upload request, refuses uploads while the disk is nearly full, and bounds every other request
body, so one request can neither fill the disk, leave a large partial file behind, nor fill the
memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.formparsers import MultiPartException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The routes through which a browser sends files (uploads, microphone recordings).
UPLOAD_SUFFIXES = ("/upload", "/process_recording")


class _TooLarge(MultiPartException):
    """Raised inside Gradio's multipart parser (it reads the body through our ``receive``): as a
    MultiPartException it makes the parser delete the partial files it wrote, and the route
    answers 413 ("maximum allowed size" / "File size exceeded" are the words it looks for)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"File size exceeded maximum allowed size of {max_bytes} bytes in one request.")


class RequestGuard:
    """Refuses, with a sentence: an upload whose body exceeds ``max_upload_bytes`` (413) or that
    arrives while the disk holding ``folder`` has less than ``min_free_bytes`` free (507); any
    other request whose body exceeds ``max_body_bytes`` (413)."""

    def __init__(self, app: ASGIApp, *, max_upload_bytes: int, max_body_bytes: int, folder: str | Path,
                 min_free_bytes: int) -> None:
        self.app, self.folder, self.min_free = app, Path(folder), int(min_free_bytes)
        self.max_upload, self.max_body = int(max_upload_bytes), int(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        upload = str(scope.get("path", "")).rstrip("/").endswith(UPLOAD_SUFFIXES)
        limit = self.max_upload if upload else self.max_body
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, 413, _too_large(limit))
            return
        if upload and _free_bytes(self.folder) < self.min_free:
            await _refuse(send, 507, "The server's disk is nearly full, so uploads are refused for now.")
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            # Raised outside the parser (a route that reads the body itself): the client is told
            # why unless a response had already begun.
            if not started:
                await _refuse(send, 413, _too_large(limit))


def _too_large(limit: int) -> str:
    return f"The request is larger than this server accepts ({limit / (1024 * 1024):g} MB in one request)."


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


async def _refuse(send: Send, status: int, sentence: str) -> None:
    body = sentence.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def guard_middleware() -> list[Any]:
    """The middleware for ``launch(app_kwargs={"middleware": ...})`` with recap's bounds."""
    from gradio.utils import get_upload_folder
    from starlette.middleware import Middleware

    from recap.limits import LIMITS

    mb = 1024 * 1024
    return [Middleware(RequestGuard, max_upload_bytes=LIMITS.upload_mb * mb, max_body_bytes=LIMITS.body_mb * mb,
                       folder=get_upload_folder(), min_free_bytes=LIMITS.disk_floor_mb * mb)]
