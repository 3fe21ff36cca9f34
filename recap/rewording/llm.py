"""Talking to an OpenAI-compatible chat endpoint: one bounded call with retries, and reading its answer.

Works with api.openai.com and with local servers that speak the same API (Ollama, vLLM,
llama.cpp, HF Inference endpoints). Every call returns, next to the answer, a record of the
whole exchange (messages, parameters, raw answer, attempts, timings) for the run's audit trail.

A public server makes these calls for strangers, so each one is bounded and says little:

- the API key goes to the client and nowhere else, and is scrubbed from every message and record
  in case a server echoes it back (which key may go to which endpoint is decided where the
  :class:`Endpoint` is built, :func:`recap.rewording.base.llm_endpoint`);
- an answer is read up to ``LIMITS.llm_answer_bytes``, uncompressed, and refused beyond that
  while it arrives; all tries together end within ``LIMITS.llm_total_s``, and a ``stop`` event
  ends them at once;
- an endpoint typed for the call (not ``trusted``) is quoted by status code only, never by the
  body it sent, so the page cannot be used to read hosts only the server can reach.
"""

from __future__ import annotations

import functools
import http
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from recap.errors import BadInput, Cancelled, ServiceError
from recap.limits import LIMITS

logger = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
SERVER_ENDPOINT = "the server's LLM endpoint"  # how a public server's own endpoint is named to visitors
MAX_URL_CHARS = 500

# Why a call failed; the UI and CLI show the message, scripts can branch on the reason.
REASONS = (
    "no-key",  # nothing configured to talk to
    "auth",  # the server rejected the key
    "unreachable",  # no connection to the server
    "timeout",  # connected, but no answer in time
    "model-not-found",
    "rate-limited",  # 429 after every retry
    "server-error",  # 5xx after every retry
    "bad-request",  # any other 4xx
    "too-large",  # an answer over LIMITS.llm_answer_bytes
    "refusal",  # the model declined
    "unparsable",  # an answer that is not a chat completion, or holds no usable list
)

_LIST_KEYS = ("rewordings", "variants", "prompts", "captions", "items")
_REFUSAL_RE = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|i won'?t|i am unable|i'?m unable|as an ai)",
    re.I,
)
_ITEM_RE = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•]|\(\d+\))\s+(.+?)\s*$")
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:)?')
# A base URL: no blanks, no query or fragment, no user:password@ (those are refused with their own sentence).
_URL_RE = re.compile(r"[A-Za-z0-9._~:/\[\]%!$&'()*+,;=-]+")
# Headers the openai client adds that say something about this server: the owner's organisation and
# project ids (read from the environment) and the platform. Not for a host a visitor chose.
_SERVER_HEADERS = frozenset({"openai-organization", "openai-project", "x-stainless-os", "x-stainless-arch",
                             "x-stainless-runtime", "x-stainless-runtime-version", "x-stainless-package-version",
                             "x-stainless-lang"})
_POLL_S = 0.05  # how often a waiting call looks at its stop event and deadline


class LLMError(ServiceError):
    """A chat call failed. ``reason`` is one of :data:`REASONS`; ``exchange`` is what was sent
    and received before the failure (no key in it)."""

    def __init__(self, reason: str, message: str, exchange: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.exchange = exchange or []


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call. ``api_key`` never leaves this object except into the client.

    Attributes:
        base_url: The API's base URL; None means api.openai.com.
        model: Chat model name.
        api_key: Secret, sent as the bearer token to ``base_url`` and nowhere else.
        trusted: The server's own endpoint (from its settings): the bodies of its error answers
            may be quoted in messages. Any other endpoint is quoted by status code only.
        url_hidden: Messages and records call it "the server's LLM endpoint" instead of giving its
            URL (a public server's own endpoint may be an internal host).
    """

    base_url: str | None
    model: str
    api_key: str | None = field(default=None, repr=False)
    trusted: bool = False
    url_hidden: bool = False

    @property
    def url(self) -> str:
        """The base URL really called."""
        return self.base_url or OPENAI_URL

    @property
    def shown_url(self) -> str:
        """The base URL for messages and records: without any user:password part, or hidden."""
        return SERVER_ENDPOINT if self.url_hidden else public_url(self.base_url)


@dataclass(frozen=True)
class CallOptions:
    """Per-call parameters (all recorded in the exchange)."""

    temperature: float = 0.9
    seed: int | None = 0
    timeout_s: float = 60.0  # one try
    max_retries: int = 3
    backoff_s: float = 1.0  # first wait; doubles after every retry
    max_backoff_s: float = 30.0
    total_s: float = LIMITS.llm_total_s  # all tries and waits together (never more than the limit)


def public_url(url: str | None) -> str:
    """``url`` with credentials removed (``https://user:pw@host`` -> ``https://host``)."""
    if not url:
        return OPENAI_URL
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_endpoint_url(url: Any, name: str = "LLM endpoint") -> str:
    """``url`` as a base URL to call (blanks and a trailing "/" removed), or :class:`BadInput`.

    An endpoint is an http(s) URL with a host, at most :data:`MAX_URL_CHARS` long, without a user
    name or password (a key belongs in the key field, which is never shown or stored), query,
    fragment, or "." / ".." path segments.
    """
    if not isinstance(url, str):
        raise BadInput(f"{name} must be text, got {type(url).__name__}")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise BadInput(f"{name} is {len(url):,} characters long; at most {MAX_URL_CHARS} are accepted")
    if "@" in url:
        raise BadInput(f"{name} must not hold a user name or password; type the key in the API key field")
    plain = f"{name} must be a plain http(s) URL such as http://localhost:11434/v1"
    if not _URL_RE.fullmatch(url):
        raise BadInput(f"{plain} (no blanks, query or fragment)")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise BadInput(f"{plain}; its port is not a number from 1 to 65535") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or "%" in parts.netloc:
        raise BadInput(plain)
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        raise BadInput(f"{plain}, without '.' or '..' in its path")
    return url.rstrip("/")


def same_endpoint(a: str | None, b: str | None) -> bool:
    """Whether two base URLs name the same API (scheme, host, port and path; None is api.openai.com).

    Anything unusual compares unequal, which is the safe answer: the server's key goes only to
    the server's endpoint.
    """

    def canonical(url: str) -> tuple[str, str, int, str]:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80), parts.path.rstrip("/")

    try:
        return canonical(a or OPENAI_URL) == canonical(b or OPENAI_URL)
    except ValueError:
        return False


def scrub(obj: Any, secret: str | None) -> Any:
    """Replaces every occurrence of ``secret`` inside strings of a JSON-like object with ``***``."""
    if not secret:
        return obj
    if isinstance(obj, str):
        return obj.replace(secret, "***")
    if isinstance(obj, dict):
        return {k: scrub(v, secret) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [scrub(v, secret) for v in obj]
    return obj


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _status_reason(status: int) -> str:
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "model-not-found"
    if status == 429:
        return "rate-limited"
    if status >= 500:
        return "server-error"
    return "bad-request"


def _error_message(reason: str, endpoint: Endpoint, detail: str, tries: int, options: CallOptions) -> str:
    where = endpoint.shown_url
    return {
        "auth": f"{where} rejected the API key ({detail})",
        "model-not-found": (
            f"model {endpoint.model!r} was not found at {where} ({detail}); check the model name, and that "
            "the URL is the API's base (it often ends in /v1)"
        ),
        "rate-limited": f"{where} kept answering 429 (rate limited) after {tries} tries ({detail})",
        "server-error": f"{where} kept failing with a server error after {tries} tries ({detail})",
        "bad-request": f"{where} refused the request ({detail})",
        "unreachable": f"could not connect to {where} after {tries} tries ({detail})",
        "timeout": f"no answer from {where} within {options.timeout_s:g} s, {tries} tries",
    }[reason]


class _Refused(Exception):
    """An answer given up on while it arrived; ``phrase`` completes "<endpoint> ..."."""

    def __init__(self, reason: str, phrase: str) -> None:
        super().__init__(phrase)
        self.reason = reason
        self.phrase = phrase


def chat(
    endpoint: Endpoint,
    messages: list[dict[str, str]],
    options: CallOptions,
    *,
    response_format: dict[str, Any] | None = None,
    stage: str = "reword",
    stop: threading.Event | None = None,
) -> tuple[str, dict[str, Any]]:
    """Sends one chat-completion request, retrying 429, 5xx, timeouts and lost connections.

    A 400/422 answer to a request with ``response_format`` is retried once without it: many
    local servers do not know structured output, and the answer parser copes with plain text.
    Retries wait ``backoff_s * 2**k`` seconds (or the server's Retry-After, both capped); every
    try and wait together end within ``options.total_s`` (at most ``LIMITS.llm_total_s``).

    Args:
        endpoint: Base URL, model and key.
        messages: Chat messages (``role`` / ``content``).
        options: Temperature, seed, timeouts (s), retries and backoff (s).
        response_format: e.g. a ``json_schema`` format; None for plain text.
        stage: Label saved in the record ("reword", "extract", "fuse").
        stop: When set (the Stop button), the call is abandoned at once.

    Returns:
        (answer text, exchange record). The record holds the request, each attempt's outcome
        and time, the raw answer, usage and the server's model name.

    Raises:
        LLMError: with a reason from :data:`REASONS` and the record so far in ``exchange``.
        Cancelled: ``stop`` was set.
    """
    import openai

    total_s = min(options.total_s, LIMITS.llm_total_s)
    record: dict[str, Any] = {
        "stage": stage,
        "started": _now(),
        "base_url": endpoint.shown_url,
        "model": endpoint.model,
        "request": {
            "messages": messages,
            "temperature": options.temperature,
            "seed": options.seed,
            "response_format": response_format,
            "timeout_s": options.timeout_s,
            "total_s": total_s,
        },
        "attempts": [],
        "response": None,
    }
    t_start = time.monotonic()
    deadline = t_start + total_s
    tries = 0
    fmt = response_format
    where = endpoint.shown_url

    def fail(reason: str, message: str) -> LLMError:
        record["error"] = {"reason": reason, "message": message}
        record["elapsed_s"] = round(time.monotonic() - t_start, 3)
        return LLMError(reason, scrub(message, endpoint.api_key), [scrub(record, endpoint.api_key)])

    while True:
        tries += 1
        t0 = time.monotonic()
        kwargs: dict[str, Any] = {"model": endpoint.model, "messages": messages, "temperature": options.temperature}
        if options.seed is not None:
            kwargs["seed"] = options.seed
        if fmt is not None:
            kwargs["response_format"] = fmt
        try:
            response = _post(endpoint, kwargs, min(options.timeout_s, deadline - t0), deadline, stop)
            answer = _completion(response, endpoint)
        except _Refused as e:
            record["attempts"].append(_attempt(tries, e.reason, t0, e.phrase, endpoint.api_key))
            if e.reason == "timeout":  # the total deadline: no time is left for another try
                message = f"no complete answer from {where} within {total_s:g} s (all tries together)"
                raise fail("timeout", message) from None
            raise fail(e.reason, f"{where} {e.phrase}") from None
        except openai.APITimeoutError:
            outcome, reason, detail, wait_hint = "timeout", "timeout", "timed out", None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e
            # How a connection to a visitor's host failed would map the server's network for them.
            detail = f"{type(cause).__name__}: {cause}" if endpoint.trusted else type(cause).__name__
            outcome, reason, wait_hint = "unreachable", "unreachable", None
        except openai.APIStatusError as e:
            detail = _status_detail(e, endpoint)
            outcome, reason = f"http {e.status_code}", _status_reason(e.status_code)
            wait_hint = _retry_after(e)
            if e.status_code in (400, 422) and fmt is not None:
                record["attempts"].append(_attempt(tries, outcome, t0, detail, endpoint.api_key))
                logger.info("%s refused response_format; asking again for plain text", where)
                record["fallback"] = "plain-text (the server refused response_format)"
                fmt = None
                continue
            if reason in ("auth", "model-not-found", "bad-request"):
                record["attempts"].append(_attempt(tries, outcome, t0, detail, endpoint.api_key))
                raise fail(reason, _error_message(reason, endpoint, detail, tries, options)) from None
        else:
            record["attempts"].append(_attempt(tries, "ok", t0, None, None))
            return _accept(answer, record, endpoint, t_start)
        record["attempts"].append(_attempt(tries, outcome, t0, detail, endpoint.api_key))
        wait = min(options.backoff_s * 2 ** (tries - 1), options.max_backoff_s)
        if wait_hint is not None:
            wait = max(wait, min(wait_hint, options.max_backoff_s))
        if tries > options.max_retries or time.monotonic() + wait >= deadline:
            raise fail(reason, _error_message(reason, endpoint, detail, tries, options))
        logger.warning("%s: %s; retry %d of %d in %.3g s", where, outcome, tries, options.max_retries, wait)
        if stop is not None and stop.wait(wait):
            raise Cancelled("Stopped.")
        if stop is None:
            time.sleep(wait)


def _post(endpoint: Endpoint, kwargs: dict[str, Any], timeout_s: float, deadline: float,
          stop: threading.Event | None) -> Any:
    """One try, in a worker thread, so that Stop and the deadline take effect at once: the try
    itself blocks in socket reads, each up to ``timeout_s``. Returns the HTTP response (read)."""
    done, abandoned = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["response"] = _send(endpoint, kwargs, timeout_s, abandoned)
        except BaseException as exc:  # handed over to the caller's thread below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="recap-llm-call", daemon=True).start()
    while not done.wait(_POLL_S):
        if stop is not None and stop.is_set():
            abandoned.set()  # the worker drops the answer at its next read
            raise Cancelled("Stopped.")
        if time.monotonic() >= deadline:
            abandoned.set()
            raise _Refused("timeout", "did not answer in time")
    if "error" in box:
        raise box["error"]
    return box["response"]


def _send(endpoint: Endpoint, kwargs: dict[str, Any], timeout_s: float, abandoned: threading.Event) -> Any:
    """Sends the request with a client whose answers are bounded; returns the read HTTP response."""
    import httpx2
    import openai

    hooks = {
        "request": [functools.partial(_prepare_request, foreign=not endpoint.trusted)],
        "response": [functools.partial(_bound_response, limit=LIMITS.llm_answer_bytes, abandoned=abandoned)],
    }
    # No redirects: the key and the request go to the URL chosen, nowhere else.
    with httpx2.Client(event_hooks=hooks, timeout=timeout_s, follow_redirects=False) as http_client:
        key = endpoint.api_key or "not-needed"  # local servers ignore it, the client wants one
        client = openai.OpenAI(api_key=key, base_url=endpoint.url, timeout=timeout_s, max_retries=0,
                               http_client=http_client)
        return client.chat.completions.with_raw_response.create(**kwargs).http_response


def _prepare_request(request: Any, *, foreign: bool) -> None:
    # Uncompressed answers only, so the bytes counted on the wire are the bytes held in memory.
    request.headers["Accept-Encoding"] = "identity"
    if foreign:
        for name in [n for n in request.headers.keys() if n.lower() in _SERVER_HEADERS]:
            del request.headers[name]


def _bound_response(response: Any, *, limit: int, abandoned: threading.Event) -> None:
    """Refuses a compressed or announced-too-large answer before its body is read, and wraps
    the body so that reading stops past ``limit`` bytes (or once the caller gave up)."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise _Refused("unparsable", f"answered compressed ({_token(encoding)}) although asked for no compression")
    length = response.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > limit:
        raise _Refused("too-large", _too_large(limit))
    response.stream = _bounded_stream_class()(response.stream, limit, abandoned)


@functools.cache
def _bounded_stream_class() -> type:
    """The body wrapper; built on first use because httpx2 is imported only when a call is made."""
    import httpx2

    class BoundedStream(httpx2.SyncByteStream):
        def __init__(self, stream: Any, limit: int, abandoned: threading.Event) -> None:
            self._stream, self._limit, self._abandoned = stream, limit, abandoned

        def __iter__(self) -> Any:
            read = 0
            for chunk in self._stream:
                read += len(chunk)
                if read > self._limit:
                    raise _Refused("too-large", _too_large(self._limit))
                if self._abandoned.is_set():
                    raise _Refused("timeout", "was given up on")
                yield chunk

        def close(self) -> None:
            self._stream.close()

        @property
        def elapsed(self) -> Any:  # httpx2's Response.elapsed reads it from its stream
            return getattr(self._stream, "elapsed", None)

    return BoundedStream


def _too_large(limit: int) -> str:
    return f"sent an answer of more than {limit // 1024} KiB; recap reads at most that much"


def _token(text: str) -> str:
    """A header value as a short, harmless word for a message."""
    return re.sub(r"[^\w/.+;= -]", "", str(text))[:60].strip() or "unknown"


def _status_detail(e: Any, endpoint: Endpoint) -> str:
    """"HTTP 404: <the server's message>" for the server's own endpoint; the status and its
    standard phrase only for any other, whose body might come from an internal host."""
    if endpoint.trusted:
        return f"HTTP {e.status_code}: {_server_message(e)}"
    try:
        phrase = http.HTTPStatus(e.status_code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP {e.status_code} {phrase}".strip()


def _attempt(n: int, outcome: str, t0: float, detail: str | None, secret: str | None) -> dict[str, Any]:
    out = {"attempt": n, "outcome": outcome, "elapsed_s": round(time.monotonic() - t0, 3)}
    if detail:
        out["detail"] = scrub(detail, secret)
    return out


def _server_message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    return str(getattr(e, "message", e))[:300]


def _retry_after(e: Any) -> float | None:
    try:
        value = e.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _completion(response: Any, endpoint: Endpoint) -> dict[str, Any]:
    """The parts of a chat-completion answer that recap uses, read from its JSON by hand (a
    server's 200 may be an HTML page, a proxy's notice, or JSON of any shape).

    Raises:
        _Refused: ``unparsable``, saying what came instead (quoting it only for the server's own endpoint).
    """
    try:
        data = json.loads(response.content)
    except ValueError:  # also UnicodeDecodeError
        data = None
    if not isinstance(data, dict):
        kind = _token(response.headers.get("content-type", "no content type"))
        excerpt = f": {response.content[:200].decode('utf-8', 'replace')!r}" if endpoint.trusted else ""
        raise _Refused("unparsable", f"answered HTTP {response.status_code} with {kind}, which is not a chat "
                                     f"completion{excerpt}")
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if choice is None:
        raise _Refused("unparsable", "answered with no choices, which is not a chat completion")
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content, refusal = message.get("content"), message.get("refusal")
    if content is not None and not isinstance(content, str):
        raise _Refused("unparsable", "answered with a message that is not text")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    return {
        "content": content or "",
        "refusal": None if refusal is None else str(refusal)[:500],
        "finish_reason": _short(choice.get("finish_reason")),
        "model": _short(data.get("model")),
        "id": _short(data.get("id")),
        "usage": None if usage is None else {k: v for k, v in usage.items() if isinstance(v, int | float)},
    }


def _short(value: Any) -> str | None:
    return None if value is None else str(value)[:200]


def _accept(answer: dict[str, Any], record: dict[str, Any], endpoint: Endpoint,
            t_start: float) -> tuple[str, dict[str, Any]]:
    record["response"] = answer
    record["elapsed_s"] = round(time.monotonic() - t_start, 3)
    clean = scrub(record, endpoint.api_key)
    if answer["refusal"] or answer["finish_reason"] == "content_filter":
        refusal = scrub(answer["refusal"] or "content filter", endpoint.api_key)
        raise LLMError("refusal", f"the model refused: {refusal}", [clean])
    return scrub(answer["content"], endpoint.api_key), clean


# --------------------------------------------------------------------------------------------
# Reading answers


@dataclass(frozen=True)
class ParsedList:
    """Items read from an answer; ``salvaged`` when they came out of broken JSON."""

    items: list[str]
    salvaged: bool = False


def _clean_item(text: str) -> str:
    text = " ".join(text.split()).strip("*").strip()  # one line: prompts are single lines
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text.strip("“”").strip()


def _items_from_json(obj: Any) -> list[str] | None:
    if isinstance(obj, dict):
        for key in _LIST_KEYS:
            if isinstance(obj.get(key), list):
                return _items_from_json(obj[key])
        lists = [v for v in obj.values() if isinstance(v, list)]
        return _items_from_json(lists[0]) if len(lists) == 1 else None
    if isinstance(obj, list):
        out = []
        for item in obj:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict):
                text = next((item[k] for k in ("text", "prompt", "rewording") if isinstance(item.get(k), str)), None)
                if text is None:
                    return None
                out.append(text)
            else:
                return None
        return [t for t in (_clean_item(s) for s in out) if t]
    return None


def _try_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except json.JSONDecodeError:
        return False, None


def _unescape(quoted: str) -> str:
    ok, value = _try_json(f'"{quoted}"')
    return _clean_item(value if ok and isinstance(value, str) else quoted)


def parse_list_answer(text: str) -> ParsedList:
    """Reads a list of prompts from an answer, however the model chose to write it.

    Tries in turn: JSON (an object with a ``rewordings``-like list, or a bare list, also inside
    a code fence or after a preamble); numbered or bulleted lines; plain lines. JSON that is
    cut off or broken keeps its complete quoted strings (``salvaged=True``).

    Raises:
        LLMError: ``refusal`` when the answer is a refusal, ``unparsable`` when nothing usable
            is in it.
    """
    body = text.strip()
    fence = _FENCE_RE.search(body)
    if fence:
        body = fence.group(1).strip()
    ok, obj = _try_json(body)
    if not ok:  # JSON after a preamble ("Here you go: {...}")
        start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
        end = max(body.rfind("}"), body.rfind("]"))
        if start >= 0 and end > start:
            ok, obj = _try_json(body[start : end + 1])
    if ok:
        items = _items_from_json(obj)
        if items:
            return ParsedList(items)
        raise LLMError("unparsable", f"the answer is JSON but holds no list of prompts: {text[:200]!r}")
    if body.startswith(("{", "[")):
        # Broken JSON (often cut off by a token limit): keep the string values, not the keys.
        values = [_unescape(m.group(1)) for m in _QUOTED_RE.finditer(body) if not m.group(2)]
        values = [v for v in values if v and v.lower() not in _LIST_KEYS]
        if values:
            return ParsedList(values, salvaged=True)
        raise LLMError("unparsable", f"the answer is broken JSON with no complete prompt in it: {text[:200]!r}")
    lines = [ln for ln in body.splitlines() if ln.strip()]
    items = [m.group(1) for ln in lines if (m := _ITEM_RE.match(ln))]
    if not items:
        if _REFUSAL_RE.match(body):
            raise LLMError("refusal", f"the model refused: {body[:200]!r}")
        items = [ln for ln in lines if not ln.rstrip().endswith(":")]
    items = [t for t in (_clean_item(s) for s in items) if t]
    if not items:
        raise LLMError("unparsable", f"no prompts found in the answer: {text[:200]!r}")
    return ParsedList(items)


def parse_fields_answer(text: str, keys: tuple[str, ...]) -> dict[str, str]:
    """Reads named fields from JSON, or from ``key: value`` lines; missing keys become ``""``.

    Raises:
        LLMError: ``unparsable`` when none of ``keys`` is found.
    """
    body = text.strip()
    fence = _FENCE_RE.search(body)
    if fence:
        body = fence.group(1).strip()
    ok, obj = _try_json(body)
    if not ok:
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            ok, obj = _try_json(body[start : end + 1])
    found: dict[str, str] = {}
    if ok and isinstance(obj, dict):
        lower = {str(k).lower(): v for k, v in obj.items()}
        found = {k: str(lower[k]).strip() for k in keys if lower.get(k) is not None}
    else:
        for line in body.splitlines():
            m = re.match(r"^\s*[-*]?\s*\**([A-Za-z /_]+?)\**\s*[:=]\s*(.*)$", line)
            if m:
                name = m.group(1).strip().lower().replace(" ", "_").replace("/", "_")
                if name in keys:
                    found[name] = _clean_item(m.group(2))
    if not found:
        if _REFUSAL_RE.match(body):
            raise LLMError("refusal", f"the model refused: {body[:200]!r}")
        raise LLMError("unparsable", f"none of {', '.join(keys)} found in the answer: {text[:200]!r}")
    return {k: found.get(k, "") for k in keys}
