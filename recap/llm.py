"""Talking to an OpenAI-compatible chat endpoint: one call with retries, and reading its answer.

Works with api.openai.com and with local servers that speak the same API (Ollama, vLLM,
llama.cpp, HF Inference endpoints). Every call returns, next to the answer, a record of the
whole exchange (messages, parameters, raw answer, attempts, timings) for the run's audit trail.
The API key goes to the client and nowhere else: it is scrubbed from every message and record,
in case a server echoes it back.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from recap.errors import ServiceError

logger = logging.getLogger(__name__)

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
    "refusal",  # the model declined
    "unparsable",  # an answer that holds no usable list
)

_LIST_KEYS = ("rewordings", "variants", "prompts", "captions", "items")
_REFUSAL_RE = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|i won'?t|i am unable|i'?m unable|as an ai)",
    re.I,
)
_ITEM_RE = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•]|\(\d+\))\s+(.+?)\s*$")
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:)?')


class LLMError(ServiceError):
    """A chat call failed. ``reason`` is one of :data:`REASONS`; ``exchange`` is what was sent
    and received before the failure (no key in it)."""

    def __init__(self, reason: str, message: str, exchange: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.exchange = exchange or []


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call. ``api_key`` never leaves this object except into the client."""

    base_url: str | None
    model: str
    api_key: str | None = field(default=None, repr=False)

    @property
    def shown_url(self) -> str:
        """The base URL without any user:password part, for messages and records."""
        return public_url(self.base_url)


@dataclass(frozen=True)
class CallOptions:
    """Per-call parameters (all recorded in the exchange)."""

    temperature: float = 0.9
    seed: int | None = 0
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0  # first wait; doubles after every retry
    max_backoff_s: float = 30.0


def public_url(url: str | None) -> str:
    """``url`` with credentials removed (``https://user:pw@host`` -> ``https://host``)."""
    if not url:
        return "https://api.openai.com/v1"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


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
        "auth": f"the server at {where} rejected the API key ({detail})",
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


def chat(
    endpoint: Endpoint,
    messages: list[dict[str, str]],
    options: CallOptions,
    *,
    response_format: dict[str, Any] | None = None,
    stage: str = "reword",
) -> tuple[str, dict[str, Any]]:
    """Sends one chat-completion request, retrying 429, 5xx, timeouts and lost connections.

    A 400/422 answer to a request with ``response_format`` is retried once without it: many
    local servers do not know structured output, and the answer parser copes with plain text.
    Retries wait ``backoff_s * 2**k`` seconds (or the server's Retry-After, both capped).

    Args:
        endpoint: Base URL, model and key.
        messages: Chat messages (``role`` / ``content``).
        options: Temperature, seed, timeout (s), retries and backoff (s).
        response_format: e.g. a ``json_schema`` format; None for plain text.
        stage: Label saved in the record ("reword", "extract", "fuse").

    Returns:
        (answer text, exchange record). The record holds the request, each attempt's outcome
        and time, the raw answer, usage and the server's model name.

    Raises:
        LLMError: with a reason from :data:`REASONS` and the record so far in ``exchange``.
    """
    import openai

    key = endpoint.api_key or "not-needed"  # local servers ignore it, the client wants one
    client = openai.OpenAI(api_key=key, base_url=endpoint.base_url, timeout=options.timeout_s, max_retries=0)
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
        },
        "attempts": [],
        "response": None,
    }
    t_start = time.monotonic()
    tries = 0
    fmt = response_format

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
            resp = client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            outcome, reason, detail, wait_hint = "timeout", "timeout", "timed out", None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e
            outcome, reason, detail, wait_hint = "unreachable", "unreachable", f"{type(cause).__name__}: {cause}", None
        except openai.APIStatusError as e:
            detail = f"HTTP {e.status_code}: {_server_message(e)}"
            outcome, reason = f"http {e.status_code}", _status_reason(e.status_code)
            wait_hint = _retry_after(e)
            if e.status_code in (400, 422) and fmt is not None:
                record["attempts"].append(_attempt(tries, outcome, t0, detail, endpoint.api_key))
                logger.info("%s refused response_format; asking again for plain text", endpoint.shown_url)
                record["fallback"] = "plain-text (the server refused response_format)"
                fmt = None
                continue
            if reason in ("auth", "model-not-found", "bad-request"):
                record["attempts"].append(_attempt(tries, outcome, t0, detail, endpoint.api_key))
                raise fail(reason, _error_message(reason, endpoint, detail, tries, options)) from None
        except (openai.APIResponseValidationError, ValueError) as e:
            # 200 with a body that is not a chat completion (an HTML page, a proxy's error...).
            detail = f"{type(e).__name__}: {e}"
            record["attempts"].append(_attempt(tries, "not a chat completion", t0, detail, endpoint.api_key))
            message = f"{endpoint.shown_url} answered with something that is not a chat completion ({detail[:200]})"
            raise fail("unparsable", message) from None
        else:
            record["attempts"].append(_attempt(tries, "ok", t0, None, None))
            return _accept(resp, record, endpoint, t_start)
        record["attempts"].append(_attempt(tries, outcome, t0, detail, endpoint.api_key))
        if tries > options.max_retries:
            raise fail(reason, _error_message(reason, endpoint, detail, tries, options))
        wait = min(options.backoff_s * 2 ** (tries - 1), options.max_backoff_s)
        if wait_hint is not None:
            wait = max(wait, min(wait_hint, options.max_backoff_s))
        logger.warning(
            "%s: %s; retry %d of %d in %.3g s", endpoint.shown_url, outcome, tries, options.max_retries, wait
        )
        time.sleep(wait)


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


def _accept(resp: Any, record: dict[str, Any], endpoint: Endpoint, t_start: float) -> tuple[str, dict[str, Any]]:
    choice = resp.choices[0] if resp.choices else None
    message = choice.message if choice is not None else None
    content = (message.content if message is not None else None) or ""
    refusal = getattr(message, "refusal", None) if message is not None else None
    usage = resp.usage.model_dump() if getattr(resp, "usage", None) is not None else None
    record["response"] = {
        "content": content,
        "refusal": refusal,
        "finish_reason": choice.finish_reason if choice is not None else None,
        "model": getattr(resp, "model", None),
        "id": getattr(resp, "id", None),
        "usage": usage,
    }
    record["elapsed_s"] = round(time.monotonic() - t_start, 3)
    clean = scrub(record, endpoint.api_key)
    if choice is None:
        raise LLMError("unparsable", f"{endpoint.shown_url} answered with no choices", [clean])
    if refusal or (choice is not None and choice.finish_reason == "content_filter"):
        raise LLMError("refusal", f"the model refused: {scrub(refusal or 'content filter', endpoint.api_key)}", [clean])
    return scrub(content, endpoint.api_key), clean


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
