"""`recap study ...`: create blind listening studies from run folders, follow them, summarise them."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from recap.cli.common import print_table
from recap.config import settings
from recap.study.store import SCALES, StudyConfig, StudyStore
from recap.analysis.figures import save_figure
from recap.study.stats import (
    answer_table,
    empty_reason,
    results_figure,
    summarize,
    summary_rows,
    write_csv,
    write_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="blind listening studies (A/B preference, 1-5 ratings, MUSHRA, ABX)")
    ssub = p.add_subparsers(dest="study_command", required=True)

    c = ssub.add_parser("create", help="make a study from run folders and print its code")
    c.add_argument("--run", action="append", required=True,
                   help="run id (under $RECAP_HOME/runs) or run folder; repeatable")
    c.add_argument("--type", dest="kind", choices=["ab", "rating", "mushra", "abx"], required=True)
    c.add_argument("--pair", action="append", default=[],
                   help="A/B or ABX pair 'baseline:reword-1a' (within each run) or 'RUN/label:RUN2/label'; repeatable")
    c.add_argument("--conditions", nargs="+", default=[], metavar="LABEL",
                   help="MUSHRA: the variants rated beside the reference (a hidden reference and 3.5/7 kHz "
                        "low-pass anchors are added)")
    c.add_argument("--must-play", action="store_true",
                   help="refuse an answer until every clip of the trial was played to the end")
    c.add_argument("--completion-code", default=None, help="code shown to raters who finish (Prolific / MTurk)")
    c.add_argument("--redirect-url", default=None, help="http(s) address finished raters are sent on to")
    c.add_argument("--item", action="append", default=[], help="variant to rate ('label' or 'RUN/label'); default: all")
    c.add_argument("--question", action="append", default=None, help="A/B question text; repeatable")
    c.add_argument("--scale", action="append", choices=sorted(SCALES), default=None,
                   help="rating scale; default OVL and REL")
    c.add_argument("--reference", default=None,
                   help="MUSHRA: the reference variant's label; A/B and ratings: an audio file played with every "
                        "item (e.g. a token's training clip)")
    c.add_argument("--prompt", default=None, help="prompt text shown to raters (default: the run's baseline prompt)")
    c.add_argument("--hide-prompt", action="store_true", help="show raters no prompt")
    c.add_argument("--name", default="", help="title shown to raters")
    c.add_argument("--repeats", type=int, default=1, help="items shown twice to each rater (consistency check)")
    c.add_argument("--checks", type=int, default=1, help="obvious-answer items (clip vs noise)")
    c.add_argument("--max-failed-checks", type=int, default=0, help="raters failing more are excluded from summaries")
    c.add_argument("--lufs", type=float, default=-23.0, help="loudness of the listening copies (LUFS)")
    c.set_defaults(func=run_create)

    ls = ssub.add_parser("list", help="studies with their raters and answers")
    ls.set_defaults(func=run_list)

    pr = ssub.add_parser("progress", help="answers per rater")
    pr.add_argument("study", help="study code")
    pr.set_defaults(func=run_progress)

    r = ssub.add_parser("results", help="summary tables; optional CSV / JSON / HTML chart export")
    r.add_argument("study", help="study code")
    r.add_argument("--csv", default=None, help="write the summaries (long form) to this CSV")
    r.add_argument("--answers-csv", default=None, help="write the raw answers to this CSV")
    r.add_argument("--no-rules", action="store_true",
                   help="keep every rater: no attention-check exclusion, no MUSHRA post-screening")
    r.add_argument("--json", default=None, help="write config, summaries and raw answers to this JSON")
    r.add_argument("--plot", default=None, help="write the chart to this HTML file (and as .png and .svg beside it)")
    r.set_defaults(func=run_results)


def _store() -> StudyStore:
    return StudyStore(settings().home)


def run_create(args: argparse.Namespace) -> int:
    mushra = args.kind == "mushra"
    config = StudyConfig(
        kind=args.kind, name=args.name, pairs=args.pair, items=args.item,
        reference=None if mushra else args.reference, reference_variant=args.reference if mushra else None,
        conditions=args.conditions, prompt=args.prompt, hide_prompt=args.hide_prompt, repeats=args.repeats,
        # MUSHRA and ABX check raters their own way (hidden reference; right or wrong answers)
        checks=0 if args.kind in ("mushra", "abx") else args.checks,
        max_failed_checks=args.max_failed_checks, target_lufs=args.lufs, must_play=args.must_play,
        completion_code=args.completion_code, redirect_url=args.redirect_url,
    )
    if args.question:
        config.questions = args.question
    if args.scale:
        config.scales = args.scale
    store = _store()
    info = store.create(config, args.run)
    print(info.code)
    tests = sum(i.role == "test" for i in info.items)
    for note in info.notes:
        print(f"note: {note}", file=sys.stderr)
    if info.stimuli:
        print(f"{tests} MUSHRA trials of {len(info.stimuli_of(0))} clips each "
              f"({', '.join(s.condition for s in info.stimuli_of(0))})", file=sys.stderr)
    print(f"{tests} items + {len(info.items) - tests} checks, {config.repeats} repeated per rater; "
          f"listening copies in {info.folder}, answer key in {store.key_path(info.code)}",
          file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    rows = [[info.code, info.config.kind, info.config.name, len(info.items), raters, answers, info.created]
            for info, raters, answers in _store().studies()]
    print_table(["code", "type", "name", "items", "raters", "answers", "created"], rows)
    return 0


def run_progress(args: argparse.Namespace) -> int:
    rows = [[p.rater, p.name or "(anonymous)", f"{p.answered}/{p.total}", p.last_answer or ""]
            for p in _store().progress(args.study)]
    print_table(["rater", "name", "answered", "last answer"], rows)
    return 0


def _number(value: float, digits: int) -> str:
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def _interval(low: float, high: float, digits: int) -> str:
    return "" if math.isnan(low) else f"{low:.{digits}f}-{high:.{digits}f}"


def run_results(args: argparse.Namespace) -> int:
    store = _store()
    info = store.get(args.study)
    answers = store.answers(info.code)
    results = summarize(info, answers, apply_rules=not args.no_rules)
    reason = empty_reason(results)
    if reason:
        print(reason)
    if not results.rules_applied:
        print("No exclusion rules applied: every rater is kept, no post-screening.")
    for p in results.preferences:
        print(f"\n{p.question}  [{p.condition}]  n={p.n}")
        print_table(["answer", "count", "percent", "95% interval"],
                    [[s.answer, s.count, f"{s.percent:.1f}%", _interval(s.low, s.high, 1)] for s in p.shares])
    if results.ratings:
        print()
        print_table(["scale", "condition", "n", "mean", "95% interval", "std"],
                    [[r.scale, r.condition, r.n, f"{r.mean:.2f}", _interval(r.low, r.high, 2),
                      "" if math.isnan(r.std) else f"{r.std:.2f}"] for r in results.ratings])
    for title, table in (("MUSHRA, post-screened (BS.1534)", results.mushra),
                         ("MUSHRA, every rater (no post-screening)", results.mushra_unscreened)):
        if table:
            print(f"\n{title}")
            print_table(["condition", "n", "raters", "mean", "95% interval (raters)", "median", "std"],
                        [[r.condition, r.n, r.raters, _number(r.mean, 1), _interval(r.low, r.high, 1),
                          _number(r.median, 1), _number(r.std, 1)] for r in table])
    if results.abx:
        print("\nABX: X identified")
        print_table(["pair", "n", "right", "raters", "percent", "95% interval (raters)", "p (raters > chance)"],
                    [[r.condition, r.n, r.correct, r.raters, f"{r.share:.1f}%", _interval(r.low, r.high, 1),
                      "" if r.p_raters is None else f"{r.p_raters:.3g}"] for r in results.abx])
        print_table(["pair", "rater", "right", "of", "p (binomial vs 0.5)"],
                    [[r.condition, x.rater, x.correct, x.n, f"{x.p_value:.3g}"] for r in results.abx for x in r.per_rater])
    if results.excluded_by:
        print()
        print_table(["exclusion rule", "raters excluded"], [[k, v] for k, v in results.excluded_by.items()])
    if results.screening:
        print_table(["rater", "trials", "hidden reference < 90", "excluded"],
                    [[s.rater, s.trials, s.below, "yes" if s.excluded else ""] for s in results.screening])
    print()
    print_table(["agreement", "Krippendorff alpha", "items"],
                [[g.name, "undefined" if g.alpha is None else f"{g.alpha:.3f}", g.units] for g in results.agreement])
    print()
    print_table(["rater", "name", "answered", "checks", "failed", "repeats", "changed on repeat", "excluded"],
                [[r.rater, r.name or "(anonymous)", r.answered, r.checks, r.failed, r.repeats, r.inconsistent,
                  "yes" if r.excluded else ""] for r in results.raters])
    if args.csv:
        print(f"summaries -> {write_csv(summary_rows(results), args.csv)}", file=sys.stderr)
    if args.answers_csv:
        print(f"answers -> {write_csv(answer_table(info, answers), args.answers_csv)}", file=sys.stderr)
    if args.json:
        print(f"json -> {write_json(info, results, answers, args.json)}", file=sys.stderr)
    if args.plot:
        # HTML for a browser (plotly.min.js beside it), PNG and SVG beside it for a paper
        written = save_figure(results_figure(results), Path(args.plot).with_suffix(""))
        print(f"chart -> {', '.join(map(str, written))}", file=sys.stderr)
    return 0
