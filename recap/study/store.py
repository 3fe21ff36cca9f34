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
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from recap.errors import BadInput
from recap.limits import LIMITS, text, whole
from recap.paths import atomic_write_json
from recap.study.items import (
    AB_ANSWERS,
    SCALES,
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

__all__ = ["AB_ANSWERS", "SCALES", "Scale", "StudyConfig", "StudyError", "StudyItem", "Trial", "plan_trials",
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


@dataclass(frozen=True)
class StudyInfo:
    code: str
    config: StudyConfig
    created: str
    folder: Path
    items: list[StudyItem]
    reference_clip: str | None = None  # relative to folder


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
    """What a rater is shown for one slot; ``clips`` are absolute paths in shown order (A, B)."""

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


# Applied in order; MIGRATIONS[i] takes the schema from version i to i + 1. Append, never edit.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_2]


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
        try:
            items, reference, copies = build_items(config, run_dirs, tmp)
            created = _now()
            atomic_write_json(key, {"format": "recap.study.store/1", "code": code, "created": created,
                                    "config": asdict(config), "reference_clip": reference,
                                    "listening_copies": copies, "items": [asdict(i) for i in items]})
            tmp.rename(folder)
            # 3. Rows, all or nothing
            with self.connect(write=True) as conn:
                conn.execute("INSERT INTO studies VALUES (?, ?, ?, ?, ?)",
                             (code, config.kind, json.dumps(asdict(config)), reference, created))
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
        return StudyInfo(code, StudyConfig(**json.loads(row["config"])), row["created"],
                         self.studies_dir / code, items, row["reference_clip"])

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
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(plan):
            raise StudyError(f"slot {str(slot)[:20]} is outside this study's 0..{len(plan) - 1}")
        trial, item = plan[slot], info.items[plan[slot].item_id]
        clips = [item.clip_a] if item.clip_b is None else [item.clip_a, item.clip_b]
        if trial.swapped:
            clips.reverse()
        cfg = info.config
        return ShownTrial(
            info.code, rater.rater_id, slot, len(plan), cfg.kind, cfg.name, item.question,
            None if cfg.hide_prompt else item.prompt, [info.folder / c for c in clips],
            info.folder / info.reference_clip if info.reference_clip else None,
            [SCALES[s] for s in cfg.scales] if cfg.kind == "rating" else [])

    def submit(self, answer_id: str, rater_id: str, slot: int, choice: str | None = None,
               ratings: dict[str, int] | None = None, comment: str = "", time_ms: int | None = None) -> bool:
        """Stores one answer; True if stored now, False if this answer id or slot was already stored.

        Args:
            answer_id: Made by the caller once per shown trial (e.g. ``uuid4().hex``) and reused on
                every retry of the same submission; 8-64 characters of ``[A-Za-z0-9_-]``.
            choice: A/B studies: one of :data:`AB_ANSWERS`, as the rater saw the sides.
            ratings: Rating studies: ``{scale: 1..5}`` for every scale of the study.
            time_ms: Time from showing the trial to answering, in milliseconds.
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
        if choice is not None and choice not in AB_ANSWERS:
            raise StudyError(f"choose one of {', '.join(AB_ANSWERS)} (got {str(choice)[:40]!r})")
        if ratings is not None and (not isinstance(ratings, dict) or len(ratings) > len(SCALES)):
            raise StudyError(f"ratings must give a whole number 1-5 for each scale (got {str(ratings)[:80]})")
        # Read and write in one IMMEDIATE transaction: one connection, and the rows read cannot change.
        with self.connect(write=True) as conn:
            rater, info, plan = self._rater(conn, rater_id)
            if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(plan):
                raise StudyError(f"slot {slot!r} is outside this study's 0..{len(plan) - 1}")
            trial = plan[slot]
            preferred = None
            if info.config.kind == "ab":
                if choice not in AB_ANSWERS or ratings:
                    raise StudyError(f"choose one of {', '.join(AB_ANSWERS)} (got {choice!r})")
                side = "a" if choice == "A" else "b"
                if choice in ("A", "B") and trial.swapped:
                    side = "b" if side == "a" else "a"
                preferred = _PREFERRED.get(choice, side)
            else:
                ratings = dict(ratings or {})
                if choice is not None or sorted(map(str, ratings)) != sorted(info.config.scales) or not all(
                        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5 for v in ratings.values()):
                    raise StudyError(f"give a whole number 1-5 for each of {info.config.scales} "
                                     f"(got {str(ratings)[:80]})")
            cur = conn.execute(
                "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (answer_id, rater.rater_id, slot, trial.item_id, trial.repeat, int(trial.swapped), choice,
                 preferred, json.dumps(ratings) if ratings else None, comment, time_ms, _now()))
            return cur.rowcount == 1

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
        return out
