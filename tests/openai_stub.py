"""A local OpenAI-compatible chat-completions server for tests.

It speaks just enough of the API (``POST /v1/chat/completions``, ``GET /v1/models``) for the
``openai`` client, on a real socket on 127.0.0.1, and answers each request from a script::

    with OpenAIStub(script=[Reply.error(429), Reply.json({"rewordings": ["a", "b"]})]) as stub:
        client = openai.OpenAI(base_url=stub.base_url, api_key="sk-test")
        ...
        assert len(stub.requests) == 2

Each request takes the next entry of ``script``; once the script is used up, ``default``
answers every further request (``Reply.error(500)`` for "500 forever"). An entry may also be a
callable ``(body: dict) -> Reply`` that decides from the request. ``Reply.hang()`` holds the
request open until the client gives up or the stub stops, which is how timeouts are tested
without sleeping in the test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A hung request is released at the latest after this long, so a broken test cannot hang the
# suite; well-behaved tests release it sooner by leaving the ``with`` block.
_HANG_LIMIT_S = 30.0


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build it with the class methods, not directly."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    stalls: bool = False

    @classmethod
    def text(cls, content: str | None, *, finish_reason: str = "stop", refusal: str | None = None) -> Reply:
        """A chat completion whose assistant message is ``content``."""
        return cls(body=_completion_body(content, finish_reason, refusal))

    @classmethod
    def json(cls, obj: Any, **kwargs: Any) -> Reply:
        """A chat completion whose content is ``obj`` serialised as JSON."""
        return cls.text(json.dumps(obj), **kwargs)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "stub error",
        *,
        type: str = "server_error",  # noqa: A002 - the API's own field name
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """An HTTP error with the API's ``{"error": {...}}`` body."""
        body = json.dumps({"error": {"message": message, "type": type, "code": None}}).encode()
        return cls(status=status, body=body, headers=tuple((headers or {}).items()))

    @classmethod
    def raw(cls, status: int, body: bytes, headers: dict[str, str] | None = None) -> Reply:
        """Any status and body, sent as they are."""
        return cls(status=status, body=body, headers=tuple((headers or {}).items()))

    @classmethod
    def hang(cls) -> Reply:
        """Holds the request open without answering, so the client's timeout fires."""
        return cls(stalls=True)


@dataclass
class RecordedRequest:
    """What the stub received: method, path, headers (lower-case names) and the JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None


def _completion_body(content: str | None, finish_reason: str, refusal: str | None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": 0,
            "model": "stub-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


ScriptEntry = Reply | Callable[[dict[str, Any]], Reply]


@dataclass
class OpenAIStub:
    """A chat-completions server on 127.0.0.1 that answers from a script.

    Args:
        script: Answers for the first requests, in order.
        default: Answer once the script is used up; ``None`` answers 500 "script exhausted".
        api_key: When set, requests whose ``Authorization`` is not ``Bearer <api_key>`` get 401.
        models: Model names the server knows; a request for another model gets 404.
            ``None`` accepts any model.
    """

    script: Sequence[ScriptEntry] = ()
    default: Reply | None = None
    api_key: str | None = None
    models: Sequence[str] | None = None
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue = list(self.script)
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, what ``OPENAI_BASE_URL`` would be set to."""
        if self._server is None:
            raise RuntimeError("the stub is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completion requests received so far."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def __enter__(self) -> OpenAIStub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval for the loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()  # frees hung requests before the server waits for its loop
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            entry = self._queue.pop(0) if self._queue else self.default
        if entry is None:
            return Reply.error(500, "stub script exhausted")
        return entry(body) if callable(entry) else entry


def _make_handler(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output clean

        def _send(self, reply: Reply) -> None:
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout); nothing to answer

        def _record(self, body: dict[str, Any] | None) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            with stub._lock:
                stub.requests.append(RecordedRequest(self.command, self.path, headers, body))

        def _authorised(self) -> bool:
            if stub.api_key is None:
                return True
            return self.headers.get("Authorization") == f"Bearer {stub.api_key}"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._record(None)
            if not self._authorised():
                self._send(Reply.error(401, "Incorrect API key provided", type="invalid_request_error"))
            elif self.path.rstrip("/").endswith("/models"):
                data = [{"id": m, "object": "model", "owned_by": "stub"} for m in stub.models or ()]
                self._send(Reply.raw(200, json.dumps({"object": "list", "data": data}).encode()))
            else:
                self._send(Reply.error(404, f"no route {self.path}"))

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {"_unparsable": raw.decode("utf-8", "replace")}
            self._record(body)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(Reply.error(404, f"no route {self.path}"))
                return
            if not self._authorised():
                self._send(Reply.error(401, "Incorrect API key provided", type="invalid_request_error"))
                return
            model = body.get("model")
            if stub.models is not None and model not in stub.models:
                self._send(Reply.error(404, f"The model `{model}` does not exist", type="invalid_request_error"))
                return
            reply = stub._next(body)
            if reply.stalls:
                stub._release.wait(_HANG_LIMIT_S)
                return  # no answer: the client's timeout fires first
            self._send(reply)

    return Handler
