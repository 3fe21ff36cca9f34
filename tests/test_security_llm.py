"""A stranger on the Prompt tab cannot take the owner's LLM key, reach hosts only the server can
reach, read what those hosts answer, or hold the server with one request.

Two apps are launched for the module, as their owners would run them: a public one (a Space:
visitors may not type endpoints) and a local one (they may). Both have the owner's key and the
owner's endpoint, a real local OpenAI-compatible server that accepts only that key. The
"attacker" is another such server, which records every header it receives. Each attack is made
twice: through ``gradio_client`` (the API) and through the raw queue protocol (what the browser
speaks). A test passes only when the attack fails.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from attack import RawSession, served
from openai_stub import OpenAIStub, Reply

from recap.config import Settings
from recap.errors import BadInput, Cancelled
from recap.limits import LIMITS
from recap.rewording.llm import SERVER_ENDPOINT, CallOptions, Endpoint, LLMError, chat
from recap.rewording.base import RecaptionConfig, llm_endpoint
from recap.rewording.recaption import recaption

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

SECRET = "sk-owner-5ecret-never-leaves-0123456789"
BASELINE = "rain on a tin roof"
ANSWER = {"rewordings": ["rain on a metal roof", "rain drumming on tin"]}
MARKER = "INTERNAL-ONLY-7f3a /etc/recap/secrets.toml"  # what an internal host's body holds
EMPTY_TABLE = {"headers": ["label", "method", "tier", "prompt", "text cosine", "word edits", "flags"], "data": []}
ENDPOINT_LABEL = "Endpoint (empty: the server's)"
# The inputs of the Reword button's event, in order (the page sends them by position).
REWORD_INPUTS = ("table", "prompt", "method", "distance", "instruction", "n", "seed", "system", "endpoint", "model",
                 "key")


@pytest.fixture(scope="module")
def owner():
    """The owner's endpoint: answers only requests that carry the owner's key."""
    with OpenAIStub(api_key=SECRET, default=Reply.json(ANSWER)) as stub:
        yield stub


def _settings(tmp_path_factory, owner: OpenAIStub, **kw) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"), model="tiny", openai_api_key=SECRET,
                    llm_base_url=owner.base_url, **kw)


@dataclass
class App:
    url: str
    client: Any  # one gradio_client session for the module's API calls


@pytest.fixture(scope="module")
def public(tmp_path_factory, owner):
    """A public app (a Space) whose owner left RECAP_VISITOR_ENDPOINTS unset."""
    with served(_settings(tmp_path_factory, owner, public=True, visitor_endpoints=False)) as (_, url):
        yield App(url, Client(url, verbose=False))


@pytest.fixture(scope="module")
def local(tmp_path_factory, owner):
    """An app where visitors may type their own endpoint."""
    with served(_settings(tmp_path_factory, owner, public=False, visitor_endpoints=True)) as (_, url):
        yield App(url, Client(url, verbose=False))


def via_client(app: App, *, endpoint: str = "", key: str = "", prompt: str = BASELINE, method: str = "llm",
               distance: str = "light", instruction: str = "", n: float = 2, seed: float = 0) -> tuple[bool, str]:
    """Rewords through the API as gradio_client does: (ok, summary or error text)."""
    try:
        _, summary = app.client.predict(EMPTY_TABLE, prompt, method, distance, instruction, n, seed, "", endpoint, "",
                                        key, api_name="/recaption")
    except AppError as exc:
        return False, str(exc)
    return True, summary


def via_browser(app: App, **values) -> tuple[bool, str]:
    """Rewords as the page does (raw queue protocol); ``values`` by name (see REWORD_INPUTS), the
    other inputs as an untouched page sends them."""
    tab = RawSession(app.url)
    fn = tab.event(api_name="recaption")
    ids = tab.inputs(fn)
    values = {"prompt": BASELINE, "method": "llm"} | values
    out = tab.call(fn, {ids[REWORD_INPUTS.index(k)]: v for k, v in values.items()})
    return out.ok, (out.output[1] if out.ok else out.error)


BOTH = pytest.mark.parametrize("send", [via_client, via_browser], ids=["api", "browser"])


def carries_secret(request) -> bool:
    return any(SECRET in value for value in request.headers.values()) or SECRET in json.dumps(request.body)


# ----------------------------------------------------------------------------- the owner's key
@BOTH
def test_a_typed_endpoint_gets_no_server_key(local, owner, send):
    with OpenAIStub(default=Reply.json(ANSWER)) as attacker:
        ok, text = send(local, endpoint=attacker.base_url, key="")
        assert ok, text  # the visitor's own keyless server works...
        assert attacker.chat_requests and not any(carries_secret(r) for r in attacker.requests)
        assert attacker.chat_requests[0].headers["authorization"] == "Bearer not-needed"  # ...with a placeholder
        ok, _ = send(local, endpoint=attacker.base_url, key="sk-visitor-own")
        assert ok and attacker.chat_requests[-1].headers["authorization"] == "Bearer sk-visitor-own"
    assert SECRET not in text


@BOTH
def test_the_owner_endpoint_still_gets_the_owner_key(public, owner, send):
    before = len(owner.chat_requests)
    ok, summary = send(public)
    assert ok, summary  # the owner stub answers only requests with the owner's key
    assert owner.chat_requests[before].headers["authorization"] == f"Bearer {SECRET}"
    assert "2 rewording(s)" in summary and owner.base_url not in summary


@BOTH
def test_a_public_server_calls_no_typed_endpoint(public, send):
    with OpenAIStub(default=Reply.json(ANSWER)) as attacker:
        ok, error = send(public, endpoint=attacker.base_url, key="")
        assert not attacker.requests  # not even a connection
    assert not ok and "RECAP_VISITOR_ENDPOINTS=1" in error


def test_a_public_server_refuses_typed_endpoints_in_both_multi_turn_stages(public):
    tab = RawSession(public.url)
    with OpenAIStub(default=Reply.json(ANSWER)) as attacker:
        endpoint = tab.component(label=ENDPOINT_LABEL)
        extract = tab.call(tab.event(api_name="extract_parts"),
                           {tab.component(elem_id="baseline-prompt"): BASELINE, endpoint: attacker.base_url})
        fuse = tab.call(tab.event(api_name="fuse_parts"), {tab.component(label="source"): "rain",
                                                           endpoint: attacker.base_url})
        assert not attacker.requests
    assert not extract.ok and "RECAP_VISITOR_ENDPOINTS=1" in extract.error
    assert not fuse.ok  # stage 2 without stage 1 is refused too, before anything is sent


def test_the_public_page_shows_the_endpoint_box_off_and_says_why(public, local):
    page, local_page = RawSession(public.url), RawSession(local.url)
    box = page.components[page.component(label=ENDPOINT_LABEL)]["props"]
    assert box["interactive"] is False and "RECAP_VISITOR_ENDPOINTS=1" in box["info"]
    assert local_page.components[local_page.component(label=ENDPOINT_LABEL)]["props"].get("interactive") is not False


# ----------------------------------------------------------------------------- what comes back
@BOTH
def test_an_html_page_answered_with_200_is_a_sentence(local, send):
    page = Reply.raw(200, f"<html><body>{MARKER}</body></html>".encode(), {"Content-Type": "text/html"})
    with OpenAIStub(default=page) as attacker:
        ok, error = send(local, endpoint=attacker.base_url)
    assert not ok and "not a chat completion" in error and "HTTP 200" in error
    assert MARKER not in error and "went wrong" not in error


@BOTH
def test_error_bodies_of_a_typed_endpoint_are_not_shown(local, send):
    with OpenAIStub(default=Reply.error(404, MARKER)) as attacker:
        ok, error = send(local, endpoint=attacker.base_url)
    assert not ok and "HTTP 404 Not Found" in error and MARKER not in error


@BOTH
def test_an_oversized_answer_is_refused(local, send):
    huge = {"rewordings": ["rain on a tin roof, " + "drip " * (LIMITS.llm_answer_bytes // 5)]}
    with OpenAIStub(default=Reply.json(huge)) as attacker:
        ok, error = send(local, endpoint=attacker.base_url)
    assert not ok and "more than 256 KiB" in error


# ----------------------------------------------------------------------------- hostile values
# (values, what the sentence says): Gradio refuses some values itself, with its own sentence.
HOSTILE = [
    ({"seed": float("nan")}, "Seed"),
    ({"seed": 2**40}, "Seed"),
    ({"seed": -1}, "minimum value 0"),
    ({"n": float("nan")}, "How many rewordings"),
    ({"n": 10**6}, "maximum value 20"),
    ({"n": 2.5}, "How many rewordings"),
    ({"method": "auto"}, "not in the list of choices"),
    ({"distance": "far"}, "not in the list of choices"),
    ({"prompt": "rain\x00\x1b[2J on a roof"}, "control characters"),
    ({"distance": "custom", "instruction": "x" * 10**6}, "Custom instruction"),
    ({"endpoint": "file:///etc/passwd"}, "http(s) URL"),
    ({"endpoint": "http://user:pw@127.0.0.1:1/v1"}, "user name or password"),
    ({"endpoint": "http://127.0.0.1:1/v1?x=1"}, "no blanks, query or fragment"),
    ({"endpoint": "http://" + "a" * 10**4}, "characters long"),
    ({"key": "sk-a\r\nX-Injected: 1"}, "API key"),
]


@pytest.mark.parametrize(("values", "named"), HOSTILE, ids=[next(iter(h[0])) + str(i) for i, h in enumerate(HOSTILE)])
def test_hostile_values_get_a_sentence_and_send_nothing(local, owner, values, named):
    before = len(owner.requests)
    ok, error = via_browser(local, **values)
    assert not ok and named in error and "went wrong" not in error
    assert len(owner.requests) == before


def test_hostile_values_through_the_api(public, owner):
    before = len(owner.requests)
    for kwargs, named in [({"n": 1.5}, "How many rewordings"), ({"seed": 1e300}, "Seed"),
                          ({"distance": "custom", "instruction": "\x07" * 10}, "control characters")]:
        ok, error = via_client(public, **kwargs)
        assert not ok and named in error
    assert len(owner.requests) == before


# ----------------------------------------------------------------------------- Stop
def test_stop_abandons_a_hanging_llm_request(local):
    arrived = threading.Event()

    def hang(body):
        arrived.set()
        return Reply.hang()

    with OpenAIStub(default=hang) as attacker:
        client = local.client
        job = client.submit(EMPTY_TABLE, BASELINE, "llm", "light", "", 1, 0, "", attacker.base_url, "", "",
                            api_name="/recaption")
        assert arrived.wait(30)
        t0 = time.monotonic()
        client.predict(api_name="/stop_rewording")
        with pytest.raises(AppError, match="Stopped"):
            job.result(timeout=30)
        assert time.monotonic() - t0 < 5  # not the 60 s the request would wait for an answer


# ----------------------------------------------------------------------------- the core
def test_llm_endpoint_sends_the_server_key_only_to_the_server_endpoint(tmp_path):
    owner_url = "http://127.0.0.1:9/v1"
    s = Settings(home=tmp_path, openai_api_key=SECRET, llm_base_url=owner_url)

    def key_for(base_url, api_key=None, settings=s):
        return llm_endpoint(RecaptionConfig(base_url=base_url), api_key, settings=settings).api_key

    assert key_for(None) == key_for(owner_url + "/") == key_for("HTTP://127.0.0.1:9/v1") == SECRET
    for other in ("http://127.0.0.1:9/v2", "http://127.0.0.1:10/v1", "https://127.0.0.1:9/v1", "http://localhost:9/v1"):
        assert key_for(other) is None, other
    assert key_for("http://evil.example/v1", "sk-visitor") == "sk-visitor"
    openai_only = Settings(home=tmp_path, openai_api_key=SECRET)  # no OPENAI_BASE_URL: api.openai.com
    assert key_for("https://api.openai.com/v1", settings=openai_only) == SECRET
    assert key_for("https://api.openai.com.evil.example/v1", settings=openai_only) is None
    assert llm_endpoint(RecaptionConfig(), settings=openai_only).url == "https://api.openai.com/v1"


def test_llm_endpoint_applies_the_visitor_policy(tmp_path):
    def endpoint(base_url=None, model=None, **kw):
        s = Settings(home=tmp_path, openai_api_key=SECRET, llm_base_url="http://10.0.0.5:8000/v1", **kw)
        return llm_endpoint(RecaptionConfig(base_url=base_url, model=model), settings=s, visitor=True)

    with pytest.raises(BadInput, match="RECAP_VISITOR_ENDPOINTS=1"):
        endpoint("http://127.0.0.1:1/v1", visitor_endpoints=False)
    for internal in ("http://127.0.0.1:1/v1", "http://169.254.169.254/latest", "http://[::1]:8000/v1",
                     "http://localhost:11434/v1"):
        with pytest.raises(BadInput, match="internal address"):
            endpoint(internal, public=True, visitor_endpoints=True)
    assert endpoint("http://127.0.0.1:1/v1", visitor_endpoints=True).api_key is None  # locally allowed, keyless
    own = endpoint(public=True, visitor_endpoints=False)
    assert own.api_key == SECRET and own.shown_url == SERVER_ENDPOINT  # the internal URL is not shown
    with pytest.raises(BadInput, match="your own API key"):  # the owner's key with the owner's model only
        endpoint(model="gpt-4.5-preview", public=True)


def test_records_and_errors_never_hold_the_owner_url_the_key_or_a_typed_host_body(tmp_path, owner):
    s = Settings(home=tmp_path, openai_api_key=SECRET, llm_base_url=owner.base_url, public=True, visitor_endpoints=True)
    result = recaption(BASELINE, RecaptionConfig(n=2, method="llm"), settings=s, visitor=True)
    record = json.dumps(result.to_dict())
    assert owner.base_url not in record and SECRET not in record and result.config.base_url is None
    with OpenAIStub(default=Reply.error(500, MARKER)) as internal:
        with pytest.raises(LLMError) as info:
            recaption(BASELINE, RecaptionConfig(method="llm", base_url=internal.base_url, max_retries=0))
    assert "HTTP 500 Internal Server Error" in str(info.value)
    assert MARKER not in str(info.value) + json.dumps(info.value.exchange)


class _Endless(BaseHTTPRequestHandler):
    """Answers 200 with a chunked body (no length announced) of 64 MiB, counting what it got to send."""

    protocol_version = "HTTP/1.1"
    sent = 0

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(1024):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                type(self).sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what the test wants


def test_an_answer_without_a_length_is_cut_off_at_the_limit_not_read_whole():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        endpoint = Endpoint(f"http://127.0.0.1:{server.server_address[1]}/v1", "m")
        with pytest.raises(LLMError) as info:
            chat(endpoint, [{"role": "user", "content": "hi"}], CallOptions(max_retries=0, timeout_s=10))
    finally:
        server.shutdown()
        server.server_close()
    assert info.value.reason == "too-large"
    assert _Endless.sent < 16 * 2**20  # stopped near the limit; socket buffers hold a few MiB at most


def test_all_tries_together_end_within_the_total_time():
    with OpenAIStub(default=Reply.hang()) as stub:
        t0 = time.monotonic()
        with pytest.raises(LLMError) as info:
            chat(Endpoint(stub.base_url, "m"), [{"role": "user", "content": "hi"}],
                 CallOptions(timeout_s=30, max_retries=3, total_s=0.5))
        assert time.monotonic() - t0 < 3
    assert info.value.reason == "timeout" and "0.5 s" in str(info.value)


def test_a_stop_event_abandons_the_call():
    stop = threading.Event()

    def hang(body):
        stop.set()  # "the visitor presses Stop" once the request is there
        return Reply.hang()

    with OpenAIStub(default=hang) as stub:
        t0 = time.monotonic()
        with pytest.raises(Cancelled):
            chat(Endpoint(stub.base_url, "m"), [{"role": "user", "content": "hi"}], CallOptions(timeout_s=30),
                 stop=stop)
        assert time.monotonic() - t0 < 5  # at once, not after the 30 s timeout


def test_cli_base_url_never_gets_the_environment_key(monkeypatch, capsys, tmp_path):
    from recap.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("MY_VLLM_KEY", "sk-vllm-own")
    with OpenAIStub(default=Reply.json({"rewordings": ["rain on metal"]})) as other:
        args = ["recaption", "--prompt", BASELINE, "--method", "llm", "--n", "1", "--base-url", other.base_url]
        assert main(args) == 0
        assert main([*args, "--api-key-env", "MY_VLLM_KEY"]) == 0
        first, second = other.chat_requests
    assert not carries_secret(first) and first.headers["authorization"] == "Bearer not-needed"
    assert second.headers["authorization"] == "Bearer sk-vllm-own"
    assert SECRET not in capsys.readouterr().out
