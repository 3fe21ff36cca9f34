"""Writing figures: HTML that opens offline, and PNG and SVG for papers.

Every figure is a plotly figure. Its HTML references one ``plotly.min.js`` written beside it (not
4 MB of JavaScript per file); its PNG and SVG come from kaleido, which drives a Chromium (Debian's
``chromium``, which ``setup.sh`` installs). Where none can be driven, the HTML is still written and
the log says why.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

from recap.paths import atomic_write_bytes

logger = logging.getLogger(__name__)

STATIC_FORMATS = ("png", "svg")
# Print size of a static figure: a two-column paper's full width at 2x for the PNG.
STATIC_SCALE = 2


def write_if_changed(path: Path, data: bytes) -> bool:
    """Writes ``data`` atomically unless ``path`` already holds it (re-running an analysis rewrites
    nothing, and file times say when a result last changed); True when it wrote."""
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def static_export_available() -> bool:
    """True when kaleido is installed (it still needs a Chromium to drive, checked when used)."""
    try:
        import kaleido  # noqa: F401  (only whether it is installed)
    except ImportError:
        return False
    return True


_BROWSER_LOCK = threading.Lock()


def _browser() -> None:
    """Starts kaleido's browser once per process and keeps it: each figure then takes about 0.2 s
    instead of the 2.7 s of starting a Chromium for every image (measured on the 2-core machine)."""
    with _BROWSER_LOCK:  # two threads saving figures at once start one browser
        _start_browser()


@functools.cache
def _start_browser() -> None:
    import kaleido

    kaleido.start_sync_server(silence_warnings=True)
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)


def save_figure(fig: Any, path_stem: str | Path, static: bool = True) -> list[Path]:
    """Writes ``<stem>.html`` (always) and, with ``static``, ``<stem>.png`` and ``<stem>.svg``.

    Writes are atomic, and a file whose content would not change is left alone.

    Returns:
        The paths written or confirmed up to date.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    js = stem.parent / "plotly.min.js"
    if not js.exists():
        from plotly.offline import get_plotlyjs

        atomic_write_bytes(js, get_plotlyjs().encode("utf-8"))
    html_path = stem.with_suffix(".html")
    # A fixed div id keeps the HTML identical for an identical figure (plotly's default is random).
    html = fig.to_html(include_plotlyjs="directory", full_html=True, div_id=f"recap-{stem.name}")
    write_if_changed(html_path, html.encode("utf-8"))
    written = [html_path]
    if not static:
        return written
    if not static_export_available():
        logger.warning("PNG/SVG export needs the kaleido package and a Chromium; wrote %s only", html_path.name)
        return written
    for fmt in STATIC_FORMATS:
        try:
            _browser()
            with warnings.catch_warnings():  # plotly notes that the server ignores per-call browser options
                warnings.simplefilter("ignore", UserWarning)
                data = fig.to_image(format=fmt, scale=STATIC_SCALE if fmt == "png" else 1)
        except Exception as exc:  # kaleido raises several types when no browser can be driven
            logger.warning("%s export of %s failed (%s); the HTML figure was written", fmt.upper(), stem.name, exc)
            return written
        path = stem.with_suffix(f".{fmt}")
        write_if_changed(path, data)
        written.append(path)
    return written
