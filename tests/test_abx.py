"""ABX studies in the core: X drawn per rater and trial and stored, answers scored right or wrong
from the sides as shown, and per-pair shares with rater-clustered intervals and per-rater tests."""

from __future__ import annotations

import uuid

import pytest
from scipy import stats as sstats
from test_mushra import make_noise_run

from recap.metrics.uncertainty import clustered_share
from recap.study.abx import x_side
from recap.study.stats import answer_table, results_figure, summarize
from recap.study.store import StudyConfig, StudyError, StudyStore

PAIRS = ["baseline:reword-1a", "baseline:reword-1b"]


def answer_abx(store: StudyStore, info, rater_id: str, hears: bool) -> None:
    """A rater who recognises X by its samples (``hears``) or always says "X is A"."""
    while (trial := store.trial(rater_id)) is not None:
        a, b, x = (p.read_bytes() for p in trial.clips)
        choice = ("X is A" if x == a else "X is B") if hears else "X is A"
        assert x in (a, b) and a != b
        assert store.submit(uuid.uuid4().hex, rater_id, trial.slot, choice)


def test_abx_x_is_drawn_per_rater_and_trial_and_shares_have_rater_intervals(recap_home):
    store = StudyStore(recap_home)
    make_noise_run(recap_home)
    info = store.create(StudyConfig(kind="abx", name="hear it?", pairs=PAIRS, repeats=0), ["run1"])
    assert len(info.items) == 2 * 4 and {i.condition for i in info.items} == set(PAIRS)
    trial = store.trial(store.join(info.code).rater_id)
    assert trial.labels == ["A", "B", "X"] and trial.kind == "abx"
    with pytest.raises(StudyError, match="X is A / X is B"):
        store.submit("answer-0001", trial.rater_id, trial.slot, "A")

    hearing = [store.join(info.code, name=f"ear{k}") for k in range(4)]
    guessing = [store.join(info.code, name=f"guess{k}") for k in range(2)]
    for r in hearing:
        answer_abx(store, info, r.rater_id, True)
    for r in guessing:
        answer_abx(store, info, r.rater_id, False)
    answers = store.answers(info.code)
    # X is stored with each answer, is what the rater's seed draws, and varies across trials
    seeds = {r.pseudonym: r.seed for r in hearing + guessing}
    assert all(a["x_side"] == x_side(seeds[a["rater"]], a["slot"]) for a in answers)
    assert {a["x_side"] for a in answers} == {"a", "b"}
    assert all(a["correct"] for a in answers if a["rater_name"].startswith("ear"))
    # "X is A" is right exactly when the shown A is the real side X was
    for a in answers:
        if a["rater_name"].startswith("guess"):
            shown_a = "b" if a["swapped"] else "a"
            assert a["correct"] == (shown_a == a["x_side"])

    results = summarize(info, answers)
    assert [r.condition for r in results.abx] == PAIRS or sorted(r.condition for r in results.abx) == sorted(PAIRS)
    for row in results.abx:
        mine = [a for a in answers if info.items[a["item_id"]].condition == row.condition]
        iv = clustered_share([a["correct"] for a in mine], [a["rater"] for a in mine], unit="rater")
        assert row.n == 6 * 4 and row.raters == 6 and row.correct == sum(a["correct"] for a in mine)
        assert row.share == pytest.approx(100 * iv.estimate) and row.low == pytest.approx(100 * iv.low)
        assert row.low < row.share < row.high
        for rr in row.per_rater:
            assert rr.p_value == pytest.approx(sstats.binomtest(rr.correct, rr.n, 0.5, alternative="greater").pvalue)
        assert [rr.p_value for rr in row.per_rater if rr.correct == 4] == [1 / 16] * sum(rr.correct == 4 for rr in row.per_rater)
        above = sum(rr.correct * 2 > rr.n for rr in row.per_rater)
        below = sum(rr.correct * 2 < rr.n for rr in row.per_rater)
        assert row.p_raters == pytest.approx(sstats.binomtest(above, above + below, 0.5, alternative="greater").pvalue)
    assert results_figure(results).data[0].type == "bar"
    table = answer_table(info, answers)
    assert {row["x_is"] for row in table} <= {"baseline", "reword-1a", "reword-1b"} and "correct" in table[0]
