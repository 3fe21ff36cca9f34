"""Per-session job control: the Stop flag and the scratch folder of one visitor.

A :class:`SessionJobs` lives in a ``gr.State`` (never a module global), so each browser session
has its own: a Stop pressed by one visitor stops only their job. The event helpers below are
what the tabs wire to their buttons: :func:`arm_job` on the click (before the job waits in the
queue), :func:`stop_job` on Stop.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import gradio as gr

STOPPING = "Stopping at the next step…"


class SessionJobs:
    """One visitor's job control, kept in ``gr.State``: the Stop flag and a scratch folder.

    A job calls :meth:`begin` for a fresh ``threading.Event`` it passes to the core as ``stop=``;
    the Stop button calls :meth:`stop`. :meth:`arm` runs when a button is clicked, before the job
    waits in the queue, so a Stop pressed while waiting still stops it.

    ``gr.State`` deep-copies its initial value for every new session: a copy is a fresh object.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._armed = False
        self._scratch: Path | None = None

    def __deepcopy__(self, memo: dict) -> SessionJobs:
        return SessionJobs()

    def arm(self) -> None:
        with self._lock:
            self._event = threading.Event()
            self._armed = True

    def begin(self) -> threading.Event:
        with self._lock:
            if not self._armed:
                self._event = threading.Event()
            self._armed = False
            return self._event

    def stop(self) -> None:
        with self._lock:
            self._event.set()

    @property
    def scratch(self) -> Path:
        """A private temporary folder of this session (previews, checkpoints, downloads)."""
        with self._lock:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="recap-session-"))
            return self._scratch

    def close(self) -> None:
        """Removes the scratch folder (called when Gradio drops the session)."""
        with self._lock:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None


def close_session(jobs: Any) -> None:
    """``gr.State(delete_callback=...)``: cleans up after a session Gradio dropped."""
    if isinstance(jobs, SessionJobs):
        jobs.close()


def arm_job(jobs: SessionJobs) -> None:
    """The click event before a queued job (no queue limit): a Stop from now on counts."""
    jobs.arm()


def stop_job(jobs: SessionJobs) -> None:
    """The Stop button of a job that checks its flag at every step."""
    jobs.stop()
    gr.Info(STOPPING)


def stop_request(jobs: SessionJobs) -> None:
    """The Stop button of an LLM request (abandoned, not stepped)."""
    jobs.stop()
    gr.Info("Stopping the LLM request…")
