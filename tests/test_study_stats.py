"""Study summaries on hand-made answer sets, checked against numbers worked out by hand below."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from recap.metrics.uncertainty import wilson_interval
from recap.study.store import StudyConfig, StudyInfo, StudyItem
from recap.study.stats import (
    answer_table,
    attention,
    krippendorff_alpha,
    results_dict,
    results_figure,
    summarize,
    write_csv,
)


def answer(rater, item_id, preferred=None, ratings=None, repeat=0, swapped=False, choice=None, comment=""):
    return {"answer_id": f"{rater}-{item_id}-{repeat}", "rater": rater, "rater_name": rater.upper(),
            "slot": item_id + 10 * repeat, "item_id": item_id, "repeat": repeat, "swapped": swapped,
            "choice": choice, "preferred": preferred, "ratings": ratings or {}, "comment": comment,
            "time_ms": 1000, "created": "2026-01-01T00:00:00+00:00"}


def ab_info() -> StudyInfo:
    def pair(item_id, seed):
        return StudyItem(item_id, "test", "Q", "base:alt", "base", f"r/base@seed{seed}", f"audio/a{seed}.wav", "p",
                         "alt", f"r/alt@seed{seed}", f"audio/b{seed}.wav")

    check = StudyItem(2, "check", "Q", "attention check", "clip", "r/base@seed0", "audio/a0.wav", "p",
                      "noise", "noise", "audio/n.wav", expected="a")
    return StudyInfo("abcd-2345", StudyConfig(kind="ab", pairs=["base:alt"], max_failed_checks=0), "now",
                     Path("/nowhere"), [pair(0, 0), pair(1, 1), check])


def ab_answers() -> list[dict]:
    return [
        answer("r1", 0, "a"), answer("r1", 1, "a"), answer("r1", 2, "a"),
        answer("r2", 0, "a"), answer("r2", 1, "b"), answer("r2", 2, "a"),
        answer("r3", 0, "a"), answer("r3", 1, "undecided"), answer("r3", 2, "a"), answer("r3", 0, "a", repeat=1),
        answer("r4", 0, "b"), answer("r4", 1, "b"), answer("r4", 2, "b"),  # prefers noise: fails the check
        # fails the check too, and changes its mind on a repeat (reported, not a reason to exclude)
        answer("r5", 0, "a"), answer("r5", 1, "a"), answer("r5", 2, "b"), answer("r5", 1, "b", repeat=1),
    ]


def test_wilson_interval_by_hand():
    # 7/10, z = 1.96: denom = 1 + 3.8415/10 = 1.38415; centre = (0.7 + 0.19207)/1.38415 = 0.64449;
    # half = 1.96 * sqrt(0.021 + 0.0096037)/1.38415 = 0.24772 -> (0.39677, 0.89220)
    assert wilson_interval(7, 10) == pytest.approx((0.39677, 0.89220), abs=1e-4)
    # 0/6: low 0; high = 2 * (z^2 / 2n) / (1 + z^2/n) = 2 * 0.32012 / 1.64024 = 0.39033
    assert wilson_interval(0, 6) == pytest.approx((0.0, 0.39033), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="k=3, n=2"):
        wilson_interval(3, 2)


def test_krippendorff_alpha_by_hand():
    # Nominal, units [a,a,a] and [a,b,u]. Each unit of 3 adds 1/2 per ordered pair:
    # o_aa = 6 * 1/2 = 3; o_ab = o_ba = o_au = o_ua = o_bu = o_ub = 1/2.  n_a = 4, n_b = 1, n_u = 1, n = 6.
    # D_o = (6 * 1/2) / 6 = 0.5;  D_e = 2 * (4*1 + 4*1 + 1*1) / (6 * 5) = 0.6;  alpha = 1 - 0.5/0.6 = 1/6
    assert krippendorff_alpha([["a", "a", "a"], ["a", "b", "u"]]) == pytest.approx(1 / 6)
    # Interval, units [3,5], [5,4], [4,3] (one pair each, weight 1): n_3 = n_4 = n_5 = 2, n = 6.
    # D_o = (4 + 4 + 1 + 1 + 1 + 1) / 6 = 2;  D_e = 2 * 4 * (1 + 4 + 1) / 30 = 1.6;  alpha = 1 - 2/1.6 = -0.25
    assert krippendorff_alpha([[3, 5], [5, 4], [4, 3]], "interval") == pytest.approx(-0.25)
    assert krippendorff_alpha([[1, 1], [2, 2, 2], [7]], "interval") == pytest.approx(1.0)  # single values skipped
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None  # nothing varies: undefined
    with pytest.raises(ValueError, match="ordinal"):
        krippendorff_alpha([[1, 2]], "cardinal")


def test_krippendorff_alpha_matches_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units, missing
    # values as *; the paper gives nominal 0.743, ordinal 0.815, interval 0.849.
    coders = ["1 2 3 3 2 1 4 1 2 * * *", "1 2 3 3 2 2 4 1 2 5 * 3",
              "* 3 3 3 2 3 4 2 2 5 1 *", "1 2 3 3 2 4 4 1 2 5 1 *"]
    units = [[int(v) for v in unit if v != "*"] for unit in zip(*(c.split() for c in coders))]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_preference_table_excludes_raters_failing_checks():
    info, answers = ab_info(), ab_answers()
    checks = {r.rater: (r.checks, r.failed, r.excluded, r.repeats, r.inconsistent) for r in attention(info, answers)}
    # r3 passed the check and answered its repeat the same; r4 chose noise; r5 chose noise and
    # changed its mind on a repeat.
    assert checks == {"r1": (1, 0, False, 0, 0), "r2": (1, 0, False, 0, 0), "r3": (1, 0, False, 1, 0),
                      "r4": (1, 1, True, 0, 0), "r5": (1, 1, True, 1, 1)}
    results = summarize(info, answers)
    (row,) = results.preferences
    assert (row.question, row.condition, row.n) == ("Q", "base:alt", 6)
    # Included raters r1-r3, first showings of the two test items: a,a,a | a,b,undecided
    # -> base 4/6, alt 1/6, None 0/6, Cannot decide 1/6.
    assert [(s.answer, s.count) for s in row.shares] == [("base", 4), ("alt", 1), ("None", 0), ("Cannot decide", 1)]
    assert [s.percent for s in row.shares] == pytest.approx([66.6667, 16.6667, 0.0, 16.6667], abs=1e-3)
    # Wilson 4/6: denom 1.64024, centre 0.60161, half 0.30162 -> 30.00 .. 90.32 %
    assert (row.shares[0].low, row.shares[0].high) == pytest.approx((30.00, 90.32), abs=0.01)
    assert row.shares[2].high == pytest.approx(39.03, abs=0.01)
    # Agreement over the two test items: the hand-worked nominal example above, alpha = 1/6.
    (agreement,) = results.agreement
    assert (agreement.alpha, agreement.units, agreement.metric) == (pytest.approx(1 / 6), 2, "nominal")

    info.config.max_failed_checks = 1  # now r4 and r5 count too
    shares = summarize(info, answers).preferences[0].shares
    assert [s.count for s in shares] == [4 + 2, 1 + 2, 0, 1]  # r5 adds a,a and r4 b,b (first showings only)


def test_rating_means_intervals_and_agreement_by_hand():
    items = [StudyItem(0, "test", "", "x", "x", "r/x@seed0", "audio/0.wav", "p"),
             StudyItem(1, "test", "", "y", "y", "r/y@seed0", "audio/1.wav", "p"),
             StudyItem(2, "test", "", "x", "x", "r/x@seed1", "audio/2.wav", "p"),
             StudyItem(3, "check", "", "attention check", "noise", "noise", "audio/n.wav", "p", expected="low")]
    info = StudyInfo("abcd-2345", StudyConfig(kind="rating"), "now", Path("/nowhere"), items)
    answers = [
        answer("s1", 0, ratings={"OVL": 3, "REL": 4}), answer("s1", 1, ratings={"OVL": 5, "REL": 5}),
        answer("s1", 2, ratings={"OVL": 4, "REL": 2}), answer("s1", 3, ratings={"OVL": 1, "REL": 2}),
        answer("s2", 0, ratings={"OVL": 5, "REL": 4}), answer("s2", 1, ratings={"OVL": 4, "REL": 3}),
        answer("s2", 2, ratings={"OVL": 3, "REL": 3}), answer("s2", 3, ratings={"OVL": 2, "REL": 1}),
        answer("s3", 3, ratings={"OVL": 4, "REL": 1}), answer("s3", 0, ratings={"OVL": 1, "REL": 1}),  # noise rated 4
        answer("s4", 0, ratings={"OVL": 4, "REL": 3}), answer("s4", 1, ratings={"OVL": 3, "REL": 4}),
        answer("s4", 2, ratings={"OVL": 2, "REL": 3}), answer("s4", 3, ratings={"OVL": 1, "REL": 1}),
    ]
    results = summarize(info, answers)
    assert [r.excluded for r in results.raters] == [False, False, True, False]
    rows = {(r.scale, r.condition): r for r in results.ratings}
    # OVL on x: s1 [3, 4], s2 [5, 3], s4 [4, 2]; mean 21/6 = 3.5. Each rater is one unit: residual sums
    # per rater 0, +1, -1 -> se = sqrt(3/2 * 2) / 6 = 0.288675; t(0.975, 2) = 4.302653 -> half 1.242069.
    ovl_x = rows["OVL", "x"]
    assert (ovl_x.n, ovl_x.raters, ovl_x.mean) == (6, 3, 3.5)
    assert ovl_x.std == pytest.approx(1.048809, abs=1e-6)  # sample std of the six ratings
    assert (ovl_x.low, ovl_x.high) == pytest.approx((2.257931, 4.742069), abs=1e-5)
    # REL on x: s1 [4, 2], s2 [4, 3], s4 [3, 3]; mean 19/6; residual sums -1/3, 2/3, -1/3
    # -> se = sqrt(3/2 * 2/3) / 6 = 1/6 -> half 0.717109
    assert rows["REL", "x"].low == pytest.approx(19 / 6 - 0.717109, abs=1e-5)
    # OVL on y: one rating per rater [5, 4, 3]: the plain t interval, 4 -+ 4.302653 / sqrt(3)
    assert (rows["OVL", "y"].low, rows["OVL", "y"].high) == pytest.approx((1.515862, 6.484138), abs=1e-5)
    # Agreement on 1-5 scales is ordinal, over first showings of included raters (s1, s2, s4) per item.
    alpha = {g.name: (g.metric, g.alpha) for g in results.agreement}
    assert alpha == {
        "OVL": ("ordinal", pytest.approx(krippendorff_alpha([[3, 5, 4], [5, 4, 3], [4, 3, 2]], "ordinal"))),
        "REL": ("ordinal", pytest.approx(krippendorff_alpha([[4, 4, 3], [5, 3, 4], [2, 3, 3]], "ordinal"))),
    }
    assert results_figure(results).data[0].name == "OVL" and len(results_figure(results).data) == 2
    summary = results_dict(info, results, answers)["summary"]
    json.dumps(summary, allow_nan=False)


def test_rows_with_fewer_than_three_raters_get_no_interval():
    items = [StudyItem(0, "test", "", "x", "x", "r/x@seed0", "audio/0.wav", "p"),
             StudyItem(1, "test", "", "x", "x", "r/x@seed1", "audio/1.wav", "p")]
    info = StudyInfo("abcd-2345", StudyConfig(kind="rating"), "now", Path("/nowhere"), items)
    answers = [answer(r, i, ratings={"OVL": 3 + i, "REL": 2 + i}) for r in ("s1", "s2") for i in (0, 1)]
    results = summarize(info, answers)
    row = next(r for r in results.ratings if r.scale == "OVL")
    assert (row.n, row.raters, row.mean) == (4, 2, 3.5)
    assert math.isnan(row.low) and math.isnan(row.high)
    summary = results_dict(info, results, answers)["summary"]
    assert summary["ratings"][0]["low"] is None  # written as null, never NaN
    json.dumps(summary, allow_nan=False)


def test_answer_table_shows_the_sides_as_heard_and_is_safe_in_spreadsheets(tmp_path):
    info = ab_info()
    rows = answer_table(info, [answer("r1", 0, "b", swapped=True, choice="A", comment="=HYPERLINK(\"http://x\")")])
    (row,) = rows
    # swapped: the rater heard alt as A, chose A, which is the item's side b ("alt")
    assert (row["shown_a"], row["shown_b"], row["choice"], row["preferred"]) == (
        "r/alt@seed0", "r/base@seed0", "A", "alt")
    path = write_csv(rows, tmp_path / "answers.csv")
    with open(path, newline="") as f:
        (read,) = list(csv.DictReader(f))
    assert read["comment"] == "'=HYPERLINK(\"http://x\")" and read["rater_name"] == "R1"


def test_a_changed_mind_on_a_repeat_is_reported_but_excludes_nobody():
    # The old rule counted a repeat answered differently as a failed check, so with the default
    # "0 failed checks allowed" a careful rater hearing two close variants twice was excluded.
    info = ab_info()
    answers = [answer("r1", 0, "a"), answer("r1", 1, "a"), answer("r1", 2, "a"), answer("r1", 0, "b", repeat=1)]
    (check,) = attention(info, answers)
    assert (check.checks, check.failed, check.repeats, check.inconsistent, check.excluded) == (1, 0, 1, 1, False)
    assert summarize(info, answers).preferences[0].n == 2


def test_results_without_the_rules_keep_every_rater_and_an_all_excluded_study_says_why():
    from recap.study.stats import empty_reason

    info = ab_info()
    answers = [a for a in ab_answers() if a["rater"] in ("r4", "r5")]  # both fail the noise check
    ruled = summarize(info, answers)
    assert ruled.preferences == [] and ruled.excluded_by == {"failed checks": 2}
    reason = empty_reason(ruled)
    assert "Every one of the 2 raters was excluded" in reason and "without the exclusion rules" in reason
    fig = results_figure(ruled)
    assert fig.data == () and reason in fig.layout.annotations[0].text
    unruled = summarize(info, answers, apply_rules=False)
    assert not unruled.rules_applied and unruled.excluded_by == {} and empty_reason(unruled) is None
    (row,) = unruled.preferences
    # first showings of the test items: r4 b,b; r5 a,a
    assert row.n == 4 and [s.count for s in row.shares] == [2, 2, 0, 0]
    assert "no exclusion rules applied" in results_figure(unruled).layout.title.text
    assert empty_reason(summarize(info, [])) == "No answers yet: share the study link with raters."


def test_ab_figure_stacks_the_four_answers_of_each_pair_to_100_percent():
    results = summarize(ab_info(), ab_answers())
    fig = results_figure(results)
    assert [t.name for t in fig.data] == ["first of the pair", "second of the pair", "None", "Cannot decide"]
    assert fig.layout.barmode == "stack" and all(t.orientation == "h" for t in fig.data)
    assert sum(t.x[0] for t in fig.data) == pytest.approx(100.0)
    assert fig.data[0].text[0].startswith("base ")
