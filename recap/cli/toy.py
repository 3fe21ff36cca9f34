"""`recap toy train` (rebuild a shipped toy model: `toy`, or `toy-music` with `--world music`) and `recap toy eval`
(measure it against its world)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, fields
from pathlib import Path

from recap.cli.common import print_table, progress_bar
from recap.config import settings

SWEEP_FILE = "TI_SWEEP.md"
WORLDS = ("toy", "music")


def register(sub: argparse._SubParsersAction) -> None:
    from recap.toy.train import ToyConfig

    p = sub.add_parser("toy", help="the toy world model: train it, measure it")
    toy = p.add_subparsers(dest="toy_command", required=True)

    train = toy.add_parser("train", help="train the toy VAE, then its DiT + text encoder (resumable)")
    train.add_argument("--work", default=None, help="checkpoints folder (default: $RECAP_HOME/toy-train); rerun to resume")
    train.add_argument("--out", default=None, help="where the model goes (default: the shipped assets/toy)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--world", choices=WORLDS, default="toy",
                       help="toy: synthetic sounds (assets/toy); music: soundfont renderings (assets/toy-music)")
    # recipe options default to the chosen world's recipe (recap.toy.train.recipe)
    defaults = ToyConfig()
    for f in fields(ToyConfig):
        value = getattr(defaults, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            train.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=None, help=f"recipe: {f.name} (toy: {value})")
        elif isinstance(value, list):
            train.add_argument(f"--{f.name.replace('_', '-')}", type=int, nargs="+", default=None, help=f"recipe: {f.name} (toy: {value})")
    train.set_defaults(func=run_train)

    ev = toy.add_parser("eval", help="prompt steering, rewording vs content, and a Textual Inversion check")
    ev.add_argument("--world", choices=WORLDS, default="toy",
                    help="toy: the `toy` model; music: the `toy-music` model (instrument, register, tempo and key following)")
    ev.add_argument("--seeds", type=int, default=8, help="seeds per prompt")
    ev.add_argument("--seed-start", type=int, default=None,
                    help="first seed (seeds are seed-start .. seed-start + seeds - 1): pick ones never tuned on "
                         "(default: 0; 600 for --world music)")
    ev.add_argument("--draws", type=int, nargs="+", default=[7, 8, 9],
                    help="training/unseen clip draws for --controls (one token per draw; intervals over draws)")
    ev.add_argument("--controls", action="store_true",
                    help="Textual Inversion against its controls (a token on another concept, plain words, the "
                         "untrained word, the init word, the VAE ceiling): on the warble, or with --world music on "
                         "the held-out marimba from 1 and from 3 clips")
    ev.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    ev.add_argument("--guidance", type=float, default=None)
    ev.add_argument("--ti", action="store_true", help="also run the Textual Inversion check on the held-out warble")
    ev.add_argument("--ti-steps", type=int, default=None, help="Textual Inversion steps (default: 100; 150 for --world music)")
    ev.add_argument("--ti-lr", type=float, default=2e-2)
    ev.add_argument("--ti-vectors", type=int, default=1)
    ev.add_argument("--init-word", default="siren")
    ev.add_argument("--json", default=None, help="also write the numbers to this file")
    ev.add_argument("--card", action="store_true", help="rewrite the shipped MODEL_CARD.md with these measurements")
    ev.set_defaults(func=run_eval)

    sw = toy.add_parser("ti-sweep", help="Textual Inversion on the held-out warble, one setting changed at a time")
    sw.add_argument("--data-seeds", type=int, nargs="+", default=[7, 8, 9, 10], help="training-clip draws averaged per setting")
    sw.add_argument("--only", nargs="+", default=None, help="run only settings whose name contains one of these")
    sw.add_argument("--json", default=None, help="also write the numbers to this file")
    sw.add_argument("--card", action="store_true", help=f"write the table to the shipped {SWEEP_FILE}")
    sw.set_defaults(func=run_sweep)

    tc = toy.add_parser("transfer-curve", help="where style transfer's strength bends: a low hum pushed towards "
                        "'a high repeating beep'")
    tc.add_argument("--seeds", type=int, nargs="+", default=list(range(100, 108)),
                    help="sweep seeds (default 100-107: seeds no other toy measurement uses)")
    tc.add_argument("--steps", type=int, default=25)
    tc.add_argument("--guidance", type=float, default=4.0)
    tc.set_defaults(func=run_transfer_curve)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from recap.backends.registry import TOY_DIR, TOY_MUSIC_DIR
    from recap.toy.train import ToyConfig, recipe, train

    if args.threads:
        torch.set_num_threads(args.threads)
    config = recipe(args.world, **{f.name: getattr(args, f.name) for f in fields(ToyConfig)
                                   if f.name != "world" and getattr(args, f.name, None) is not None})
    music = args.world == "music"
    work = Path(args.work) if args.work else settings().home / ("toy-music-train" if music else "toy-train")
    out = Path(args.out) if args.out else (TOY_MUSIC_DIR if music else TOY_DIR)
    bars: dict[str, object] = {}
    with progress_bar("toy VAE", unit="step") as vae_bar, progress_bar("toy DiT", unit="step") as dit_bar:
        bars = {"vae": vae_bar, "dit": dit_bar}

        def progress(stage: str, step: int, total: int, loss: float) -> None:
            bars[stage](step, total, f"loss {loss:.4f}")

        train(config, work, out, progress)
    print(f"{'toy-music' if music else 'toy'} model written to {out} (checkpoints in {work})")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from recap.backends.loading import load_backend
    from recap.toy.evaluation import (
        TIProtocol,
        prompt_following,
        rendering_check,
        rendering_markdown,
        rewording_cosines,
        steering,
        textual_inversion_check,
        ti_controls,
        ti_controls_markdown,
    )

    if args.seeds < 2:
        raise ValueError(f"--seeds must be >= 2, got {args.seeds}")
    if args.world == "music":
        return run_music_eval(args)
    if args.seed_start is None:
        args.seed_start = 0
    backend = load_backend("toy", device="cpu")
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    report: dict = {"steering": [], "rewording": []}
    for s in steering(backend, seeds, args.steps, args.guidance):
        a, b = s.values
        print(f"{s.feature}: {s.prompts[0]!r} {min(a):.3g}..{max(a):.3g} vs {s.prompts[1]!r} {min(b):.3g}..{max(b):.3g}"
              f" -> {'separated' if s.separated else 'OVERLAP'} (gap {s.gap:.3g})")
        report["steering"].append({**asdict(s), "separated": s.separated, "gap": s.gap})
    for row in rewording_cosines(backend, seeds, args.steps, args.guidance):
        print(f"clip latent cosine to {row['prompt']!r} (same seed): trained synonyms {row['reworded']!r} "
              f"{_with_ci(row, 'reworded')}, held-out synonyms {row['held_out']!r} {_with_ci(row, 'held_out')}, "
              f"another source {row['other']!r} {_with_ci(row, 'other')}")
        report["rewording"].append(row)
    following = prompt_following(backend, seeds, args.steps, args.guidance)
    report["prompt_following"] = following
    print("prompt following (reference classifier, 48 prompts): "
          + ", ".join(f"{k} {v:.0%}" for k, v in following.items()) + " (chance: source 1/8, pitch 1/3, rhythm 1/2)")
    check = rendering_check(backend)
    report["rendering"] = check
    print(rendering_markdown(check))
    if args.ti:
        protocol = TIProtocol(init_word=args.init_word, seeds=tuple(seeds), steps=args.steps, guidance=args.guidance,
                              ti={"steps": args.ti_steps or 100, "learning_rate": args.ti_lr, "n_vectors": args.ti_vectors, "batch_size": 4})
        result = textual_inversion_check(backend, protocol)
        print(f"TI on {protocol.spec}: token distance {result.token_distance:.3f}, init word {args.init_word!r} "
              f"{result.init_distance:.3f}, margin {result.margin:.3f}")
        report["ti"] = {**asdict(result), "margin": result.margin}
    if args.controls:
        if len(args.draws) < 3:
            raise ValueError(f"--draws needs at least 3 draws for an interval, got {len(args.draws)}")
        from tqdm import tqdm

        with tqdm(total=len(args.draws), desc="TI controls (draws)", unit="draw") as bar:
            controls = ti_controls(backend, args.draws, seeds, {"steps": args.ti_steps or 100, "learning_rate": args.ti_lr,
                                                                "n_vectors": args.ti_vectors},
                                   args.steps, args.guidance, init_word=args.init_word, on_draw=lambda _: bar.update())
        report["ti_controls"] = controls
        print(ti_controls_markdown(controls))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.card:
        write_card(report, args)
    return 0


def run_music_eval(args: argparse.Namespace) -> int:
    from recap.backends.loading import load_backend
    from recap.backends.registry import TOY_MUSIC_DIR
    from recap.paths import atomic_write_bytes, replace_dir
    from recap.toy.music_eval import TI_TOKENS_DIR, evaluate, markdown, model_card, ti_controls, ti_controls_markdown

    # the card's tokens ship beside the weights (for the CI check of their margin); staged, so that
    # a stopped run leaves the shipped tokens and card as they were
    staged = TOY_MUSIC_DIR / f".{TI_TOKENS_DIR}.tmp" if args.card and args.controls else None
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)  # a stopped run's draws
    start = 600 if args.seed_start is None else args.seed_start
    seeds = list(range(start, start + args.seeds))
    backend = load_backend("toy-music", device="cpu")
    report = evaluate(backend, seeds, args.steps, args.guidance)
    text = markdown(report)
    print(text)
    if args.controls:
        if len(args.draws) < 3:
            raise ValueError(f"--draws needs at least 3 draws for an interval, got {len(args.draws)}")
        with progress_bar("TI controls", unit="draw") as bar:
            report["ti_controls"] = ti_controls(
                backend, args.draws, seeds, ti={"steps": args.ti_steps or 150, "learning_rate": args.ti_lr,
                                                "n_vectors": args.ti_vectors},
                steps=args.steps, guidance=args.guidance, on_draw=lambda d: bar(args.draws.index(d) + 1, len(args.draws), f"draw {d}"),
                keep=staged)
        controls = ti_controls_markdown(report["ti_controls"])
        print(controls)
        text = f"{text}\n\n{controls}"
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.card:
        config = json.loads((TOY_MUSIC_DIR / "toy_config.json").read_text())
        timings = json.loads((TOY_MUSIC_DIR / "training.json").read_text())
        atomic_write_bytes(TOY_MUSIC_DIR / "MODEL_CARD.md", model_card(config, timings, text).encode())
        print(f"wrote {TOY_MUSIC_DIR / 'MODEL_CARD.md'}", file=sys.stderr)
        if staged is not None:
            replace_dir(staged, TOY_MUSIC_DIR / TI_TOKENS_DIR)
            print(f"wrote {TOY_MUSIC_DIR / TI_TOKENS_DIR}", file=sys.stderr)
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from recap.backends.loading import load_backend
    from recap.backends.registry import TOY_DIR
    from recap.paths import atomic_write_bytes
    from recap.toy.evaluation import SWEEP, sweep_markdown, ti_sweep

    settings = [s for s in SWEEP if not args.only or any(o in s.name for o in args.only)]
    if not settings:
        raise ValueError(f"no sweep setting matches {args.only}; settings: {'; '.join(s.name for s in SWEEP)}")
    backend = load_backend("toy", device="cpu")
    with progress_bar("TI sweep", unit="run") as bar:
        sweep = ti_sweep(backend, settings, args.data_seeds, progress=bar)
    table = sweep_markdown(sweep)
    print(table)
    note = (f"The VAE's own renderings of the unseen warbles (encode -> decode) are read as warble in "
            f"{sweep['rendered_share']:.0%} of clips and lie {sweep['ceiling_distance']:.3f} from the real ones.")
    print(note)
    if args.json:
        Path(args.json).write_text(json.dumps(sweep, indent=1))
    if args.card:
        text = (f"# Textual Inversion on the held-out warble: one setting at a time\n\n"
                f"Written by `recap toy ti-sweep`; each row is the mean over training-clip draws {sweep['data_seeds']} "
                f"(3 clips each), 8 generated clips per prompt, distances in standardised reference features.\n\n"
                f"{table}\n\n{note}\n")
        atomic_write_bytes(TOY_DIR / SWEEP_FILE, text.encode())
        print(f"wrote {TOY_DIR / SWEEP_FILE}", file=sys.stderr)
    return 0


def run_transfer_curve(args: argparse.Namespace) -> int:
    from recap.backends.loading import load_backend
    from recap.toy.transfer_curve import transfer_curve

    backend = load_backend("toy", device="cpu")
    rows = transfer_curve(backend, args.seeds, steps=args.steps, guidance=args.guidance)
    print(f"clip latent cosine of the outputs, mean over seeds {args.seeds}; {args.steps} steps, guidance {args.guidance}")
    print_table(["strength", "start sigma", "steps run", "to the source", "to the target clips"],
                [[f"{r.strength:.2f}", f"{r.sigma:.3g}", r.steps_run, f"{r.to_source:.3f}", f"{r.to_target:.3f}"]
                 for r in rows])
    return 0


def _with_ci(row: dict, name: str) -> str:
    ci = row[f"ci_{name}"]
    return f"{row[f'cos_{name}']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " (n too small for an interval)")


def write_card(report: dict, args: argparse.Namespace) -> None:
    from recap.backends.registry import TOY_DIR
    from recap.paths import atomic_write_bytes
    from recap.toy import world as W
    from recap.toy.evaluation import model_card, rendering_markdown, ti_controls_markdown

    lines = [f"Over seeds {args.seed_start}-{args.seed_start + args.seeds - 1}, {args.steps or 'default'} steps, "
             f"guidance {args.guidance or 'default'} "
             "(`recap toy eval`; reference features of `recap/toy/world.py`):", ""]
    for s in report["steering"]:
        a, b = s["values"]
        lines.append(f"- {s['feature']}: {s['prompts'][0]!r} {min(a):.3g}..{max(a):.3g} vs {s['prompts'][1]!r} "
                     f"{min(b):.3g}..{max(b):.3g} ({'fully separated' if s['separated'] else 'overlapping'})")
    f = report["prompt_following"]
    lines.append(f"- a reference classifier reads the prompt's source / pitch / rhythm in {f['source']:.0%} / {f['pitch']:.0%} / "
                 f"{f['rhythm']:.0%} of clips of all {len(W.all_specs())} \"a <pitch> <rhythm> <source>\" prompts "
                 "(chance 1/8, 1/3, 1/2; the VAE's reconstructions bound the source share, see Known limits)")
    for r in report["rewording"]:
        lines.append(f"- clip latent cosine (same seed) of {r['prompt']!r}: with {r['reworded']!r} (trained synonyms) "
                     f"{_with_ci(r, 'reworded')}, with {r['held_out']!r} (held-out synonyms) {_with_ci(r, 'held_out')}, "
                     f"with {r['other']!r} (another source) {_with_ci(r, 'other')}")
    for r in report["rewording"]:
        less, held = r["cos_reworded"] > r["cos_other"], r["cos_held_out"] > r["cos_other"]
        lines.append(f"- so for {r['prompt']!r}: a rewording in trained synonyms moves the clip "
                     f"{'less' if less else 'MORE'} than another source does; one in held-out synonyms "
                     f"{'less' if held else 'MORE'}")
    if "ti" in report:
        t = report["ti"]
        lines.append(f"- Textual Inversion on 3 held-out warble clips (init {t['protocol']['init_word']!r}): feature distance "
                     f"to unseen warbles {t['token_distance']:.3f} (token) vs {t['init_distance']:.3f} (init word); "
                     f"pitch-modulation only {t['token_fm_distance']:.3f} vs {t['init_fm_distance']:.3f}; to the VAE's "
                     f"reconstructions of those warbles {t['token_rendered_distance']:.3f} vs {t['init_rendered_distance']:.3f} "
                     f"(the reconstructions themselves lie {t['ceiling_distance']:.3f} from the real clips); read as warble "
                     f"{t['token_share']:.0%} vs {t['init_share']:.0%} (reconstructions: {t['rendered_share']:.0%})")
    if "ti_controls" in report:
        c = report["ti_controls"]
        lines += ["", f"**Textual Inversion against its controls** (`recap toy eval --controls`): {c['n_train']} training "
                  f"clips per draw, draws {', '.join(map(str, c['draws']))} (one token per draw; intervals over draws), "
                  f"{c['ti']['steps']} steps, init word {c['init_word']!r}; every condition compared with {c['n_unseen']} "
                  "unseen warbles of the same draw. Distances: lower is closer; vibrato: "
                  "`recap.toy.world.vibrato` (pitch-track amplitude at 8-14 Hz).", "", ti_controls_markdown(c)]
    config = json.loads((TOY_DIR / "toy_config.json").read_text())
    timings = json.loads((TOY_DIR / "training.json").read_text()) if (TOY_DIR / "training.json").is_file() else {}
    card = model_card(config, timings, "\n".join(lines), rendering_markdown(report["rendering"]))
    atomic_write_bytes(TOY_DIR / "MODEL_CARD.md", card.encode())
    print(f"wrote {TOY_DIR / 'MODEL_CARD.md'}", file=sys.stderr)
