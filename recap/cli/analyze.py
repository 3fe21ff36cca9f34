"""`recap analyze RUN_DIR`: the thesis tables for a run, plus spectrogram figures."""

from __future__ import annotations

import argparse
import sys

from recap.analysis.scoring import AnalysisConfig, RunAnalysis, analyze_run, check_config
from recap.metrics.clap import DEFAULT_CLAP_MODEL
from recap.cli.common import print_table
from recap.analysis.run_tables import INTERVALS, report_tables
from recap.generation.runs import load_run
from recap.analysis.spectrogram import THESIS_BINS, SpectrogramConfig, write_run_figures

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="latent / text / reconstruction metrics and spectrograms of a run",
        description="Computes the thesis tables for a run folder, writes RUN_DIR/metrics.json, "
        "RUN_DIR/metrics.csv and RUN_DIR/figures/. Results are cached: repeating it is instant. "
        "The run's model is loaded only when a clip is not cached yet (RECAP_DEVICE / RECAP_DTYPE apply).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (with manifest.json)")
    p.add_argument("--bins", type=int, nargs=2, metavar=("LO", "HI"), default=None,
                   help="spectrogram rows [LO, HI) of 512 to show (default: all 512, 0 Hz to Nyquist, at any "
                        f"sample rate; the thesis showed {THESIS_BINS[0]} {THESIS_BINS[1]})")
    p.add_argument("--hz", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="show this band in Hz instead of --bins")
    p.add_argument("--all-bins", action="store_true", help="show all 512 rows (the default; overrides --bins)")
    p.add_argument("--baseline", default=None,
                   help="label of the reference variant (default: 'baseline', else the run's first variant, "
                        "e.g. strength-0.00 of a transfer sweep)")
    p.add_argument("--clap", action="store_true", help=f"add CLAP-A / CLAP-T (needs {DEFAULT_CLAP_MODEL} weights)")
    p.add_argument("--clap-model", default=DEFAULT_CLAP_MODEL, help="CLAP checkpoint (Hub id or folder)")
    p.add_argument("--music", action="store_true", help="add tempo / key / loudness against the references")
    p.add_argument("--references", nargs="+", default=[], metavar="FILE",
                   help="reference clips for CLAP-A and music metrics (default: the run's baseline clips)")
    p.add_argument("--no-reconstruction", action="store_true", help="skip the encode-decode-encode check")
    p.add_argument("--latent", choices=("clip", "sampler"), default="clip",
                   help="latent of the pair scores: clip = the saved audio encoded again (default), "
                        "sampler = the final denoised latent the run saved")
    p.add_argument("--no-figures", action="store_true", help="do not write spectrogram figures")
    p.add_argument("--no-static", action="store_true",
                   help="figures as HTML only (default: also PNG and SVG for papers, which needs a Chromium)")
    p.set_defaults(func=run)


def print_report(a: RunAnalysis, out=None) -> None:
    """Prints the analysis as thesis-style tables, each row with its interval, n, unit and method."""
    out = out or sys.stdout
    model = a.model.get("name", "?")
    print(f"run {a.run_id}  model {model}  clips {len(a.clips)}  baseline {a.config.baseline!r}  "
          f"pair scores on the {a.latent}", file=out)
    for note in a.notes:
        print(f"note: {note}", file=out)
    print(INTERVALS, file=out)
    for heading, headers, rows in report_tables(a):
        print(f"\n{heading}", file=out)
        print_table(headers, rows, out=out)


def run(args: argparse.Namespace) -> int:
    # The figure settings are checked before any analysis runs (a bad bin range costs nothing).
    bins = None if args.all_bins or not args.bins else (args.bins[0], args.bins[1])
    hz = (args.hz[0], args.hz[1]) if args.hz else None
    figures = SpectrogramConfig(bins=bins, hz=hz)
    if args.baseline is None:
        labels = [v["label"] for v in load_run(args.run_dir).variants]
        if not labels:
            raise ValueError(f"{args.run_dir} holds no variants to analyse")
        args.baseline = "baseline" if "baseline" in labels else labels[0]
        if args.baseline != "baseline":
            print(f"note: this run has no 'baseline' variant; comparing against {args.baseline!r} (--baseline to choose)")
    config = AnalysisConfig(
        baseline=args.baseline, reconstruction=not args.no_reconstruction, clap=args.clap,
        clap_model=args.clap_model, music=args.music, references=tuple(args.references), latent=args.latent,
    )
    check_config(config)
    analysis = analyze_run(args.run_dir, config=config)
    print_report(analysis)
    if not analysis.recomputed:
        print("\n(metrics unchanged since the last analysis: nothing recomputed)")
    print(f"\ntables: {load_run(args.run_dir).path / 'summary.md'} and summary.tex (LaTeX), metrics.csv")
    if not args.no_figures:
        written = write_run_figures(args.run_dir, figures, baseline=args.baseline, static=not args.no_static)
        print("\nfigures:")
        for path in written:
            print(f"  {path}")
        if not args.no_static and not any(p.suffix == ".svg" for p in written):
            print("  (PNG and SVG export needs the kaleido package and a Chromium; the HTML figures open in any browser)")
    return 0
