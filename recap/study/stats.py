"""Summaries of listening-study answers: preference tables, mean ratings, agreement, checks.

- A/B: percent of each answer per (question, condition), as in Table 2 of the personalisation
  paper, with counts and a 95% interval that treats the rater as the independent unit: Wilson
  on the sample size shrunk by the design effect of raters who answer several items
  (:func:`recap.metrics.uncertainty.clustered_share`).
- Ratings: mean per (scale, condition) with a cluster-robust t interval over raters
  (:func:`recap.metrics.uncertainty.cluster_interval`).
- No interval with fewer than 3 raters in a row (the row says how many raters it holds).
- Agreement between raters: Krippendorff's alpha, chosen over Fleiss' kappa because raters need
  not all answer the same items (people stop early, some are excluded). Nominal over
  {a, b, none, undecided} for each A/B question; ordinal for each 1-5 scale (its steps are
  ranks, not equal distances). Units are test items; values are first showings.
- Attention checks: an obvious-answer item fails when the clip loses to noise (A/B) or noise is
  rated above 2 on a scale. Raters failing more than ``max_failed_checks`` of them are excluded.
- Repeated items measure consistency (the two answers agree for A/B; a rating moves by at most 1)
  and are reported per rater, never used to exclude: two close variants heard twice are honestly
  answered differently, so counting a change as a failed check would exclude careful raters.
- ``apply_rules=False`` gives the same summaries with nobody excluded and no MUSHRA
  post-screening, so a reader can see what each rule changed.

Summaries use test items only, first showings only, included raters only. Raters are named by
their pseudonym (``rater``) and typed name, never by their resume code, in every table and export.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Hashable, Iterable, Sequence

import numpy as np
import plotly.graph_objects as go

from recap.metrics.uncertainty import Interval, cluster_interval, clustered_share
from recap.paths import atomic_write_bytes, atomic_write_json
from recap.study import abx, mushra
from recap.study.store import StudyInfo, StudyItem

ANSWER_NAMES = {"none": "None", "undecided": "Cannot decide"}


@dataclass(frozen=True)
class Share:
    """How often one answer was given: count of n, percent, 95% interval in percent (nan below 3 raters)."""

    answer: str
    count: int
    n: int
    percent: float
    low: float
    high: float
    raters: int = 0


@dataclass(frozen=True)
class PreferenceRow:
    """One A/B question on one condition; shares in the order side a, side b, None, Cannot decide."""

    question: str
    condition: str
    n: int
    shares: list[Share]


@dataclass(frozen=True)
class RatingRow:
    """Mean of one scale on one condition with its 95% interval over raters (nan below 3 raters)."""

    scale: str
    condition: str
    n: int
    mean: float
    low: float
    high: float
    std: float
    raters: int = 0


@dataclass(frozen=True)
class Agreement:
    """Krippendorff's alpha over ``units`` items (None when there is no variation to compare)."""

    name: str
    metric: str
    alpha: float | None
    units: int


@dataclass(frozen=True)
class RaterCheck:
    rater: str  # the pseudonym (recap.study.store.pseudonym), never the resume code
    name: str | None
    answered: int
    checks: int  # obvious-answer checks answered
    failed: int
    excluded: bool
    repeats: int = 0  # repeated items answered twice
    inconsistent: int = 0  # of those, answered differently the second time


@dataclass(frozen=True)
class StudyResults:
    code: str
    kind: str
    preferences: list[PreferenceRow]
    ratings: list[RatingRow]
    agreement: list[Agreement]
    raters: list[RaterCheck]
    mushra: list[mushra.MushraRow] = field(default_factory=list)  # post-screened raters left out
    mushra_unscreened: list[mushra.MushraRow] = field(default_factory=list)  # every rater (no screening)
    screening: list[mushra.Screening] = field(default_factory=list)
    abx: list[abx.AbxRow] = field(default_factory=list)
    excluded_by: dict[str, int] = field(default_factory=dict)  # rule -> raters it excluded
    # Scores behind the MUSHRA boxplots, per condition (screened raters left out)
    mushra_scores: dict[str, list[float]] = field(default_factory=dict)
    rules_applied: bool = True  # False: every rater kept, no post-screening (summarize(apply_rules=False))


def krippendorff_alpha(units: Iterable[Sequence[Hashable]], metric: str = "nominal") -> float | None:
    """Krippendorff's alpha from the values each unit (item) received from its raters.

    alpha = 1 - D_o / D_e over the coincidence matrix: each ordered pair of values within a unit
    of m values adds 1 / (m - 1). Units with fewer than 2 values carry no pair and are skipped.

    Args:
        units: Per unit, the values given by the raters who answered it (any number each).
        metric: "nominal" (delta = 0 if equal else 1), "ordinal" (delta = squared count of the
            pairable values ranked between two values, halving the ends: Krippendorff 2011) or
            "interval" (delta = squared difference).

    Returns:
        alpha, or None when no pairable values vary (D_e == 0: agreement is undefined).
    """
    if metric not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"metric must be 'nominal', 'ordinal' or 'interval', got {metric!r}")
    units = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in units for v in u}, key=repr if metric == "nominal" else float)
    if len(values) < 2:
        return None
    index = {v: i for i, v in enumerate(values)}
    coincidence = np.zeros((len(values), len(values)))
    for unit in units:
        for i, a in enumerate(unit):
            for j, b in enumerate(unit):
                if i != j:
                    coincidence[index[a], index[b]] += 1.0 / (len(unit) - 1)
    n_c = coincidence.sum(axis=1)
    if metric == "nominal":
        delta = 1.0 - np.eye(len(values))
    elif metric == "ordinal":
        # between ranks c <= k: n_c / 2 + n_{c+1} + ... + n_{k-1} + n_k / 2, squared
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        delta = (cum[hi + 1] - cum[lo] - (n_c[lo] + n_c[hi]) / 2.0) ** 2
    else:
        v = np.asarray(values, dtype=float)
        delta = (v[:, None] - v[None, :]) ** 2
    n = n_c.sum()
    d_observed = float((coincidence * delta).sum()) / n
    d_expected = float((np.outer(n_c, n_c) * delta).sum()) / (n * (n - 1))
    return None if d_expected == 0 else 1.0 - d_observed / d_expected


def _bounds(iv: Interval, scale: float = 1.0) -> tuple[float, float]:
    # Rows keep floats (nan = no interval, written as null) so tables and figures need no None case.
    if iv.low is None or iv.high is None:
        return math.nan, math.nan
    return scale * iv.low, scale * iv.high


def _check_passed(item: StudyItem, answer: dict) -> bool:
    if item.expected == "a":
        return answer["preferred"] == "a"
    return all(v <= 2 for v in answer["ratings"].values())


def _consistent(first: dict, again: dict) -> bool:
    if first["preferred"] is not None:
        return first["preferred"] == again["preferred"]
    return all(abs(first["ratings"][k] - again["ratings"].get(k, 0)) <= 1 for k in first["ratings"])


def attention(info: StudyInfo, answers: Sequence[dict], apply_rules: bool = True) -> list[RaterCheck]:
    """Attention-check outcome of every rater who answered (see the module docstring); with
    ``apply_rules=False`` nobody is marked excluded."""
    items = {i.item_id: i for i in info.items}
    by_rater: dict[str, list[dict]] = defaultdict(list)
    for a in answers:
        by_rater[a["rater"]].append(a)
    out = []
    for rater, rows in by_rater.items():
        checks = failed = repeats = inconsistent = 0
        shown = {(a["item_id"], a["repeat"]): a for a in rows}
        for a in rows:
            item = items[a["item_id"]]
            if item.role == "check":
                checks, failed = checks + 1, failed + (not _check_passed(item, a))
            elif a["repeat"] == 1 and (a["item_id"], 0) in shown:
                repeats, inconsistent = repeats + 1, inconsistent + (not _consistent(shown[a["item_id"], 0], a))
        out.append(RaterCheck(rater, rows[0]["rater_name"], len(rows), checks, failed,
                              apply_rules and failed > info.config.max_failed_checks, repeats, inconsistent))
    return out


def summarize(info: StudyInfo, answers: Sequence[dict], apply_rules: bool = True) -> StudyResults:
    """Preference shares, mean ratings and agreement of a study's answers (see the module docstring).

    Args:
        apply_rules: Exclude raters by the attention checks and (MUSHRA) post-screen them; False
            keeps every rater, to show what the rules changed.
    """
    results = _summarize(info, answers, apply_rules)
    return results if apply_rules else replace(results, rules_applied=False)


def _summarize(info: StudyInfo, answers: Sequence[dict], apply_rules: bool) -> StudyResults:
    raters = attention(info, answers, apply_rules)
    excluded = {r.rater for r in raters if r.excluded}
    items = {i.item_id: i for i in info.items}
    used = [a for a in answers if a["rater"] not in excluded and a["repeat"] == 0
            and items[a["item_id"]].role == "test"]
    preferences, ratings, agreement = [], [], []
    excluded_by = {"failed checks": len(excluded)} if apply_rules else {}
    if info.config.kind == "mushra":
        screening = mushra.screen([a for a in answers if a["rater"] not in excluded]) if apply_rules else []
        screened = excluded | {s.rater for s in screening if s.excluded}
        if apply_rules:
            excluded_by[mushra.SCREEN_RULE] = len(screened) - len(excluded)
        order = mushra.condition_order(info.stimuli)
        units = defaultdict(list)
        for a in used:
            if a["rater"] not in screened:
                for condition, value in a["scores"].items():
                    units[a["item_id"], condition].append(value)
        agreement.append(Agreement("MUSHRA scores", "interval", krippendorff_alpha(units.values(), "interval"),
                                   len(units)))
        return StudyResults(info.code, info.config.kind, [], [], agreement, raters,
                            mushra.summarize(used, order, screened, True),
                            mushra.summarize(used, order, excluded, False), screening, [], excluded_by,
                            mushra.scores_by_condition(used, order, screened))
    if info.config.kind == "abx":
        rows = abx.summarize(used, {i.item_id: i.condition for i in info.items}, excluded)
        return StudyResults(info.code, info.config.kind, [], [], agreement, raters, abx=rows, excluded_by=excluded_by)
    if info.config.kind == "ab":
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for a in used:
            groups[items[a["item_id"]].question, items[a["item_id"]].condition].append(a)
        for (question, condition), rows in groups.items():
            first = items[rows[0]["item_id"]]
            names = {"a": first.name_a, "b": first.name_b, **ANSWER_NAMES}
            who = [r["rater"] for r in rows]
            shares = []
            for key in names:
                hits = [r["preferred"] == key for r in rows]
                iv = clustered_share(hits, who, unit="rater")
                low, high = _bounds(iv, 100.0)
                shares.append(Share(names[key], sum(hits), len(rows), 100.0 * iv.estimate, low, high, iv.n))
            preferences.append(PreferenceRow(question, condition, len(rows), shares))
        for question in dict.fromkeys(i.question for i in info.items if i.role == "test"):
            units = defaultdict(list)
            for a in used:
                if items[a["item_id"]].question == question:
                    units[a["item_id"]].append(a["preferred"])
            agreement.append(Agreement(f"A/B: {question}", "nominal", krippendorff_alpha(units.values()), len(units)))
    else:
        for scale in info.config.scales:
            groups = defaultdict(list)
            units = defaultdict(list)
            for a in used:
                groups[items[a["item_id"]].condition].append((a["ratings"][scale], a["rater"]))
                units[a["item_id"]].append(a["ratings"][scale])
            for condition, pairs in groups.items():
                values = [v for v, _ in pairs]
                iv = cluster_interval(values, [r for _, r in pairs], unit="rater")
                low, high = _bounds(iv)
                std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
                ratings.append(RatingRow(scale, condition, len(values), iv.estimate, low, high, std, iv.n))
            agreement.append(Agreement(scale, "ordinal", krippendorff_alpha(units.values(), "ordinal"), len(units)))
    return StudyResults(info.code, info.config.kind, preferences, ratings, agreement, raters,
                        excluded_by=excluded_by)


def answer_table(info: StudyInfo, answers: Sequence[dict]) -> list[dict]:
    """Raw answers joined with their items, one flat dict per answer (what the CSV holds)."""
    items = {i.item_id: i for i in info.items}
    rows = []
    for a in answers:
        item = items[a["item_id"]]
        shown = [item.label_a, item.label_b][:: -1 if a["swapped"] else 1]
        names = {"a": item.name_a, "b": item.name_b, **ANSWER_NAMES}
        row = {"study": info.code, "answer_id": a["answer_id"], "rater": a["rater"],
               "rater_name": a["rater_name"] or "", "slot": a["slot"], "item_id": item.item_id, "role": item.role,
               "repeat": a["repeat"], "question": item.question, "condition": item.condition,
               "shown_a": shown[0], "shown_b": shown[1] or "", "choice": a["choice"] or "",
               "preferred": names.get(a["preferred"], "") if a["preferred"] else ""}
        row.update({f"rating_{s}": a["ratings"].get(s, "") for s in info.config.scales if info.config.kind == "rating"})
        if info.config.kind == "mushra":
            row["shown_b"] = ""
            row.update({f"score_{c}": v for c, v in (a.get("scores") or {}).items()})
            row["shown_order"] = " | ".join(a.get("shown") or [])
        if info.config.kind == "abx":
            row.update({"x_is": names.get(a.get("x_side"), ""), "correct": a.get("correct")})
        plays = a.get("plays") or {}
        row.update({"plays": sum(p["plays"] for p in plays.values()), "listen_s": a.get("listen_s"),
                    "plays_by_clip": " ".join(f"{c}:{p['plays']}x{p['seconds']:.1f}s{'*' if p['ended'] else ''}"
                                              for c, p in plays.items()),
                    "device": a.get("device") or ""})
        row.update({"comment": a["comment"], "time_ms": a["time_ms"], "created": a["created"]})
        rows.append(row)
    return rows


def summary_rows(results: StudyResults) -> list[dict]:
    """Summaries in long form: one row per answer share, mean rating and agreement value."""
    rows: list[dict] = []
    for p in results.preferences:
        rows += [{"section": "preference", "question": p.question, "condition": p.condition, "answer": s.answer,
                  "n": s.n, "count": s.count, "value": round(s.percent, 2), "low": round(s.low, 2),
                  "high": round(s.high, 2)} for s in p.shares]
    rows += [{"section": "rating", "question": r.scale, "condition": r.condition, "answer": "mean", "n": r.n,
              "count": "", "value": round(r.mean, 3), "low": round(r.low, 3), "high": round(r.high, 3)}
             for r in results.ratings]
    for screened, table in (("screened", results.mushra), ("all raters", results.mushra_unscreened)):
        rows += [{"section": f"mushra ({screened})", "question": "score 0-100", "condition": r.condition,
                  "answer": "mean", "n": r.n, "count": r.raters, "value": round(r.mean, 2), "low": round(r.low, 2),
                  "high": round(r.high, 2)} for r in table]
    rows += [{"section": "abx", "question": "share correct", "condition": r.condition, "answer": "X identified",
              "n": r.n, "count": r.correct, "value": round(r.share, 2), "low": round(r.low, 2),
              "high": round(r.high, 2), "p (sign test over raters)": r.p_raters} for r in results.abx]
    rows += [{"section": "excluded", "question": rule, "condition": "", "answer": "raters", "n": "", "count": n,
              "value": "", "low": "", "high": ""} for rule, n in results.excluded_by.items()]
    rows += [{"section": "agreement", "question": g.name, "condition": "", "answer": f"Krippendorff alpha ({g.metric})",
              "n": g.units, "count": "", "value": "" if g.alpha is None else round(g.alpha, 3), "low": "", "high": ""}
             for g in results.agreement]
    return rows


def _spreadsheet_safe(value: object) -> object:
    # Rater text starting with = + - @ is run as a formula by spreadsheet programs; quote it.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Writes dict rows as CSV atomically (text cells made safe for spreadsheets)."""
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["empty"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows({k: _spreadsheet_safe(v) for k, v in r.items()} for r in rows)
    atomic_write_bytes(Path(path), buf.getvalue().encode("utf-8"))
    return Path(path)


def _finite(obj: object) -> object:
    # JSON has no NaN: an undefined interval (n < 2) is written as null.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def results_dict(info: StudyInfo, results: StudyResults, answers: Sequence[dict]) -> dict:
    """Config, summaries and raw answers of a study as plain JSON-ready values (NaN as None)."""
    return _finite({"study": info.code, "config": asdict(info.config), "summary": asdict(results),
                    "answers": answer_table(info, answers)})


def write_json(info: StudyInfo, results: StudyResults, answers: Sequence[dict], path: str | Path) -> Path:
    """Writes :func:`results_dict` to ``path`` atomically."""
    atomic_write_json(Path(path), results_dict(info, results, answers))
    return Path(path)


def empty_reason(results: StudyResults) -> str | None:
    """Why a study's summaries are empty, in a sentence, or None when they are not."""
    if results.preferences or results.ratings or results.mushra_scores or results.abx:
        return None
    if not results.raters:
        return "No answers yet: share the study link with raters."
    kept = [r for r in results.raters if not r.excluded]
    screened = results.excluded_by.get(mushra.SCREEN_RULE, 0)
    if results.rules_applied and (not kept or len(kept) <= screened):
        rules = ", ".join(f"{n} by '{rule}'" for rule, n in results.excluded_by.items() if n)
        return (f"Every one of the {len(results.raters)} raters was excluded ({rules}). "
                "Look at the results without the exclusion rules to see their answers.")
    return "No answers to test items yet (only attention checks or practice)."


def results_figure(results: StudyResults) -> go.Figure:
    """The figure a paper shows: stacked answer shares per A/B question and condition; mean
    ratings with 95% intervals; boxplots of the scores per condition (MUSHRA, post-screened);
    share correct per pair (ABX). An empty study's figure says why it is empty."""
    fig = go.Figure()
    reason = empty_reason(results)
    if reason:
        fig.add_annotation(text=reason, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                           font={"size": 14})
        fig.update_layout(title=f"Study {results.code}", xaxis={"visible": False}, yaxis={"visible": False})
        return fig
    rules = "" if results.rules_applied else " — no exclusion rules applied"
    if results.kind == "mushra":
        for condition, values in results.mushra_scores.items():
            fig.add_box(y=values, name=f"{condition} (n={len(values)})", boxpoints="all", jitter=0.4, pointpos=0)
        kept = sum(not r.excluded for r in results.raters) - results.excluded_by.get(mushra.SCREEN_RULE, 0)
        screened = "after post-screening" if results.rules_applied else "no post-screening"
        fig.update_layout(title=f"Study {results.code}: MUSHRA scores ({kept} raters, {screened})",
                          yaxis={"title": "score (0-100)", "range": [0, 100]}, showlegend=False)
        return fig
    if results.kind == "abx":
        fig.add_bar(x=[r.condition for r in results.abx], y=[r.share for r in results.abx],
                    error_y={"type": "data", "symmetric": False,
                             "array": [0 if math.isnan(r.high) else r.high - r.share for r in results.abx],
                             "arrayminus": [0 if math.isnan(r.low) else r.share - r.low for r in results.abx]})
        fig.add_hline(y=50, line_dash="dot", annotation_text="chance")
        fig.update_layout(title=f"Study {results.code}: ABX, X identified (%){rules}",
                          yaxis={"title": "percent correct", "range": [0, 100]})
        return fig
    if results.kind == "ab":
        # One stacked bar per question and pair, as the personalisation paper's Table 2 reads:
        # the first clip's share, the second's, None, Cannot decide (intervals are in the table).
        rows = [f"{p.question} [{p.condition}] (n={p.n})" for p in results.preferences]
        for k, position in enumerate(("first of the pair", "second of the pair", "None", "Cannot decide")):
            shares = [p.shares[k] for p in results.preferences]
            fig.add_bar(name=position, y=rows, x=[sh.percent for sh in shares], orientation="h",
                        text=[f"{sh.answer} {sh.percent:.0f}%" for sh in shares], textposition="inside")
        fig.update_layout(barmode="stack", title=f"Study {results.code}: answers (%){rules}",
                          xaxis={"title": "percent of answers", "range": [0, 100]},
                          legend={"orientation": "h", "y": -0.25}, height=max(300, 120 + 60 * len(rows)))
        return fig
    for scale in dict.fromkeys(r.scale for r in results.ratings):
        rows = [r for r in results.ratings if r.scale == scale]
        fig.add_bar(name=scale, x=[r.condition for r in rows], y=[r.mean for r in rows],
                    error_y={"type": "data", "symmetric": False,
                             "array": [0 if math.isnan(r.high) else r.high - r.mean for r in rows],
                             "arrayminus": [0 if math.isnan(r.low) else r.mean - r.low for r in rows]})
    # Rating axis free, as t intervals of few answers reach past 1-5.
    fig.update_layout(barmode="group", title=f"Study {results.code}: mean ratings (95% interval over raters){rules}",
                      yaxis={"title": "mean (1-5)"}, legend={"orientation": "h", "y": -0.2})
    return fig
