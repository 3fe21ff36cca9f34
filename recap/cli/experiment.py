"""`recap experiment run CONFIG --out DIR` and `recap experiment report DIR`.

One process by default; several GPUs or machines with
``accelerate launch --num_processes 4 -m recap experiment run CONFIG --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

from tqdm import tqdm

from recap.cli.common import add_model_args, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="batch experiments over a prompt file (the thesis tables), resumable, multi-GPU",
        description="Reword every prompt of a prompt file, generate baseline and rewordings from identical "
        "noise, score them against the baseline and summarise by rewording tier, category and complexity.",
    )
    esub = p.add_subparsers(dest="experiment_command", required=True)
    r = esub.add_parser(
        "run",
        help="run or resume an experiment",
        description="Runs the experiment described by CONFIG (TOML; see assets/experiment.example.toml) into "
        "DIR. Rerunning with the same config resumes: finished units are skipped. On several GPUs: "
        "accelerate launch --num_processes N -m recap experiment run CONFIG --out DIR",
    )
    r.add_argument("config", type=Path, help="experiment config (TOML)")
    r.add_argument("--out", type=Path, required=True, metavar="DIR", help="experiment folder (created, or resumed)")
    add_model_args(r)
    for action in r._actions:
        if action.dest == "model":  # here it overrides the config's `model`
            action.help = "backend name, instead of the config's `model` (e.g. tiny for a dry run)"
    r.set_defaults(func=run)
    rep = esub.add_parser("report", help="rebuild and print the tables and charts of an experiment folder")
    rep.add_argument("dir", type=Path, help="experiment folder")
    rep.add_argument("--all", action="store_true", help="also print the tables by category and by complexity")
    rep.add_argument("--no-static", action="store_true",
                     help="charts as HTML only (default: also PNG and SVG for papers, which needs a Chromium)")
    rep.set_defaults(func=report)


def run(args: argparse.Namespace) -> int:
    from recap.config import settings
    from recap.experiment.config import ExperimentConfig
    from recap.experiment.runner import distributed_state, run_experiment
    from recap.rewording.llm import LLMError
    from recap.rewording.wordnet import WordNetMissingError

    config = ExperimentConfig.from_toml(args.config)
    if args.model:
        config = dataclasses.replace(config, model=args.model)
    state = distributed_state(args.device or settings().device)
    # One bar per machine; with several processes it shows this process's share.
    bar = _phase_bar() if state.is_local_main_process else nullcontext(None)
    try:
        with bar as progress:
            outcome = run_experiment(config, args.out, device=args.device, dtype=args.dtype, progress=progress,
                                     state=state)
    except (LLMError, WordNetMissingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if outcome.report is not None:
        print(f"{outcome.units_written} unit(s) written, {outcome.units_skipped} already done "
              f"({outcome.num_processes} process(es))")
        _print_report(outcome.report, show_all=False)
    return 0


@contextmanager
def _phase_bar():
    """A tqdm bar on stderr that restarts (and re-estimates its ETA) when the run changes phase."""
    bar = tqdm(desc="experiment", file=sys.stderr, dynamic_ncols=True)

    def update(done: float, total: int, message: str = "") -> None:
        phase, _, detail = message.partition(": ")
        if phase != bar.desc or total != bar.total:
            bar.unit = "prompt" if phase == "rewording" else "unit"
            bar.set_description_str(phase, refresh=False)
            bar.set_postfix_str("", refresh=False)
            bar.reset(total=total)
        bar.set_postfix_str(detail, refresh=False)
        bar.update(round(done - bar.n, 3))

    try:
        yield update
    finally:
        bar.close()


def report(args: argparse.Namespace) -> int:
    from recap.experiment.report import build_report

    _print_report(build_report(args.dir, static=not args.no_static), show_all=args.all)
    return 0


def _print_report(rep, show_all: bool) -> None:
    from recap.experiment.report import (
        CORRELATION_HEAD,
        LATENT_NOTE,
        INTERVAL_NOTE,
        SECTIONS,
        TABLE_HEAD,
        correlation_cells,
        table_cells,
    )

    ci = f"{rep.confidence:.0%} CI"
    head = [h.format(ci=ci) for h in TABLE_HEAD]
    if rep.model.get("random_weights"):
        print(f"note: {rep.model.get('name')} has RANDOM weights: its audio is noise and these numbers mean nothing.",
              file=sys.stderr)
    print(f"{rep.name}: {rep.prompts} prompts, {rep.units_found} of {rep.units_expected} units")
    print(f"{LATENT_NOTE}\n{INTERVAL_NOTE}")
    for title, table, names in SECTIONS:
        rows = [r for r in rep.table(table) if r.metric in names]
        if rows:
            print(f"\n{title}")
            if table == "reconstruction":
                print_table(head[:2] + ["Comparison"] + head[2:], [table_cells(r, True) for r in rows])
            else:
                print_table(head, [table_cells(r) for r in rows])
    if rep.correlations:
        print("\nText cosine vs clip latent cosine: one point per variant (mean over its seeds), "
              "interval by cluster bootstrap over prompts")
        print_table([h.format(ci=ci) for h in CORRELATION_HEAD],
                    [correlation_cells(c, rep.confidence) for c in rep.correlations])
    if show_all:
        for title, table, label in (("By category", "by_category", "Category"),
                                    ("By complexity", "by_complexity", "Complexity")):
            print(f"\n{title}")
            print_table(head[:2] + [label] + head[2:], [table_cells(r, True) for r in rep.table(table)])
    for note in rep.notes:
        print(f"\nnote: {note}")
    print(f"\ntables: {rep.out_dir / 'summary.md'}, {rep.out_dir / 'summary.csv'}, {rep.out_dir / 'pairs.csv'}")
    print(f"charts: {rep.out_dir / 'charts' / 'distributions.html'}, {rep.out_dir / 'charts' / 'text_vs_audio.html'}")
