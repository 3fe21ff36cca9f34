"""Listening studies end to end on real run folders and a real SQLite file: creation, blind
shuffles, resuming, concurrent raters, schema migration, injection, the CLI and the UI handlers.
(Attacks on the served app — roles, blindness over HTTP, bounds — are in test_security_study.py.)"""

from __future__ import annotations

import argparse
import re
import dataclasses
import hashlib
import json
import sqlite3
import threading
import uuid
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from recap.study import store as study
from recap.audio_io import write_wav
from recap.study.store import MIGRATIONS, StudyConfig, StudyError, StudyStore, plan_trials, pseudonym

SR = 16000


def make_run(home: Path, run_id: str, labels: list[str], seeds: list[int], seconds: float = 0.5) -> Path:
    """A run folder of the documented shape with short sines of different loudness per variant."""
    folder = home / "runs" / run_id
    t = np.arange(int(seconds * SR)) / SR
    clips = []
    for k, label in enumerate(labels):
        for seed in seeds:
            audio = (0.02 * (k + 1) * np.sin(2 * np.pi * (220 + 40 * seed) * t)).astype(np.float32)
            rel = f"audio/{label}__seed{seed}.wav"
            write_wav(folder / rel, np.stack([audio, audio]), SR)
            clips.append({"variant": label, "seed": seed, "audio": rel, "latents": None, "sha256": ""})
    manifest = {
        "format": "recap.run/1", "run_id": run_id, "kind": "generate", "created": "2026-01-01T00:00:00+00:00",
        "model": {"name": "tiny", "sample_rate": SR, "channels": 2}, "config": {"seeds": seeds},
        "variants": [{"label": lab, "prompt": f"rain, {lab}", "method": "baseline" if lab == "baseline" else "synonym",
                      "batch": 0 if lab == "baseline" else 1} for lab in labels],
        "seeds": seeds, "clips": clips,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def answer_all(store: StudyStore, rater_id: str, choice: str = "A") -> int:
    n = 0
    while (trial := store.trial(rater_id)) is not None:
        if trial.kind == "ab":
            assert store.submit(uuid.uuid4().hex, rater_id, trial.slot, choice)
        else:
            assert store.submit(uuid.uuid4().hex, rater_id, trial.slot, ratings={s.key: 3 for s in trial.scales})
        n += 1
    return n


@pytest.fixture
def store(recap_home) -> StudyStore:
    return StudyStore(recap_home)


@pytest.fixture
def ab_study(store, recap_home):
    make_run(recap_home, "run1", ["baseline", "reword-1a", "reword-2a"], [0, 1, 2])
    config = StudyConfig(kind="ab", name="Rain", pairs=["baseline:reword-1a", "baseline:reword-2a"],
                         questions=["Which better matches the prompt?", "Which sounds more natural?"])
    return store.create(config, ["run1"])


def test_create_makes_loudness_matched_blind_copies_and_never_touches_the_run(store, recap_home):
    run = make_run(recap_home, "run1", ["baseline", "reword-1a"], [0, 1])
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()}
    info = store.create(StudyConfig(kind="ab", pairs=["baseline:reword-1a"], repeats=0, checks=1), ["run1"])
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()} == before
    # 2 seeds x 1 pair x 1 question + 1 attention check
    assert [i.role for i in info.items] == ["test", "test", "check"]
    meter = pyloudnorm.Meter(SR)
    for item in info.items:
        for clip in (item.clip_a, item.clip_b):
            assert "baseline" not in clip and "reword" not in clip and "noise" not in clip  # names say nothing
            audio, sr = sf.read(info.folder / clip)
            assert abs(meter.integrated_loudness(audio) - (-23.0)) < 0.5  # the 2x louder variant is matched too
    # The answer key lives outside the study folder (which holds only the opaque copies).
    assert {p.relative_to(info.folder).parts[0] for p in info.folder.rglob("*") if p.is_file()} == {"audio"}
    saved = json.loads(store.key_path(info.code).read_text())
    assert saved["config"]["seed"] == info.config.seed is not None
    assert {i["label_a"] for i in saved["items"][:2]} == {"run1/baseline@seed0", "run1/baseline@seed1"}
    assert not list(store.studies_dir.glob(".tmp-*"))


def test_pairs_are_made_per_run_by_seed_or_across_runs_when_qualified(store, recap_home):
    make_run(recap_home, "run1", ["baseline", "reword-1a"], [0, 1, 2])
    make_run(recap_home, "run2", ["baseline", "ti"], [1, 2, 3])
    within = store.create(StudyConfig(kind="ab", pairs=["baseline:reword-1a"], checks=0), ["run1", "run2"])
    assert [i.label_b for i in within.items] == [f"run1/reword-1a@seed{s}" for s in (0, 1, 2)]
    across = store.create(StudyConfig(kind="ab", pairs=["run1/baseline:run2/ti"], checks=0), ["run1", "run2"])
    # only the seeds both runs have are paired
    assert [(i.label_a, i.label_b) for i in across.items] == [
        ("run1/baseline@seed1", "run2/ti@seed1"), ("run1/baseline@seed2", "run2/ti@seed2")]
    assert {i.condition for i in across.items} == {"run1/baseline:run2/ti"}

    bad = {"baseline:nope": "no variant 'nope'", "baseline-reword": "must look like",
           "reword-1a:ti": "no run has both", "baseline:run2/ti": "several runs", "ti:ti": "with itself"}
    for pair, message in bad.items():
        with pytest.raises(StudyError, match=message):
            store.create(StudyConfig(kind="ab", pairs=[pair]), ["run1", "run2"])
    with pytest.raises(StudyError, match="no run"):
        store.create(StudyConfig(kind="ab", pairs=["baseline:ti"]), ["../run1"])
    assert len(store.studies()) == 2 and len(list(store.studies_dir.iterdir())) == 2  # failures left nothing
    assert len(list(store.keys_dir.iterdir())) == 2


def test_shuffle_is_reproducible_from_the_seed_and_answers_map_back_to_real_labels(store, ab_study):
    raters = [store.join(ab_study.code, name=f"rater{k}") for k in range(3)]
    plans = [plan_trials(ab_study.items, r.seed, ab_study.config.repeats) for r in raters]
    assert plan_trials(ab_study.items, raters[0].seed, 1) == plans[0]  # same seed, same plan
    assert len({tuple(t.item_id for t in p) for p in plans}) == 3  # different raters, different orders
    items = {i.item_id: i for i in ab_study.items}
    copy_to_label = {}
    for i in ab_study.items:
        copy_to_label[i.clip_a], copy_to_label[i.clip_b] = i.label_a, i.label_b

    for rater, plan in zip(raters, plans):
        shown_first = {}
        for trial in plan:
            shown = store.trial(rater.rater_id, trial.slot)
            real_sides = [items[trial.item_id].clip_a, items[trial.item_id].clip_b]
            assert shown.clips == [ab_study.folder / c for c in real_sides[::-1 if trial.swapped else 1]]
            shown_first[trial.slot] = copy_to_label[str(shown.clips[0].relative_to(ab_study.folder))]
            assert store.submit(uuid.uuid4().hex, rater.rater_id, trial.slot, "A")  # always the clip shown first
        rows = [a for a in store.answers(ab_study.code) if a["rater"] == rater.pseudonym]
        assert len(rows) == len(plan) == len(ab_study.items) + 1  # one repeat
        for row in rows:
            item = items[row["item_id"]]
            real = item.label_a if row["preferred"] == "a" else item.label_b
            assert real == shown_first[row["slot"]]  # the stored answer names the clip the rater heard as A
            assert (row["slot"], row["item_id"], row["repeat"], row["swapped"]) == tuple(
                getattr(plan[row["slot"]], f) for f in ("slot", "item_id", "repeat", "swapped"))
    swaps = [t.swapped for p in plans for t in p]
    assert any(swaps) and not all(swaps)


def test_raters_resume_only_by_their_code_and_a_name_makes_a_new_rater(store, ab_study):
    alice = store.join(ab_study.code, name="alice")
    for _ in range(3):
        trial = store.trial(alice.rater_id)
        store.submit(uuid.uuid4().hex, alice.rater_id, trial.slot, "B")
    # A restart, a reload, another device: the resume code continues where alice stopped ...
    assert store.join(ab_study.code.upper(), rater_id=f" {alice.rater_id} ") == alice
    assert store.trial(alice.rater_id).slot == 3
    # ... while anyone typing her name is a new rater, with nothing of hers
    namesake = store.join(ab_study.code, name="  alice ")
    assert namesake.rater_id != alice.rater_id and namesake.name == "alice"
    assert store.trial(namesake.rater_id).slot == 0
    assert store.join(ab_study.code).rater_id != store.join(ab_study.code).rater_id
    with pytest.raises(StudyError, match="no rater"):
        store.join(ab_study.code, rater_id="not-a-rater")
    with pytest.raises(StudyError, match="no study"):
        store.join("zzzz-zzzz")
    assert answer_all(store, alice.rater_id) == len(ab_study.items) + 1 - 3
    assert store.trial(alice.rater_id) is None
    progress = {p.rater: (p.name, p.answered, p.total) for p in store.progress(ab_study.code)}
    assert progress[alice.pseudonym] == ("alice", len(ab_study.items) + 1, len(ab_study.items) + 1)
    assert progress[namesake.pseudonym] == ("alice", 0, len(ab_study.items) + 1)
    # Progress and answers name raters by pseudonym only: no resume code in any of their values.
    shown = json.dumps([vars(p) for p in store.progress(ab_study.code)] + store.answers(ab_study.code))
    assert alice.rater_id not in shown and namesake.rater_id not in shown


def test_bad_answers_are_refused_and_nothing_is_stored(store, ab_study, recap_home):
    rater = store.join(ab_study.code)
    bad = [dict(answer_id="short", choice="A"), dict(answer_id="x" * 65, choice="A"),
           dict(answer_id="ok-answer-1", choice="C"), dict(answer_id="ok-answer-1", choice=None),
           dict(answer_id="ok-answer-1", choice="A", slot=999), dict(answer_id="ok-answer-1", choice="A", slot=-1),
           dict(answer_id="ok-answer-1", choice="A", ratings={"OVL": 3}),
           dict(answer_id="ok-answer-1", choice="A", comment="x" * 5000),
           dict(answer_id="ok-answer-1", choice="A", time_ms=-5)]
    for kwargs in bad:
        with pytest.raises(StudyError):
            store.submit(rater_id=rater.rater_id, **{"slot": 0, **kwargs})
    make_run(recap_home, "run9", ["baseline"], [0])
    rating = store.create(StudyConfig(kind="rating", checks=0, repeats=0), ["run9"])
    rater2 = store.join(rating.code)
    for ratings in [{"OVL": 3}, {"OVL": 0, "REL": 3}, {"OVL": 6, "REL": 3}, {"OVL": True, "REL": 3},
                    {"OVL": 2.5, "REL": 3}, {"OVL": 3, "REL": 3, "XYZ": 1}]:
        with pytest.raises(StudyError, match="1-5"):
            store.submit("ok-answer-2", rater2.rater_id, 0, ratings=ratings)
    assert store.answers(ab_study.code) == [] and store.answers(rating.code) == []


def test_twenty_concurrent_raters_lose_and_double_nothing(store, recap_home):
    # 25 seeds x 2 pairs = 50 items, no checks or repeats: each rater answers exactly 50.
    make_run(recap_home, "big", ["baseline", "reword-1a", "reword-2a"], list(range(25)), seconds=0.1)
    info = store.create(StudyConfig(kind="ab", pairs=["baseline:reword-1a", "baseline:reword-2a"],
                                    repeats=0, checks=0), ["big"])
    raters = [store.join(info.code, name=f"r{k}") for k in range(20)]
    start = threading.Barrier(20)
    results: dict[str, list[bool]] = {}
    errors = []

    def rate(rater):
        try:
            start.wait()
            got = []
            for slot in range(50):
                answer_id = f"{rater.rater_id}-{slot:02d}"
                got.append(store.submit(answer_id, rater.rater_id, slot, "AB"[slot % 2]))
                got.append(store.submit(answer_id, rater.rater_id, slot, "AB"[slot % 2]))  # a resubmission
            results[rater.rater_id] = got
        except Exception as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(got == [True, False] * 50 for got in results.values())
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT answer_id) FROM answers").fetchone() == (1000, 1000)
        assert conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT rater_id, slot FROM answers)").fetchone() == (1000,)
    assert all(p.answered == 50 for p in store.progress(info.code))


def test_the_same_answer_sent_twice_at_once_is_stored_once(store, ab_study):
    rater = store.join(ab_study.code)
    barrier = threading.Barrier(8)
    outcomes = []

    def click(answer_id):
        barrier.wait()
        outcomes.append(store.submit(answer_id, rater.rater_id, 0, "A"))

    # four double-clicks of one answer and four different ids for the same slot (several tabs)
    ids = ["same-answer-id"] * 4 + [f"other-tab-{k}" for k in range(4)]
    threads = [threading.Thread(target=click, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    assert len(store.answers(ab_study.code)) == 1


def test_schema_is_versioned_in_wal_mode_and_migrates_forward(store, ab_study, monkeypatch):
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 3
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rater = store.join(ab_study.code, name="kept")
    store.submit("before-migration", rater.rater_id, 0, "A")

    def add_locale_column(conn):
        conn.execute("ALTER TABLE answers ADD COLUMN locale TEXT")

    monkeypatch.setattr(study, "MIGRATIONS", [*MIGRATIONS, add_locale_column])
    assert [a["answer_id"] for a in store.answers(ab_study.code)] == ["before-migration"]
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert "locale" in [r[1] for r in conn.execute("PRAGMA table_info(answers)")]
    monkeypatch.setattr(study, "MIGRATIONS", MIGRATIONS)  # an older recap meets the newer file
    with pytest.raises(StudyError, match="newer than this recap"):
        store.get(ab_study.code)


def test_a_study_made_before_answer_keys_left_its_folder_is_migrated(store, recap_home, monkeypatch):
    """A version-1 database (raters unique by name) and ``studies/<code>/study.json``, as recap
    made them before: the key moves out of the served tree, answers survive, names stop resuming."""
    make_run(recap_home, "run1", ["baseline", "reword-1a"], [0, 1])
    # The study's files as today's recap makes them, its rows as version 1 held them
    info = StudyStore(recap_home / "elsewhere").create(
        StudyConfig(kind="ab", pairs=["baseline:reword-1a"], checks=0), [recap_home / "runs" / "run1"])
    monkeypatch.setattr(study, "MIGRATIONS", MIGRATIONS[:1])
    store.studies_dir.mkdir(parents=True)
    info.folder.rename(store.studies_dir / info.code)
    with store.connect(write=True) as conn:
        conn.execute("INSERT INTO studies VALUES (?, ?, ?, ?, ?)",
                     (info.code, "ab", json.dumps(dataclasses.asdict(info.config)), None, info.created))
        conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(info.code, *dataclasses.astuple(i)) for i in info.items])
        alice = study.Rater("alice-resume-code", info.code, "alice", 7)
        conn.execute("INSERT INTO raters VALUES (?, ?, ?, ?, ?)", (alice.rater_id, info.code, "alice", 7, "then"))
        conn.execute("INSERT INTO answers VALUES ('answer-before', ?, 0, 0, 0, 0, 'A', 'a', NULL, '', 5, 'then')",
                     (alice.rater_id,))
    info = dataclasses.replace(info, folder=store.studies_dir / info.code)
    StudyStore(recap_home / "elsewhere").key_path(info.code).rename(info.folder / "study.json")  # where v1 kept it
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    monkeypatch.setattr(study, "MIGRATIONS", MIGRATIONS)

    assert [a["answer_id"] for a in store.answers(info.code)] == ["answer-before"]  # migrates on first use
    assert not (info.folder / "study.json").exists()
    assert json.loads(store.key_path(info.code).read_text())["code"] == info.code
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    (old,) = store.answers(info.code)  # an old answer reads with empty new fields
    assert old["choice"] == "A" and old["plays"] == {} and old["scores"] == {} and old["device"] is None
    namesake = store.join(info.code, name="alice")  # the old UNIQUE (code, name) is gone
    assert namesake.rater_id != alice.rater_id and store.join(info.code, rater_id=alice.rater_id) == alice
    with pytest.raises(sqlite3.IntegrityError):  # foreign keys are on again after the rebuild
        with store.connect(write=True) as conn:
            conn.execute("INSERT INTO answers (answer_id, rater_id, slot, item_id, repeat, swapped, created) "
                         "VALUES ('orphan-answer', 'nobody', 0, 0, 0, 0, 'now')")


def test_each_rater_copy_has_its_own_name_and_bytes_and_the_same_samples(ab_study, tmp_path):
    source = ab_study.folder / ab_study.items[0].clip_a
    copies = [study.rater_copy(source, tmp_path / "r") for _ in range(3)]
    assert len({c.name for c in copies}) == len({c.read_bytes() for c in copies}) == 3
    original, sr = sf.read(source)
    for c in copies:  # a player reads exactly the listening copy's audio
        audio, sr_c = sf.read(c)
        assert sr_c == sr and np.array_equal(audio, original)
    with pytest.raises(StudyError, match="not a WAV"):
        study.rater_copy(ab_study.folder.parent / ".." / "study.sqlite", tmp_path)


def test_names_and_comments_cannot_inject_sql_or_html(store, ab_study):
    from recap.ui.common import md_text
    from recap.ui.experimenter import progress_table
    from recap.ui.rater import open_study, submit_answer

    evil = "Robert'); DROP TABLE answers;-- <script>alert(1)</script>"
    view = open_study(store.home, ab_study.code, name=evil)
    assert "<script>" not in view.status and "&lt;script&gt;" in view.status
    comment = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) =HYPERLINK(\"x\")"
    submit_answer(store.home, view.state, "A", None, comment=comment)
    rows = store.answers(ab_study.code)
    assert rows[0]["rater_name"] == evil and rows[0]["comment"] == comment  # stored verbatim, as data
    assert progress_table(store.home, ab_study.code)[0][1] == evil
    shown = md_text(comment)
    assert "<" not in shown and "](" not in shown and "&lt;img" in shown
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM answers").fetchone() == (1,)


def test_ui_rater_flow_resumes_and_never_doubles(store, ab_study):
    from recap.ui.rater import code_from_query, open_study, submit_answer

    assert code_from_query({"study": f" {ab_study.code.upper()} "}) == ab_study.code
    assert code_from_query({"study": "<b>x</b>"}) == "" and code_from_query({}) == ""
    view = open_study(store.home, ab_study.code, name="dana")
    assert view.kind == "ab" and len(view.clips) == 2 and "item 1 of" in view.status
    assert f"resume code is `{view.state['rater_id']}`" in view.status  # shown to dana, and only to her
    assert view.prompt == "Prompt: *rain, baseline*" and view.question.startswith("### Which")
    first = dict(view.state)
    view = submit_answer(store.home, view.state, "B", None, comment="nice", now=first["shown_at"] + 2.5)
    again = submit_answer(store.home, first, "B", None)  # a double click replays the same state
    assert "already answered" in again.status and again.state["slot"] == view.state["slot"]
    # a reload or a server restart: the resume code shown to dana continues her session
    resumed = open_study(store.home, ab_study.code, resume_code=first["rater_id"])
    assert resumed.state["slot"] == view.state["slot"] != first["slot"]
    row = store.answers(ab_study.code)[0]
    assert (row["choice"], row["comment"], row["time_ms"]) == ("B", "nice", 2500)
    with pytest.raises(StudyError, match="choose one of"):
        submit_answer(store.home, resumed.state, None, None)
    with pytest.raises(StudyError, match="open a study first"):
        submit_answer(store.home, None, "A", None)
    state = resumed.state
    while state["slot"] is not None:
        view = submit_answer(store.home, state, "None", None)
        state = view.state
    assert view.kind is None and "All done" in view.status
    assert len(store.answers(ab_study.code)) == len(ab_study.items) + 1


def test_ui_experimenter_creates_rating_study_and_gets_results(store, recap_home, tmp_path):
    from recap.ui.experimenter import (RESULT_HEADERS, create_study, progress_table, run_choices, study_choices,
                                       study_results)
    from recap.ui.rater import open_study, submit_answer

    make_run(recap_home, "run1", ["baseline", "reword-1a"], [0, 1])
    assert [value for _, value in run_choices(recap_home)] == ["run1"]
    with pytest.raises(StudyError, match="choose at least one run"):
        create_study(recap_home, [], "rating")
    message, code = create_study(recap_home, ["run1"], "rating", items="reword-1a\nbaseline", scales=["OVL"],
                                 repeats=0, checks=0, name="Quality")
    assert code in message and [value for _, value in study_choices(recap_home)] == [code]
    view = open_study(recap_home, code)
    assert view.kind == "rating" and [s.key for s in view.scales] == ["OVL"] and len(view.clips) == 1
    info = StudyStore(recap_home).get(code)
    condition_of = {info.folder / i.clip_a: i.condition for i in info.items}

    def condition(view):  # the rater holds a copy under a random name; the store knows what it is
        assert Path(view.clips[0]).parent == Path(view.state["folder"])
        return condition_of[StudyStore(recap_home).trial(view.state["rater_id"], view.state["slot"]).clips[0]]

    # a scale left untouched (the radio buttons start empty) is refused, not stored as a default
    with pytest.raises(StudyError, match="rate the clip on OVL"):
        submit_answer(recap_home, view.state, None, {"OVL": None})
    assert progress_table(recap_home, code)[0][2] == 0
    while view.state["slot"] is not None:
        ovl = {"baseline": 2.0, "reword-1a": 5.0}[condition(view)]  # floats, as the browser sends
        view = submit_answer(recap_home, view.state, None, {"OVL": ovl, "REL": 1.0})
    assert progress_table(recap_home, code)[0][2:4] == [4, 4]
    rows, figure, files, note = study_results(recap_home, code, export_dir=tmp_path)
    assert all(len(r) == len(RESULT_HEADERS) for r in rows) and len(figure.data) == 1
    # the tables, and the figure as a paper prints it
    assert sorted(Path(f).name for f in files) == [f"study-{code}-answers.csv", f"study-{code}-figure.png",
                                                   f"study-{code}-figure.svg", f"study-{code}-summary.csv",
                                                   f"study-{code}.json"]
    assert Path(files[-2]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in Path(files[-1]).read_bytes()[:400]
    assert note.startswith("Raters excluded: 0 by *failed checks*")
    means = {r[2]: r[6] for r in rows if r[0] == "rating"}
    assert means == {"baseline": 2.0, "reword-1a": 5.0}
    assert [r[4] for r in rows if r[0] == "rating"] == [2, 2]  # n per condition (2 seeds)


def test_cli_create_list_results(recap_home, tmp_path, capsys):
    from recap.cli.study import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))

    def cli(*argv):
        args = parser.parse_args(list(argv))
        assert args.func(args) == 0
        return capsys.readouterr().out

    make_run(recap_home, "run1", ["baseline", "reword-1a"], [0, 1, 2])
    ref = tmp_path / "ref.wav"
    write_wav(ref, np.full((1, SR), 0.1, np.float32) * np.sin(np.arange(SR) / 5.0).astype(np.float32), SR)
    code = cli("study", "create", "--run", "run1", "--type", "ab", "--pair", "baseline:reword-1a",
               "--question", "Which better matches the reference clip?", "--reference", str(ref),
               "--hide-prompt", "--checks", "0").strip()
    store = StudyStore(recap_home)
    info = store.get(code)
    assert info.config.hide_prompt and info.config.questions == ["Which better matches the reference clip?"]
    rater = store.join(code, name="erin")
    trial = store.trial(rater.rater_id)
    assert trial.prompt is None and trial.reference is not None and trial.reference.is_file()
    answer_all(store, rater.rater_id, "None")
    assert code in cli("study", "list")
    out = cli("study", "results", code, "--csv", str(tmp_path / "s.csv"), "--answers-csv", str(tmp_path / "a.csv"),
              "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "p.html"))
    assert "Which better matches the reference clip?" in out and "100.0%" in out
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    # three answers of one rater are one independent unit: no interval below three raters
    assert summary["preferences"][0]["shares"][2] == {"answer": "None", "count": 3, "n": 3, "percent": 100.0,
                                                      "raters": 1, "low": None, "high": None}
    assert (tmp_path / "a.csv").read_text().count("\n") == 1 + 4  # header + 3 items + 1 repeat
    # the results chart for a browser and, for a paper, as PNG and SVG
    assert (tmp_path / "p.html").is_file() and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "p.svg").read_text()
    assert "erin" in cli("study", "progress", code)
    # erin answered her repeated item as the first time: consistent, 1 repeat, 0 changed
    assert re.search(r"erin\s+\d+\s+0\s+0\s+1\s+0\s", out)
    unruled = cli("study", "results", code, "--no-rules")
    assert "No exclusion rules applied: every rater is kept" in unruled and "100.0%" in unruled


def test_listen_tab_wires_handlers_into_blocks(store, ab_study):
    import types

    import gradio as gr

    from recap.ui.jobs import SessionJobs
    from recap.ui.listen import build_listen_tab

    with gr.Blocks() as demo:
        with gr.Tab("Listen & rate"):
            build_listen_tab(types.SimpleNamespace(settings=types.SimpleNamespace(home=store.home)))
    fns = {f.api_name: f for f in demo.fns.values()}
    assert {"study_open", "study_submit"} <= set(fns)  # the public endpoints a client can drive
    jobs = SessionJobs()
    outputs = fns["study_open"].fn(jobs, ab_study.code, "<i>x</i>", "")
    assert len(outputs) == len(fns["study_open"].outputs)
    state, status = outputs[:2]
    assert state["slot"] is not None and "&lt;i&gt;" in status
    assert Path(outputs[6]["value"]).parent == jobs.scratch / "study-clips"  # the session's own copies
    outputs = fns["study_submit"].fn(state, "A", "", 3, 3)
    assert outputs[0]["slot"] != state["slot"] and len(store.answers(ab_study.code)) == 1
    with pytest.raises(gr.Error) as err:
        fns["study_open"].fn(jobs, "<b>bad</b>", "", "")
    assert "<b>" not in err.value.message and "&lt;b&gt;" in err.value.message
    runs, studies = fns["on_refresh"].fn(None)  # a local server without a password: open
    assert [v for _, v in runs["choices"]] == ["run1"] and [v for _, v in studies["choices"]] == [ab_study.code]
    jobs.close()


def test_builder_fills_pairs_and_pickers_from_the_chosen_runs_and_only_for_an_experimenter(store, recap_home):
    import types

    import gradio as gr

    from recap.ui.experimenter import (ExperimenterGate, Unlock, builder_visibility, create_study, pairs_text,
                                       variant_labels)
    from recap.ui.listen import build_listen_tab

    make_run(recap_home, "run1", ["baseline", "reword-1a", "reword-2a"], [0, 1, 2])
    make_run(recap_home, "run2", ["baseline", "reword-3a"], [0, 1, 2])
    assert variant_labels(recap_home, ["run1", "run2"]) == ["baseline", "reword-1a", "reword-2a", "reword-3a"]
    # ids that are not runs, paths and junk offer nothing (the list only shows what exists)
    assert variant_labels(recap_home, ["../run1", "nope", None, 5]) == [] == variant_labels(recap_home, "run1")
    assert pairs_text("baseline", ["reword-1a", "baseline", "reword-2a"]) == "baseline:reword-1a\nbaseline:reword-2a"
    assert pairs_text(None, ["x"]) == "" == pairs_text("baseline", "reword-1a")
    assert builder_visibility("mushra") == {"pairs": False, "questions": False, "items": False, "scales": False,
                                            "mushra": True, "checks": False, "reference_clip": False}
    assert builder_visibility("abx")["pairs"] and not builder_visibility("abx")["questions"]

    # A MUSHRA study straight from the pickers: a dropdown's reference and a checkbox group's ticks
    message, code = create_study(recap_home, ["run1"], "mushra", conditions=["reword-1a", "reword-2a"],
                                 reference_variant="baseline")
    info = store.get(code)
    assert info.config.conditions == ["reword-1a", "reword-2a"] and info.config.reference_variant == "baseline"
    assert f"?study={code}" in message
    # Rating items from ticks too; none ticked means every variant
    _, rating = create_study(recap_home, ["run1"], "rating", items=["reword-2a"], repeats=0, checks=0)
    assert store.get(rating).config.items == ["reword-2a"]

    for mode, unlock, shown in (("open", None, True), ("password", Unlock(), False), ("password", Unlock(True), True)):
        settings = types.SimpleNamespace(home=store.home, experimenter_access=mode,
                                         experimenter_password="pw" if mode == "password" else None)
        with gr.Blocks() as demo:
            build_listen_tab(types.SimpleNamespace(settings=settings))
        assert ExperimenterGate.from_settings(settings).mode == mode
        on_runs = next(f for f in demo.fns.values() if f.name == "on_runs")
        against, others, items, reference, conditions, pairs = on_runs.fn(unlock, ["run1"])
        if shown:
            assert [c[0] if isinstance(c, tuple) else c for c in against["choices"]] == ["baseline", "reword-1a",
                                                                                        "reword-2a"]
            assert pairs == "baseline:reword-1a\nbaseline:reword-2a" and reference["value"] == "baseline"
        else:  # a session that has not typed the password learns nothing about the runs
            assert against["choices"] == [] and pairs == "" and conditions["choices"] == []
        # opening the panel reads the lists again: a run made since the page loaded is there
        on_open = next(f for f in demo.fns.values() if f.name == "on_open_panel")
        runs, studies = on_open.fn(unlock)
        if shown:
            assert {v for _, v in runs["choices"]} == {"run1", "run2"} and len(studies["choices"]) == 2
        else:
            assert "choices" not in runs and "choices" not in studies
