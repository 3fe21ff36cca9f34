"""Listening studies through the running app: 20 raters answer at once over HTTP, nothing lost or doubled."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from recap.generation.grid import GenerationConfig, generate_grid, make_variants, save_run
from recap.study.store import StudyConfig, StudyStore
from recap.ui.rater import MAX_MUSHRA_CLIPS

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

RATERS, ANSWERS = 20, 50
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def study_app(tmp_path_factory, tiny):
    """``python app.py`` serving a 50-item A/B study made from a tiny run: (home, study code, url).

    The server runs in its own process, as in production, so the 20 client threads of the test
    do not share an interpreter lock with it.
    """
    home = tmp_path_factory.mktemp("study-home")
    variants = make_variants("rain on a tin roof", [f"rain variant {i}" for i in range(1, 6)])
    grid = generate_grid(tiny, variants, GenerationConfig(seconds=1.0, steps=2, seeds=list(range(5))))
    run = save_run(grid, tiny, home / "runs")
    config = StudyConfig(kind="ab", name="concurrency", pairs=[f"baseline:variant-{i}" for i in range(1, 6)],
                         questions=["Which better matches the prompt?", "Which sounds cleaner?"], repeats=0, checks=0)
    info = StudyStore(home).create(config, [run.run_id])
    port = free_port()
    env = {**os.environ, "RECAP_HOME": str(home), "RECAP_MODEL": "tiny", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=home, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):  # up to 60 s for the server to come up
            if server.poll() is not None:
                raise RuntimeError(f"app.py exited: {server.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield home, info.code, url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.soak
def test_twenty_raters_through_the_app_store_exactly_one_row_per_answer(study_app):
    home, code, url = study_app
    errors: list[BaseException] = []

    def rater(i: int) -> None:
        try:
            # one browser session with its own gr.State; the clips need not be downloaded to answer here
            client = Client(url, verbose=False, download_files=False)
            client.predict(code, f"rater-{i}", "", api_name="/study_open")
            for k in range(ANSWERS):
                # every input the page sends: answer, comment, two scales, the ABX choice, the page width
                # and the MUSHRA sliders (unused by an A/B trial)
                client.predict(["A", "B", "None", "Cannot decide"][k % 4], f"comment {k}", 3, 3, None, 1366,
                               *[50] * MAX_MUSHRA_CLIPS, api_name="/study_submit")
        except BaseException as exc:  # reported below; a thread must not swallow it
            errors.append(exc)

    threads = [threading.Thread(target=rater, args=(i,)) for i in range(RATERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[:3]
    with sqlite3.connect(home / "study.sqlite") as db:
        rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT answer_id), COUNT(DISTINCT rater_id || '/' || slot) FROM answers").fetchone()
        per_rater = db.execute("SELECT COUNT(*) FROM answers GROUP BY rater_id").fetchall()
    assert rows == (RATERS * ANSWERS,) * 3
    assert sorted(n for (n,) in per_rater) == [ANSWERS] * RATERS
    progress = StudyStore(home).progress(code)
    assert len(progress) == RATERS and all(p.answered == ANSWERS for p in progress)
