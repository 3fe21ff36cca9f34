"""Tools for attacking a launched recap the way a stranger would: over HTTP, with nothing but the page.

``served(settings)`` launches the real app on 127.0.0.1 and yields ``(context, url)``.
:class:`RawSession` speaks Gradio's queue protocol as the browser does (``POST
/gradio_api/queue/join``, then the server-sent events of ``GET /gradio_api/queue/data``), so it
reaches every event of the page, also those marked private that ``gradio_client`` cannot call.
Each ``RawSession`` is one browser tab: its own ``session_hash``, hence its own ``gr.State``.

Find an event by what a visitor sees (a button's label) or by its API name::

    with served(Settings(home=tmp, model="tiny", public=True)) as (ctx, url):
        tab = RawSession(url)
        out = tab.call(tab.event(button="Create study"), {...})
        assert not out.ok and "experimenter" in out.error
"""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recap.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(settings: Settings) -> Iterator[tuple[Any, str]]:
    """Launches the app built from ``settings`` (as ``python app.py`` does) on a free port."""
    from recap.ui.app import build_app, launch_options
    from recap.ui.context import AppContext

    ctx = AppContext.create(settings)
    demo = build_app(ctx)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                **launch_options(ctx))
    try:
        yield ctx, demo.local_url
    finally:
        demo.close()


@dataclass
class Outcome:
    """What one event gave back: its output values, or the error the page would show."""

    ok: bool
    output: list[Any] = field(default_factory=list)
    error: str = ""
    # gr.Info / gr.Warning texts sent while the event ran (shown as toasts)
    logs: list[dict[str, Any]] = field(default_factory=list)


class RawSession:
    """One browser tab talking to the queue directly."""

    def __init__(self, url: str, *, query: str = "") -> None:
        self.url = url.rstrip("/") + "/"
        self.session_hash = uuid.uuid4().hex[:12]
        self.query = query
        with urllib.request.urlopen(self.url + "config", timeout=30) as r:
            self.config = json.loads(r.read())
        self.components = {c["id"]: c for c in self.config["components"]}

    # -- finding events ------------------------------------------------------------------

    def component(self, *, label: str | None = None, elem_id: str | None = None, value: str | None = None) -> int:
        """The id of the one component with this label, elem_id or (for buttons) text."""
        found = [cid for cid, c in self.components.items()
                 if (label is None or c.get("props", {}).get("label") == label)
                 and (elem_id is None or c.get("props", {}).get("elem_id") == elem_id)
                 and (value is None or c.get("props", {}).get("value") == value)]
        if len(found) != 1:
            raise LookupError(f"{len(found)} components match label={label!r} elem_id={elem_id!r} value={value!r}")
        return found[0]

    def event(self, *, button: str | None = None, api_name: str | None = None, trigger: str = "click",
              index: int = 0) -> int:
        """The fn_index of a button's ``trigger`` event (its ``index``-th one) or of an API name."""
        deps = self.config["dependencies"]
        if api_name is not None:
            hits = [i for i, d in enumerate(deps) if d.get("api_name") == api_name]
        else:
            target = self.component(value=button)
            hits = [i for i, d in enumerate(deps) if [target, trigger] in [list(t) for t in d.get("targets", [])]]
        if len(hits) <= index:
            raise LookupError(f"no event {index} for button={button!r} api_name={api_name!r}")
        return deps[hits[index]]["id"] if "id" in deps[hits[index]] else hits[index]

    def inputs(self, fn_index: int) -> list[int]:
        return list(self._dep(fn_index)["inputs"])

    def outputs(self, fn_index: int) -> list[int]:
        return list(self._dep(fn_index)["outputs"])

    def _dep(self, fn_index: int) -> dict[str, Any]:
        for i, d in enumerate(self.config["dependencies"]):
            if d.get("id", i) == fn_index:
                return d
        raise LookupError(f"no event {fn_index}")

    # -- calling -------------------------------------------------------------------------

    def call(self, fn_index: int, values: dict[int, Any] | list[Any] | None = None, *, timeout: float = 120.0) -> Outcome:
        """Sends one event with ``values`` (by input component id, or a full list in input order;
        inputs not given are sent as the browser sends an untouched component: its value in the
        page's config, None for a gr.State) and waits for its result."""
        ids = self.inputs(fn_index)
        if isinstance(values, list):
            data = values
        else:
            values = values or {}
            data = [values[i] if i in values else self._initial(i) for i in ids]
        body = {"data": data, "event_data": None, "fn_index": fn_index, "trigger_id": None,
                "session_hash": self.session_hash}
        request = urllib.request.Request(self.url + "gradio_api/queue/join" + self.query, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                event_id = json.loads(r.read())["event_id"]
        except urllib.error.HTTPError as exc:
            return Outcome(False, error=f"HTTP {exc.code}: {exc.read().decode(errors='replace')}")
        return self._wait(event_id, timeout)

    def _initial(self, component_id: int) -> Any:
        c = self.components[component_id]
        return None if c.get("type") == "state" else c.get("props", {}).get("value")

    def _wait(self, event_id: str, timeout: float) -> Outcome:
        logs: list[dict[str, Any]] = []
        with urllib.request.urlopen(f"{self.url}gradio_api/queue/data?session_hash={self.session_hash}",
                                    timeout=timeout) as stream:
            for raw in stream:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "log":
                    logs.append(msg)
                if msg.get("msg") == "process_completed":
                    out = msg.get("output") or {}
                    if msg.get("success") and "error" not in out:
                        return Outcome(True, list(out.get("data", [])), logs=logs)
                    return Outcome(False, error=str(out.get("error") or out), logs=logs)
        return Outcome(False, error="the stream ended without a result", logs=logs)

    def fetch(self, path: str) -> tuple[int, bytes]:
        """GETs ``gradio_api/file=<path>`` as a browser would; (status, body)."""
        try:
            with urllib.request.urlopen(f"{self.url}gradio_api/file={path}", timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""


def upload(url: str, path: Path, content_type: str = "application/octet-stream") -> dict[str, Any]:
    """Uploads a file as the browser does; returns the FileData value a gr.File / gr.Audio input takes."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url.rstrip("/") + "/gradio_api/upload", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as r:
        (uploaded,) = json.loads(r.read())
    return {"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}


def disk_usage(*folders: Path) -> int:
    """Bytes under ``folders`` (missing ones count 0)."""
    total = 0
    for folder in folders:
        if Path(folder).exists():
            total += sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return total


def gradio_cache() -> Path:
    """Gradio's cache folder (uploads and every file handed to a browser)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


__all__ = ["Outcome", "RawSession", "disk_usage", "free_port", "gradio_cache", "served", "upload"]
