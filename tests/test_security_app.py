"""What one request can make a public server hold: uploads and request bodies are bounded before
they reach the disk or the memory, and nothing is left behind by a refused upload.

Attacks go over real HTTP to the launched app, as a stranger's browser or script would send them.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
from attack import RawSession, disk_usage, gradio_cache, served

from recap.config import Settings
from recap.limits import LIMITS

MB = 1024 * 1024
BOUNDARY = "recapattackboundary"


@pytest.fixture(scope="module")
def public_app(tmp_path_factory):
    with served(Settings(home=tmp_path_factory.mktemp("public-home"), model="tiny", public=True)) as app:
        yield app


def _post(url: str, path: str, body: bytes | None, headers: dict[str, str], chunks: int = 0) -> tuple[int, str]:
    """POSTs ``body`` (in ``chunks`` pieces with chunked encoding when > 0, so no length is declared)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        if chunks:
            size = -(-len(body) // chunks)
            conn.request("POST", path, body=(body[i:i + size] for i in range(0, len(body), size)), headers=headers,
                         encode_chunked=True)
        else:
            conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (BrokenPipeError, ConnectionResetError):
        return 413, "connection closed by the server"  # refused while still sending
    finally:
        conn.close()


def _multipart(*sizes: int) -> bytes:
    out = b""
    for i, n in enumerate(sizes):
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"clip{i}.wav\"\r\n"
                f"Content-Type: audio/wav\r\n\r\n").encode() + b"\0" * n + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


UPLOAD_HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def test_a_small_upload_is_accepted(public_app):
    _, url = public_app
    status, body = _post(url, "/gradio_api/upload", _multipart(1000), UPLOAD_HEADERS)
    assert status == 200 and body.endswith('clip0.wav"]')


@pytest.mark.parametrize("chunks", [0, 64], ids=["declared-length", "chunked"])
def test_an_upload_over_the_limit_is_refused_and_leaves_nothing_on_disk(public_app, chunks):
    _, url = public_app
    before = disk_usage(gradio_cache())
    status, body = _post(url, "/gradio_api/upload", _multipart(LIMITS.upload_mb * MB + MB), UPLOAD_HEADERS, chunks)
    assert status == 413
    assert "larger than this server accepts" in body or "maximum allowed size" in body or "closed" in body
    assert disk_usage(gradio_cache()) - before < MB  # no partial file kept


def test_many_files_each_under_the_limit_cannot_add_up_past_it(public_app):
    _, url = public_app
    before = disk_usage(gradio_cache())
    each = LIMITS.upload_mb * MB // 4
    status, _ = _post(url, "/gradio_api/upload", _multipart(*[each] * 5), UPLOAD_HEADERS, chunks=40)
    assert status == 413
    assert disk_usage(gradio_cache()) - before < MB


def test_an_event_body_over_the_limit_is_refused_before_it_is_read(public_app):
    _, url = public_app
    tab = RawSession(url)
    fn = tab.event(api_name="study_open")
    huge = json.dumps({"data": ["x" * (LIMITS.body_mb * MB + MB)], "fn_index": fn, "session_hash": "abc"}).encode()
    status, body = _post(url, "/gradio_api/queue/join", huge, {"Content-Type": "application/json"})
    assert status == 413 and "larger than this server accepts" in body
    # Without a declared length the guard stops the read midway; FastAPI reports the broken body
    # as its own 400 rather than the guard's 413. Either way the event never runs.
    status, _ = _post(url, "/gradio_api/queue/join", huge, {"Content-Type": "application/json"}, chunks=16)
    assert status in (400, 413)


def test_the_server_keeps_working_after_refusals(public_app):
    _, url = public_app
    tab = RawSession(url)
    out = tab.call(tab.event(api_name="study_open"), {})
    # an ordinary sentence about the empty code: the queue still answers
    assert not out.ok and "code" in out.error and "went wrong" not in out.error
