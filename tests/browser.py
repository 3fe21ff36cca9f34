"""What the real-browser tests share: Debian's Chromium, its flags, and the app on a free port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox as root, and nothing that reaches for the network (this machine has none).
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
NEEDS_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                                  "(apt-get install chromium; CI installs it)")


@contextlib.contextmanager
def running_app(ctx: Any) -> Iterator[Any]:
    """The app of ``ctx`` served on a free local port; yields the launched Blocks."""
    from recap.ui.app import build_app, launch_options

    demo = build_app(ctx)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                **launch_options(ctx))
    try:
        yield demo
    finally:
        demo.close()


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api")
    # expect() waits 5 s by default: a 2-core machine running the suite on two workers can take
    # longer to answer an event, which is slowness, not a failure.
    sync_api.expect.set_options(timeout=30_000)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
