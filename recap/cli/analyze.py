"""`recap analyze RUN_DIR`: the thesis tables for a run, plus spectrogram figures."""

from __future__ import annotations

import argparse
import sys

from recap.analysis.scoring import AnalysisConfig, RunAnalysis, analyze_run, check_config
from recap.metrics.clap import DEFAULT_CLAP_MODEL
from recap.cli.common import print_table
from recap.analysis.tables import SummaryRow, interval_text, unit_text
from recap.generation.runs import load_run
from recap.analysis.spectrogram import DEFAULT_BINS, SpectrogramConfig, write_run_figures

# (table, metrics to show, heading); the thesis tables in the order the thesis gives them, each
# followed by what puts it in proportion.
TABLES = [
    ("vs_baseline", ("cosine", "l2"),
     "Baseline vs variant, same seed: clip latent cosine (lower = more different) and unit L2 "
     "(higher = more different) [thesis Tables 5.1 / 5.3]"),
    ("seed_variance", ("cosine", "l2"),
     "Generation variance: same prompt, different seeds [thesis 4.3.1]. A wording effect shows only where "
     "it exceeds this"),
    ("wording_effect", ("distance_ratio",),
     "Wording effect against generation variance: mean (1 - cosine) to the baseline / mean (1 - cosine) between "
     "the baseline's seeds (> 1: the rewording moves the clip further than a new seed does)"),
    ("text", ("cosine",), "Text-embedding cosine with the baseline prompt (mean-pooled text encoder) [thesis Table 5.2]"),
    ("reconstruction", ("audio_mse", "audio_l2_raw", "latent_mse", "latent_l2_raw"),
     "Reconstruction: x vs decode(encode(x)) (waveform) and encode(x) vs encode(decode(encode(x))) (clip latent), "
     "beside the same quantities for a seed change and for the closest rewording: if the round trip is far "
     "below both, the autoencoder is not what makes clips differ [thesis 4.4.2 / Table 5.4]"),
    ("clap", ("clap_a", "clap_t"), "CLAP-A (audio vs references) and CLAP-T (audio vs its prompt) [paper 001]"),
    ("music", ("tempo_match", "key_match", "scale_match", "loudness_match"),
     "Music: share of clips matching the references (tempo +-5 BPM, key, scale, loudness +-2.5 LU) [paper 001]"),
    ("toy_features", ("centroid_hz", "loudness_variation", "flatness", "fm_depth"),
     "Toy world reference features (model-free): spectral centroid, loudness variation (0 steady, ~1 on/off), "
     "flatness (0 tone, 1 noise), pitch-modulation depth"),
]
INTERVALS = ("Intervals: a variant over its seeds (t), generation variance over clips (jackknife), a tier or "
             "'all' over variants (cluster-robust t: one run is one prompt), ratios by the delta method; "
             "no interval below 3 units ('n too small').")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="latent / text / reconstruction metrics and spectrograms of a run",
        description="Computes the thesis tables for a run folder, writes RUN_DIR/metrics.json, "
        "RUN_DIR/metrics.csv and RUN_DIR/figures/. Results are cached: repeating it is instant. "
        "The run's model is loaded only when a clip is not cached yet (RECAP_DEVICE / RECAP_DTYPE apply).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (with manifest.json)")
    p.add_argument("--bins", type=int, nargs=2, metavar=("LO", "HI"), default=list(DEFAULT_BINS),
                   help="spectrogram rows [LO, HI) of 512 to show (default: 100 150, as in the thesis)")
    p.add_argument("--hz", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="show this band in Hz instead of --bins")
    p.add_argument("--all-bins", action="store_true", help="show all 512 rows")
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
    p.set_defaults(func=run)


def _fmt(v: float | None) -> str:
    # Six significant digits: cosines of 0.999996 must not print as 1, MSEs of 1e-8 not as 0.
    # A value that was not a number is stored as null (strict JSON) and printed as such.
    return "n/a" if v is None else f"{v:.6g}"


def _rows(rows: list[SummaryRow]) -> list[list[object]]:
    return [[f"{r.latent} {r.metric}" if r.latent else r.metric, r.group, _fmt(r.mean), _fmt(r.std),
             _fmt(r.variance), r.n, interval_text(r, _fmt), unit_text(r)] for r in rows]


def print_report(a: RunAnalysis, out=None) -> None:
    """Prints the analysis as thesis-style tables, each row with its interval, n, unit and method."""
    out = out or sys.stdout
    model = a.model.get("name", "?")
    print(f"run {a.run_id}  model {model}  clips {len(a.clips)}  baseline {a.config.baseline!r}  "
          f"pair scores on the {a.latent}", file=out)
    for note in a.notes:
        print(f"note: {note}", file=out)
    print(INTERVALS, file=out)
    # A tier holding a single variant repeats that variant's row: leave it out.
    variants_in: dict[str, set[str]] = {}
    for c in a.clips:
        variants_in.setdefault(f"tier {c['tier']}", set()).add(c["variant"])
    redundant = {b for b, labels in variants_in.items() if len(labels) == 1}
    for table, names, heading in TABLES:
        rows = [r for m in names for r in a.table(table, m) if r.group_kind != "tier" or r.group not in redundant]
        if not rows:
            continue
        print(f"\n{heading}", file=out)
        print_table(["metric", "group", "mean", "std", "variance", "n", f"{a.config.confidence:.0%} CI",
                     "interval over"], _rows(rows), out=out)


def run(args: argparse.Namespace) -> int:
    # The figure settings are checked before any analysis runs (a bad bin range costs nothing).
    bins = None if args.all_bins else (args.bins[0], args.bins[1])
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
    if not args.no_figures:
        written = write_run_figures(args.run_dir, figures, baseline=args.baseline)
        print("\nfigures:")
        for path in written:
            print(f"  {path}")
        if not any(p.suffix == ".png" for p in written):
            print("  (PNG export needs the kaleido package and a Chrome/Chromium; the HTML figures open in any browser)")
    return 0
