"""Listening studies: where they are kept, how raters join them and how answers are stored.

A study is a fixed list of items made from run folders (:mod:`recap.study.items`: pairs of clips
for A/B, single clips for ratings) with loudness-matched listening copies under opaque names in
``RECAP_HOME/studies/<code>/audio/``. Each rater sees every item, in an order and with A/B sides
drawn from a seed recorded with the rater, plus optional repeated and obvious-answer items as
attention checks. Summaries are in :mod:`recap.study.stats`.

Blind means blind: which copy is which condition (the answer key: config, items, the copies'
sources) is kept in ``study.sqlite`` and ``RECAP_HOME/study_keys/<code>.json``, and neither that
folder nor ``studies/`` is ever served; raters get per-rater copies with random names
(:func:`recap.study.items.rater_copy`). A rater's id is their secret resume code: only
:meth:`StudyStore.join` hands it out, to that rater; progress and answers name raters by a
:func:`pseudonym`. Every value a request carries is bounded here or in
:meth:`StudyConfig.validate`, so the web app, its API and the CLI share the same checks.

Storage is one SQLite file, ``RECAP_HOME/study.sqlite``:
- WAL mode, so raters reading never block a rater writing;
- ``synchronous=FULL``: every commit is fsynced, so an acknowledged answer survives a crash of
  the process *and* of the machine (NORMAL+WAL would survive only the former); an fsync per human
  answer costs nothing noticeable;
- a new connection per operation (safe from any thread), a busy timeout, ``BEGIN IMMEDIATE`` for
  writes, and answers inserted with ``ON CONFLICT DO NOTHING`` on a caller-generated answer id
  and on (rater, slot): a resubmission, a double click or a second tab never doubles an answer;
- the schema version is ``PRAGMA user_version``; :data:`MIGRATIONS` are applied in order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from recap.errors import BadInput
from recap.limits import LIMITS, text, whole
from recap.paths import atomic_write_json
from recap.study import abx, mushra
from recap.study.anchors import HIDDEN_REFERENCE
from recap.study.items import (
    AB_ANSWERS,
    ABX_ANSWERS,
    SCALES,
    IncompleteAnswer,
    Scale,
    StudyConfig,
    StudyError,
    StudyItem,
    Trial,
    build_items,
    plan_trials,
    rater_copy,
)

log = logging.getLogger(__name__)

__all__ = ["AB_ANSWERS", "ABX_ANSWERS", "DEVICES", "PLAY_EVENTS", "HIDDEN_REFERENCE", "IncompleteAnswer", "SCALES", "Scale", "StudyConfig", "StudyError", "StudyItem", "Trial", "plan_trials",
           "StudyStore", "StudyInfo", "Rater", "ShownTrial", "RaterProgress", "normalize_code", "pseudonym",
           "rater_copy", "MIGRATIONS"]

# What an A/B answer means once the shown sides are mapped back to the item's real sides.
_PREFERRED = {"None": "none", "Cannot decide": "undecided"}
# Waiting this long for a lock before giving up; generous because a rater's click should never fail.
BUSY_TIMEOUT_S = 30.0
MAX_COMMENT_CHARS = LIMITS.text_chars
MAX_NAME_CHARS = 80
MAX_RUNS = 64  # runs one study is made from
# Raters of one study: far more than any listening test, and it bounds what a stranger holding a
# study link can add to the database by joining over and over.
MAX_RATERS = 2000
# Codes avoid look-alike characters (0/o, 1/l/i) because raters type them.
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_CODE_RE = re.compile(r"^[a-z0-9]{4}-[a-z0-9]{4}$")
_ANSWER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_RATER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")  # what secrets.token_urlsafe makes
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")  # a run id is a plain folder name
# What the page reports of a player: it started, it paused, it reached the end.
PLAY_EVENTS = ("play", "pause", "end")
DEVICES = ("phone", "desktop")
# Play events one rater may log per trial: far more than anyone listens, and it bounds the table.
MAX_PLAYS_PER_TRIAL = 400
# A "pause" and an "end" of the same play may reach the server in either order, this far apart.
END_AFTER_PAUSE_S = 5.0
REFERENCE_CLIP = "reference"


@dataclass(frozen=True)
class StudyInfo:
    code: str
    config: StudyConfig
    created: str
    folder: Path
    items: list[StudyItem]
    reference_clip: str | None = None  # relative to folder
    stimuli: list[mushra.Stimulus] = field(default_factory=list)  # MUSHRA only
    notes: list[str] = field(default_factory=list)  # what creation had to say (a skipped anchor)

    def stimuli_of(self, item_id: int) -> list[mushra.Stimulus]:
        return [s for s in self.stimuli if s.item_id == item_id]


@dataclass(frozen=True)
class Rater:
    rater_id: str  # also the rater's resume code: a secret, shown only to this rater
    code: str
    name: str | None
    seed: int

    @property
    def pseudonym(self) -> str:
        return pseudonym(self.rater_id)


@dataclass(frozen=True)
class ShownTrial:
    """What a rater is shown for one slot; ``clips`` are absolute paths in shown order (A, B; A, B,
    X for ABX; the unlabelled stimuli for MUSHRA), named to the rater by ``labels``. ``required``
    are the clips to play to the end before answering when ``must_play``."""

    code: str
    rater_id: str
    slot: int
    total: int
    kind: str
    title: str
    question: str
    prompt: str | None
    clips: list[Path]
    reference: Path | None
    scales: list[Scale]
    labels: list[str] = field(default_factory=list)
    must_play: bool = False
    required: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RaterProgress:
    rater: str  # the pseudonym, never the resume code
    name: str | None
    answered: int
    total: int
    last_answer: str | None


def _migration_1(conn: sqlite3.Connection) -> None:
    for sql in (
        """CREATE TABLE studies (code TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('ab', 'rating')),
               config TEXT NOT NULL, reference_clip TEXT, created TEXT NOT NULL)""",
        """CREATE TABLE items (code TEXT NOT NULL REFERENCES studies(code), item_id INTEGER NOT NULL,
               role TEXT NOT NULL CHECK (role IN ('test', 'check')), question TEXT NOT NULL,
               condition TEXT NOT NULL, name_a TEXT NOT NULL, label_a TEXT NOT NULL, clip_a TEXT NOT NULL,
               prompt TEXT NOT NULL, name_b TEXT, label_b TEXT, clip_b TEXT, expected TEXT,
               PRIMARY KEY (code, item_id))""",
        """CREATE TABLE raters (rater_id TEXT PRIMARY KEY, code TEXT NOT NULL REFERENCES studies(code),
               name TEXT, seed INTEGER NOT NULL, joined TEXT NOT NULL, UNIQUE (code, name))""",
        """CREATE TABLE answers (answer_id TEXT PRIMARY KEY, rater_id TEXT NOT NULL REFERENCES raters(rater_id),
               slot INTEGER NOT NULL, item_id INTEGER NOT NULL, repeat INTEGER NOT NULL,
               swapped INTEGER NOT NULL, choice TEXT, preferred TEXT, ratings TEXT,
               comment TEXT NOT NULL DEFAULT '', time_ms INTEGER, created TEXT NOT NULL,
               UNIQUE (rater_id, slot))""",
    ):
        conn.execute(sql)


def _migration_2(conn: sqlite3.Connection) -> None:
    # Raters no longer resume by name (anyone typing a name would continue that rater's session),
    # so two raters may share one: the table is rebuilt without UNIQUE (code, name). Runs with
    # foreign keys off (see StudyStore.connect), as SQLite's procedure for rebuilding a table asks.
    conn.execute("""CREATE TABLE raters_new (rater_id TEXT PRIMARY KEY, code TEXT NOT NULL REFERENCES studies(code),
                        name TEXT, seed INTEGER NOT NULL, joined TEXT NOT NULL)""")
    conn.execute("INSERT INTO raters_new SELECT rater_id, code, name, seed, joined FROM raters")
    conn.execute("DROP TABLE raters")
    conn.execute("ALTER TABLE raters_new RENAME TO raters")
    conn.execute("CREATE INDEX raters_by_study ON raters (code, joined)")
    if conn.execute("PRAGMA foreign_key_check").fetchall():
        raise StudyError("study database: answers refer to missing raters; not migrating it")


def _migration_3(conn: sqlite3.Connection) -> None:
    # MUSHRA and ABX: the studies table is rebuilt for its wider CHECK on kind (and gains notes);
    # stimuli of MUSHRA trials; answers gain what was shown, scores, X, correctness, plays and the
    # device; play events get a table. Old answers keep NULL in the new columns.
    conn.execute("""CREATE TABLE studies_new (code TEXT PRIMARY KEY,
                        kind TEXT NOT NULL CHECK (kind IN ('ab', 'rating', 'mushra', 'abx')),
                        config TEXT NOT NULL, reference_clip TEXT, created TEXT NOT NULL, notes TEXT)""")
    conn.execute("INSERT INTO studies_new SELECT code, kind, config, reference_clip, created, NULL FROM studies")
    conn.execute("DROP TABLE studies")
    conn.execute("ALTER TABLE studies_new RENAME TO studies")
    conn.execute("""CREATE TABLE stimuli (code TEXT NOT NULL REFERENCES studies(code), item_id INTEGER NOT NULL,
                        stimulus INTEGER NOT NULL, condition TEXT NOT NULL, label TEXT NOT NULL, clip TEXT NOT NULL,
                        PRIMARY KEY (code, item_id, stimulus))""")
    for column in ("shown TEXT", "scores TEXT", "x_side TEXT", "correct INTEGER", "plays TEXT",
                   "listen_s REAL", "device TEXT"):
        conn.execute(f"ALTER TABLE answers ADD COLUMN {column}")
    conn.execute("""CREATE TABLE plays (play_id INTEGER PRIMARY KEY AUTOINCREMENT,
                        rater_id TEXT NOT NULL REFERENCES raters(rater_id), slot INTEGER NOT NULL,
                        clip TEXT NOT NULL, started TEXT NOT NULL, started_s REAL NOT NULL,
                        seconds REAL, ended INTEGER NOT NULL DEFAULT 0, stopped_s REAL)""")
    conn.execute("CREATE INDEX plays_by_trial ON plays (rater_id, slot, clip)")
    if conn.execute("PRAGMA foreign_key_check").fetchall():
        raise StudyError("study database: rows refer to missing studies; not migrating it")


# Applied in order; MIGRATIONS[i] takes the schema from version i to i + 1. Append, never edit.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_2, _migration_3]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _new_code() -> str:
    chars = [secrets.choice(_CODE_ALPHABET) for _ in range(8)]
    return "".join(chars[:4]) + "-" + "".join(chars[4:])


def normalize_code(code: str) -> str:
    """Cleans a typed study code; raises :class:`StudyError` if it is not one."""
    cleaned = str(code or "")[:100].strip().lower()
    if not _CODE_RE.match(cleaned):
        raise StudyError(f"{str(code)[:40]!r} is not a study code (they look like 'abcd-2345')")
    return cleaned


def pseudonym(rater_id: str) -> str:
    """How a rater is named to the experimenter: 8 hex digits of the SHA-256 of their id.

    Stable across tables and exports, and useless for resuming: the resume code has 72 random
    bits, which 32 bits of its hash cannot give back.
    """
    return hashlib.sha256(str(rater_id).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class StudyStore:
    """All study storage under one ``home`` (RECAP_HOME). Holds only paths: share it freely."""

    home: Path

    @property
    def db_path(self) -> Path:
        return Path(self.home) / "study.sqlite"

    @property
    def studies_dir(self) -> Path:
        """Listening copies (``<code>/audio/``); never served, raters get copies of them."""
        return Path(self.home) / "studies"

    @property
    def keys_dir(self) -> Path:
        """Answer keys (``<code>.json``): outside every folder the web server may serve."""
        return Path(self.home) / "study_keys"

    def key_path(self, code: str) -> Path:
        """The answer key of a study: config, items and the listening copies' sources."""
        return self.keys_dir / f"{normalize_code(code)}.json"

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A fresh, migrated connection; with ``write`` the block is one IMMEDIATE transaction."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")  # persistent; a no-op once set
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)  # before foreign keys are on: a migration may rebuild a table
            conn.execute("PRAGMA foreign_keys = ON")
            if write:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if write:
                conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
            return
        conn.execute("BEGIN IMMEDIATE")  # re-read under the lock: another process may have migrated
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            conn.execute("ROLLBACK")
            raise StudyError(f"{self.db_path}: schema version {version} is newer than this recap ({len(MIGRATIONS)})")
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            migration(conn)
            conn.execute(f"PRAGMA user_version = {number}")
            log.info("study database migrated to schema version %d", number)
        conn.execute("COMMIT")
        if version < 2:
            self._move_old_keys()

    def _move_old_keys(self) -> None:
        """Studies made before answer keys left the study folder kept ``studies/<code>/study.json``;
        move each to ``study_keys/<code>.json`` (once, with the schema migration that follows it)."""
        if not self.studies_dir.is_dir():
            return
        for old in self.studies_dir.glob("*/study.json"):
            if _CODE_RE.match(old.parent.name):
                self.keys_dir.mkdir(parents=True, exist_ok=True)
                os.replace(old, self.keys_dir / f"{old.parent.name}.json")
                log.info("moved the answer key of study %s out of its folder", old.parent.name)

    # -- studies -------------------------------------------------------------------------

    def create(self, config: StudyConfig, runs: Sequence[str | Path]) -> StudyInfo:
        """Makes a study from run folders (paths, or run ids under ``home/runs``).

        Writes loudness-matched listening copies into ``studies/<code>/audio/`` (the runs' own
        audio is only read) and the answer key into ``study_keys/<code>.json``, then the study's
        rows in one transaction.

        Raises:
            StudyError: bad config, unknown run, label or pair, no clips to pair, too many items
                (nothing is written then).
        """
        # 1. Check inputs
        config.validate()
        if not isinstance(runs, (list, tuple)) or not 1 <= len(runs) <= MAX_RUNS:
            raise StudyError(f"choose from 1 to {MAX_RUNS} runs")
        run_dirs = [self.run_dir(r) for r in runs]
        if config.seed is None:
            config.seed = secrets.randbits(31)
        code = _new_code()
        # 2. Build items and listening copies in a hidden folder, then move it into place
        tmp = self.studies_dir / f".tmp-{code}"
        folder = self.studies_dir / code
        key = self.key_path(code)
        stimuli: list[mushra.Stimulus] = []
        notes: list[str] = []
        try:
            if config.kind == "mushra":
                items, stimuli, notes, copies = mushra.build(config, run_dirs, tmp)
                reference = None
            elif config.kind == "abx":
                items, copies = abx.build(config, run_dirs, tmp)
                reference = None
            else:
                items, reference, copies = build_items(config, run_dirs, tmp)
            for note in notes:
                log.warning("study %s: %s", code, note)
            created = _now()
            atomic_write_json(key, {"format": "recap.study.store/1", "code": code, "created": created,
                                    "config": asdict(config), "reference_clip": reference, "notes": notes,
                                    "listening_copies": copies, "items": [asdict(i) for i in items],
                                    "stimuli": [asdict(s) for s in stimuli]})
            tmp.rename(folder)
            # 3. Rows, all or nothing
            with self.connect(write=True) as conn:
                conn.execute("INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?)",
                             (code, config.kind, json.dumps(asdict(config)), reference, created, json.dumps(notes)))
                conn.executemany("INSERT INTO stimuli VALUES (?, ?, ?, ?, ?, ?)",
                                 [(code, s.item_id, s.index, s.condition, s.label, s.clip) for s in stimuli])
                conn.executemany(
                    "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(code, i.item_id, i.role, i.question, i.condition, i.name_a, i.label_a, i.clip_a, i.prompt,
                      i.name_b, i.label_b, i.clip_b, i.expected) for i in items])
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
            key.unlink(missing_ok=True)
            raise
        log.info("created study %s with %d items", code, len(items))
        return self.get(code)

    def run_dir(self, run: str | Path) -> Path:
        """A run folder from a path, or from a run id under ``home/runs`` (ids cannot escape it)."""
        if not isinstance(run, (str, Path)) or len(str(run)) > 4096:
            raise StudyError("a run is a run id or a run folder's path")
        path = Path(run)
        if (path / "manifest.json").is_file():
            return path
        if not _RUN_ID_RE.match(str(run)):
            raise StudyError(f"no run folder {str(run)[:80]!r}")
        path = Path(self.home) / "runs" / str(run)
        if not (path / "manifest.json").is_file():
            raise StudyError(f"no run {str(run)[:80]!r} in {path.parent}")
        return path

    def get(self, code: str) -> StudyInfo:
        """The study with this code (typed codes are cleaned); raises StudyError if there is none."""
        with self.connect() as conn:
            return self._info(conn, normalize_code(code))

    def _info(self, conn: sqlite3.Connection, code: str) -> StudyInfo:
        row = conn.execute("SELECT * FROM studies WHERE code = ?", (code,)).fetchone()
        if row is None:
            raise StudyError(f"no study with code {code!r}")
        items = [StudyItem(**{k: r[k] for k in r.keys() if k != "code"})
                 for r in conn.execute("SELECT * FROM items WHERE code = ? ORDER BY item_id", (code,))]
        stimuli = [mushra.Stimulus(r["item_id"], r["stimulus"], r["condition"], r["label"], r["clip"])
                   for r in conn.execute("SELECT * FROM stimuli WHERE code = ? ORDER BY item_id, stimulus", (code,))]
        return StudyInfo(code, StudyConfig(**json.loads(row["config"])), row["created"],
                         self.studies_dir / code, items, row["reference_clip"], stimuli,
                         json.loads(row["notes"]) if row["notes"] else [])

    def studies(self) -> list[tuple[StudyInfo, int, int]]:
        """Every study, newest first, with its number of raters and answers."""
        with self.connect() as conn:
            rows = conn.execute(
                """SELECT s.code, (SELECT COUNT(*) FROM raters r WHERE r.code = s.code) AS raters,
                          (SELECT COUNT(*) FROM answers a JOIN raters r USING (rater_id) WHERE r.code = s.code)
                          AS answers FROM studies s ORDER BY s.created DESC""").fetchall()
        return [(self.get(r["code"]), r["raters"], r["answers"]) for r in rows]

    # -- raters --------------------------------------------------------------------------

    def join(self, code: str, name: str | None = None, rater_id: str | None = None) -> Rater:
        """Opens a study for a rater and returns who they are.

        A ``rater_id`` (the resume code shown to the rater, and only to them) resumes that rater.
        Anything else makes a new rater; a ``name`` is only a label the experimenter sees (it
        never resumes anyone: a typed name is no secret).

        Raises:
            StudyError: unknown study or resume code, a bad name, or a study that is full.
        """
        info = self.get(code)
        try:
            name = text("a rater name", name, MAX_NAME_CHARS, allow_newlines=False).strip() or None
        except BadInput as exc:
            raise StudyError(str(exc)) from None
        resume = str(rater_id or "")[:100].strip()
        with self.connect(write=True) as conn:
            if resume:
                row = conn.execute("SELECT * FROM raters WHERE rater_id = ? AND code = ?",
                                   (resume, info.code)).fetchone() if _RATER_ID_RE.match(resume) else None
                if row is None:
                    raise StudyError(f"no rater with that resume code in study {info.code}")
                return Rater(row["rater_id"], info.code, row["name"], row["seed"])
            joined = conn.execute("SELECT COUNT(*) FROM raters WHERE code = ?", (info.code,)).fetchone()[0]
            if joined >= MAX_RATERS:
                raise StudyError(f"study {info.code} is full ({MAX_RATERS} raters)")
            rater = Rater(secrets.token_urlsafe(9), info.code, name, secrets.randbits(31))
            conn.execute("INSERT INTO raters VALUES (?, ?, ?, ?, ?)",
                         (rater.rater_id, rater.code, rater.name, rater.seed, _now()))
        return rater

    def _rater(self, conn: sqlite3.Connection, rater_id: str) -> tuple[Rater, StudyInfo, list[Trial]]:
        row = conn.execute("SELECT * FROM raters WHERE rater_id = ?", (str(rater_id)[:100],)).fetchone()
        if row is None:
            raise StudyError("no rater with that resume code")
        info = self._info(conn, row["code"])
        return (Rater(row["rater_id"], row["code"], row["name"], row["seed"]), info,
                plan_trials(info.items, row["seed"], info.config.repeats))

    def trial(self, rater_id: str, slot: int | None = None) -> ShownTrial | None:
        """What to show at ``slot``, or at the first unanswered slot when None (None when done)."""
        with self.connect() as conn:
            rater, info, plan = self._rater(conn, rater_id)
            if slot is None:
                done = {r[0] for r in conn.execute("SELECT slot FROM answers WHERE rater_id = ?", (rater.rater_id,))}
        if slot is None:
            slot = next((t.slot for t in plan if t.slot not in done), None)
            if slot is None:
                return None
        _check_slot(slot, plan)
        layout = _layout(info, rater, plan[slot])
        item, cfg = info.items[plan[slot].item_id], info.config
        reference = layout.reference or info.reference_clip
        return ShownTrial(
            info.code, rater.rater_id, slot, len(plan), cfg.kind, cfg.name, item.question,
            None if cfg.hide_prompt else item.prompt, [info.folder / c for c in layout.clips],
            info.folder / reference if reference else None,
            [SCALES[s] for s in cfg.scales] if cfg.kind == "rating" else [], layout.labels, cfg.must_play,
            layout.required)

    def play(self, rater_id: str, slot: int, clip: str, event: str, now: float | None = None) -> bool:
        """Logs what a player of the rater's page did; True if it changed the log.

        A "play" opens a play of ``clip`` (a name the rater sees: "A", "B", "X", "clip", "1".., or
        "reference") at ``slot``; "pause" closes the open play with its listening seconds, timed by
        this server's clock; "end" closes it as played to the end (or marks so the play a "pause"
        closed just before: players pause as they end). Events for an answered trial change nothing.

        Raises:
            StudyError: an unknown rater, slot, clip or event, or too many events for one trial.
        """
        if event not in PLAY_EVENTS:
            raise StudyError(f"a play event is one of {', '.join(PLAY_EVENTS)} (got {str(event)[:20]!r})")
        now = time.time() if now is None else float(now)
        with self.connect(write=True) as conn:
            rater, info, plan = self._rater(conn, rater_id)
            _check_slot(slot, plan)
            layout = _layout(info, rater, plan[slot])
            if clip not in layout.labels + ([REFERENCE_CLIP] if layout.reference or info.reference_clip else []):
                raise StudyError(f"there is no clip {str(clip)[:20]!r} in this trial")
            if conn.execute("SELECT 1 FROM answers WHERE rater_id = ? AND slot = ?", (rater.rater_id, slot)).fetchone():
                return False
            key = (rater.rater_id, slot, clip)
            open_row = conn.execute("SELECT play_id, started_s FROM plays WHERE rater_id = ? AND slot = ? AND clip = ? "
                                    "AND stopped_s IS NULL ORDER BY play_id DESC LIMIT 1", key).fetchone()
            if event == "play":
                count = conn.execute("SELECT COUNT(*) FROM plays WHERE rater_id = ? AND slot = ?",
                                     (rater.rater_id, slot)).fetchone()[0]
                if count >= MAX_PLAYS_PER_TRIAL:
                    raise StudyError(f"more than {MAX_PLAYS_PER_TRIAL} plays of one trial are not logged")
                if open_row:  # a play that never reported its pause: closed here, not played to the end
                    conn.execute("UPDATE plays SET seconds = ?, stopped_s = ? WHERE play_id = ?",
                                 (max(0.0, now - open_row["started_s"]), now, open_row["play_id"]))
                conn.execute("INSERT INTO plays (rater_id, slot, clip, started, started_s) VALUES (?, ?, ?, ?, ?)",
                             (*key, datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"), now))
                return True
            if open_row:
                conn.execute("UPDATE plays SET seconds = ?, stopped_s = ?, ended = ? WHERE play_id = ?",
                             (max(0.0, now - open_row["started_s"]), now, int(event == "end"), open_row["play_id"]))
                return True
            if event == "end":
                cur = conn.execute(
                    "UPDATE plays SET ended = 1 WHERE play_id = (SELECT play_id FROM plays WHERE rater_id = ? AND "
                    "slot = ? AND clip = ? AND stopped_s >= ? ORDER BY play_id DESC LIMIT 1)",
                    (*key, now - END_AFTER_PAUSE_S))
                return cur.rowcount == 1
            return False

    def plays(self, code: str) -> list[dict]:
        """Every logged play of a study's raters (raters by pseudonym), oldest first."""
        info = self.get(code)
        with self.connect() as conn:
            rows = conn.execute(
                """SELECT p.* FROM plays p JOIN raters r USING (rater_id) WHERE r.code = ?
                   ORDER BY p.play_id""", (info.code,)).fetchall()
        out = []
        for r in rows:
            row = {k: r[k] for k in ("slot", "clip", "started", "seconds")}
            out.append({"rater": pseudonym(r["rater_id"]), **row, "ended": bool(r["ended"])})
        return out

    def submit(self, answer_id: str, rater_id: str, slot: int, choice: str | None = None,
               ratings: dict[str, int] | None = None, comment: str = "", time_ms: int | None = None,
               scores: Mapping[str, Any] | None = None, device: str | None = None) -> bool:
        """Stores one answer; True if stored now, False if this answer id or slot was already stored.

        Args:
            answer_id: Made by the caller once per shown trial (e.g. ``uuid4().hex``) and reused on
                every retry of the same submission; 8-64 characters of ``[A-Za-z0-9_-]``.
            choice: A/B studies: one of :data:`AB_ANSWERS`, as the rater saw the sides; ABX
                studies: one of :data:`ABX_ANSWERS`.
            ratings: Rating studies: ``{scale: 1..5}`` for every scale of the study.
            time_ms: Time from showing the trial to answering, in milliseconds.
            scores: MUSHRA studies: ``{shown clip name: 0..100}`` for every clip of the trial.
            device: "phone" or "desktop" (from the page's width), or None if unknown.

        Raises:
            StudyError: a bad or missing value, or (with ``must_play``) a clip not yet played to
                the end; nothing is stored then.
        """
        # 1. Check what the request carries, before the database is touched
        if not isinstance(answer_id, str) or not _ANSWER_ID_RE.match(answer_id):
            raise StudyError(f"answer id {str(answer_id)[:80]!r} must be 8-64 characters of A-Z a-z 0-9 _ -")
        try:
            comment = text("the comment", comment or "", MAX_COMMENT_CHARS)
            if time_ms is not None:
                time_ms = whole("time_ms", time_ms, 0, 10**12)
        except BadInput as exc:
            raise StudyError(str(exc)) from None
        if choice is not None and choice not in AB_ANSWERS + ABX_ANSWERS:
            raise StudyError(f"choose one of {', '.join(AB_ANSWERS)} (got {str(choice)[:40]!r})")
        if ratings is not None and (not isinstance(ratings, dict) or len(ratings) > len(SCALES)):
            raise StudyError(f"ratings must give a whole number 1-5 for each scale (got {str(ratings)[:80]})")
        if scores is not None and (not isinstance(scores, Mapping) or len(scores) > 2 * mushra.MAX_SCORE):
            raise StudyError(f"scores must give a whole number 0-100 for each clip (got {str(scores)[:80]})")
        if device is not None and device not in DEVICES:
            raise StudyError(f"device must be one of {', '.join(DEVICES)} (got {str(device)[:20]!r})")
        # Read and write in one IMMEDIATE transaction: one connection, and the rows read cannot change.
        with self.connect(write=True) as conn:
            rater, info, plan = self._rater(conn, rater_id)
            _check_slot(slot, plan)
            trial, kind = plan[slot], info.config.kind
            layout = _layout(info, rater, trial)
            values: dict[str, Any] = {"shown": json.dumps(layout.shown)}
            # 2. What was played (first: the page asks for plays before scores): refused here (not only in the page) when the study asks for full plays
            heard = _heard(conn, rater.rater_id, slot)
            if info.config.must_play and not conn.execute(
                    "SELECT 1 FROM answers WHERE rater_id = ? AND slot = ?", (rater.rater_id, slot)).fetchone():
                unplayed = [c for c in layout.required if not heard.get(c, {}).get("ended")]
                if unplayed:
                    more = f" (and then {', '.join(_clip_name(c) for c in unplayed[1:])})" if unplayed[1:] else ""
                    raise IncompleteAnswer(f"Play {_clip_name(unplayed[0])} to the end before answering{more}.")
            preferred = None
            if kind == "ab":
                if choice not in AB_ANSWERS or ratings or scores:
                    raise StudyError(f"choose one of {', '.join(AB_ANSWERS)} (got {choice!r})")
                side = "a" if choice == "A" else "b"
                if choice in ("A", "B") and trial.swapped:
                    side = "b" if side == "a" else "a"
                preferred = _PREFERRED.get(choice, side)
            elif kind == "abx":
                if choice not in ABX_ANSWERS or ratings or scores:
                    raise StudyError(f"choose one of {' / '.join(ABX_ANSWERS)} (got {str(choice)[:40]!r})")
                named = "a" if choice == "X is A" else "b"  # the shown side named ...
                preferred = {"a": "b", "b": "a"}[named] if trial.swapped else named  # ... as a real side
                values.update(x_side=layout.x_side, correct=int(preferred == layout.x_side))
            elif kind == "mushra":
                if choice is not None or ratings:
                    raise StudyError("a MUSHRA answer is a score 0-100 for each clip")
                values["scores"] = json.dumps(_mushra_scores(scores, layout))
            else:
                ratings = dict(ratings or {})
                if choice is not None or scores or sorted(map(str, ratings)) != sorted(info.config.scales) or not all(
                        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5 for v in ratings.values()):
                    raise StudyError(f"give a whole number 1-5 for each of {info.config.scales} "
                                     f"(got {str(ratings)[:80]})")
            values.update(plays=json.dumps(heard), listen_s=round(sum(h["seconds"] for h in heard.values()), 3),
                          device=device)
            row = {"answer_id": answer_id, "rater_id": rater.rater_id, "slot": slot, "item_id": trial.item_id,
                   "repeat": trial.repeat, "swapped": int(trial.swapped), "choice": choice, "preferred": preferred,
                   "ratings": json.dumps(ratings) if ratings else None, "comment": comment, "time_ms": time_ms,
                   "created": _now(), **values}
            cur = conn.execute(f"INSERT INTO answers ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) "
                               "ON CONFLICT DO NOTHING", list(row.values()))
            return cur.rowcount == 1

    def answered(self, rater_id: str) -> int:
        """How many slots this rater has answered."""
        with self.connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM answers WHERE rater_id = ?", (str(rater_id)[:100],)).fetchone()[0]

    def progress(self, code: str) -> list[RaterProgress]:
        """One row per rater, in the order they joined, named by :func:`pseudonym`."""
        info = self.get(code)
        total = len(plan_trials(info.items, 0, info.config.repeats))
        with self.connect() as conn:
            rows = conn.execute(
                """SELECT r.rater_id, r.name, COUNT(a.answer_id) AS n, MAX(a.created) AS last
                   FROM raters r LEFT JOIN answers a USING (rater_id) WHERE r.code = ?
                   GROUP BY r.rater_id ORDER BY r.joined""", (info.code,)).fetchall()
        return [RaterProgress(pseudonym(r["rater_id"]), r["name"], r["n"], total, r["last"]) for r in rows]

    def answers(self, code: str) -> list[dict]:
        """Raw answers of a study (one dict per row, oldest first), with ratings decoded.

        Raters are named by ``rater`` (the :func:`pseudonym`) and ``rater_name``; their ids, the
        secret resume codes, are not in the rows.
        """
        info = self.get(code)
        with self.connect() as conn:
            rows = conn.execute(
                """SELECT a.*, r.name AS rater_name FROM answers a JOIN raters r USING (rater_id)
                   WHERE r.code = ? ORDER BY a.created, a.rater_id, a.slot""", (info.code,)).fetchall()
        out = [dict(r) for r in rows]
        for r in out:
            r["rater"] = pseudonym(r.pop("rater_id"))
            r["ratings"] = json.loads(r["ratings"]) if r["ratings"] else {}
            r["swapped"] = bool(r["swapped"])
            for column in ("shown", "scores", "plays"):
                r[column] = json.loads(r[column]) if r[column] else ({} if column != "shown" else None)
            r["correct"] = None if r["correct"] is None else bool(r["correct"])
        return out


@dataclass(frozen=True)
class _Layout:
    """How one trial is laid out for one rater: copies (relative paths) in shown order and their names."""

    clips: list[str]
    labels: list[str]
    reference: str | None  # MUSHRA: the trial's labelled reference
    required: list[str]  # clips to play to the end when the study asks for it
    shown: Any  # stored with the answer: the real sides or conditions in shown order (and X)
    x_side: str | None = None


def _layout(info: StudyInfo, rater: Rater, trial: Trial) -> _Layout:
    item, kind = info.items[trial.item_id], info.config.kind
    if kind == "mushra":
        stimuli = info.stimuli_of(item.item_id)
        order = mushra.stimulus_order(rater.seed, trial.slot, len(stimuli))
        labels = [str(k + 1) for k in range(len(order))]
        return _Layout([stimuli[i].clip for i in order], labels, item.clip_a, [REFERENCE_CLIP, *labels],
                       [stimuli[i].condition for i in order])
    if item.clip_b is None:
        return _Layout([item.clip_a], ["clip"], None, ["clip"], ["a"])
    sides = ["b", "a"] if trial.swapped else ["a", "b"]
    clips = [item.clip_a if s == "a" else item.clip_b for s in sides]
    if kind == "abx":
        x = abx.x_side(rater.seed, trial.slot)
        clips.append(item.clip_a if x == "a" else item.clip_b)
        return _Layout(clips, ["A", "B", "X"], None, ["A", "B", "X"], sides + [x], x)
    return _Layout(clips, ["A", "B"], None, ["A", "B"], sides)


def _check_slot(slot: Any, plan: list[Trial]) -> None:
    if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(plan):
        raise StudyError(f"slot {str(slot)[:20]} is outside this study's 0..{len(plan) - 1}")


def _clip_name(clip: str) -> str:
    return "the reference" if clip == REFERENCE_CLIP else f"clip {clip}"


def _mushra_scores(scores: Mapping[str, Any] | None, layout: _Layout) -> dict[str, int]:
    """``{shown clip name: score}`` checked and mapped to ``{condition: score}``."""
    scores = dict(scores or {})
    unknown = [k for k in scores if k not in layout.labels]
    if unknown:
        raise StudyError(f"there is no clip {str(unknown[0])[:20]!r} in this trial")
    missing = [k for k in layout.labels if scores.get(k) is None]
    if missing:
        raise IncompleteAnswer(f"Rate clip {missing[0]} (move its slider; every clip needs a score 0-100).")
    out = {}
    for label, condition in zip(layout.labels, layout.shown):
        try:
            out[condition] = whole(f"the score of clip {label}", scores[label], 0, mushra.MAX_SCORE)
        except BadInput as exc:
            raise StudyError(str(exc)) from None
    return out


def _heard(conn: sqlite3.Connection, rater_id: str, slot: int) -> dict[str, dict]:
    """Per clip of a trial: plays started, listening seconds (closed plays), played to the end."""
    rows = conn.execute("""SELECT clip, COUNT(*) AS plays, COALESCE(SUM(seconds), 0) AS seconds, MAX(ended) AS ended
                           FROM plays WHERE rater_id = ? AND slot = ? GROUP BY clip""", (rater_id, slot)).fetchall()
    return {r["clip"]: {"plays": r["plays"], "seconds": round(float(r["seconds"]), 3), "ended": bool(r["ended"])}
            for r in rows}
