"""A process killed while writing answers leaves a consistent database holding every answer it acknowledged."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np

from recap.audio_io import write_wav
from recap.study.store import StudyConfig, StudyStore

REPO = Path(__file__).resolve().parents[1]

# Answers as fast as it can, printing each answer id only after submit() has returned (committed).
CHILD = """
import sys, uuid
from pathlib import Path
from recap.study.store import StudyStore

store = StudyStore(Path(sys.argv[1]))
while True:
    rater = store.join(sys.argv[2])
    while (trial := store.trial(rater.rater_id)) is not None:
        answer_id = uuid.uuid4().hex
        store.submit(answer_id, rater.rater_id, trial.slot, "A", comment="x" * 2000)
        print(answer_id, flush=True)
"""


def make_run(home: Path, labels: list[str], seeds: list[int]) -> None:
    folder = home / "runs" / "run1"
    clips = []
    for k, label in enumerate(labels):
        for seed in seeds:
            rel = f"audio/{label}__seed{seed}.wav"
            write_wav(folder / rel, np.random.default_rng(seed + 10 * k).uniform(-0.1, 0.1, (1, 1600)), 16000)
            clips.append({"variant": label, "seed": seed, "audio": rel})
    (folder / "manifest.json").write_text(json.dumps({
        "format": "recap.run/1", "run_id": "run1", "kind": "generate", "created": "2026-01-01T00:00:00+00:00",
        "model": {"name": "tiny", "sample_rate": 16000, "channels": 1}, "config": {}, "seeds": seeds, "clips": clips,
        "variants": [{"label": lab, "prompt": "rain", "method": "baseline" if lab == "baseline" else "synonym",
                      "batch": 0} for lab in labels]}))


def kill_after(home: Path, code: str, acknowledged: int) -> list[str]:
    """Runs the child, SIGKILLs it once it has acknowledged that many answers; returns every id it printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(home), code], stdout=subprocess.PIPE, text=True,
                             env=env, cwd=REPO)
    ids = [child.stdout.readline().strip() for _ in range(acknowledged)]
    os.kill(child.pid, signal.SIGKILL)
    ids += [line.strip() for line in child.stdout if line.strip()]  # printed before the kill landed
    child.stdout.close()
    assert child.wait() == -signal.SIGKILL
    assert all(ids[:acknowledged]), "the child died before acknowledging enough answers"
    return ids


def test_sigkill_mid_write_loses_no_acknowledged_answer(recap_home):
    make_run(recap_home, ["baseline", "reword-1a"], list(range(10)))
    store = StudyStore(recap_home)
    info = store.create(StudyConfig(kind="ab", pairs=["baseline:reword-1a"]), ["run1"])

    printed: list[str] = []
    for acknowledged in (60, 23):  # two kills at different points of the stream
        printed += kill_after(recap_home, info.code, acknowledged)
        with sqlite3.connect(store.db_path) as conn:  # opening it runs WAL recovery
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            stored = {r[0] for r in conn.execute("SELECT answer_id FROM answers")}
        assert set(printed) <= stored
        assert len(stored) - len(printed) <= 2  # at most the one committed per run but not yet printed

    # The study goes on: a rater can still answer after the crashes.
    rater = store.join(info.code, name="after")
    assert store.submit("after-the-crash", rater.rater_id, store.trial(rater.rater_id).slot, "B")
