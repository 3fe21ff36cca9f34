"""`recap transfer` (style transfer sweep over strengths) and `recap edit-battery` (editability prompts)."""

from __future__ import annotations

import argparse
import sys

from recap.cli.common import add_model_args, open_backend, print_table, progress_bar, runs_dir
from recap.metrics.clap import DEFAULT_CLAP_MODEL
from recap.generation.transfer import DEFAULT_STRENGTHS


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (each shares its noise across the run)")
    p.add_argument("--seconds", type=float, default=None, help="clip length (default: see above)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--references", nargs="+", default=[], metavar="FILE",
                   help="the token's training clips, to measure how close outputs come to the learned sound")
    p.add_argument("--max-batch", type=int, default=None, help="most clips per denoising call")
    p.add_argument("--pcm16", action="store_true", help="write 16-bit WAV instead of 32-bit float")
    p.add_argument("--out", default=None, help="runs folder (default: $RECAP_HOME/runs)")
    p.add_argument("--no-clap", action="store_true", help="skip the CLAP scores")
    p.add_argument("--clap-model", default=DEFAULT_CLAP_MODEL, help="CLAP checkpoint (Hub id or folder)")
    p.add_argument("--clap-download", action="store_true",
                   help="fetch the CLAP weights from the Hub when they are not cached (default: cache only)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer", help="style transfer: move a source clip towards a prompt at several strengths",
        description="Encodes the source, noises it to each transfer strength on the model's own schedule and "
        "denoises with the prompt (paper 001, eq. 2): 0 = the source, 1 = plain generation. Strength is the "
        "noise's share of the start, sigma^2/(sigma^2+1): 0.5 starts at sigma 1 on every model (the 'start sigma' "
        "column says where each starts). On the toy model the source is lost between 0.2 and 0.3 and 0.8 and up is "
        "plain generation (README, style transfer). Writes a run folder with the source under reference/, and transfer.json / .csv / "
        ".html: the similarity of each strength's outputs to the source and to the token's clips. "
        "Length defaults to the source's, capped at the model's maximum.",
    )
    add_model_args(p)
    p.add_argument("--source", required=True, help="the audio file to transform")
    p.add_argument("--prompt", required=True, help='e.g. "a recording of <oud>"')
    p.add_argument("--strengths", type=float, nargs="+", default=list(DEFAULT_STRENGTHS),
                   help="transfer strengths in [0, 1]")
    p.add_argument("--token", action="append", default=[], help="learned token file (.safetensors) used in the prompt")
    _add_generation_args(p)
    p.set_defaults(func=run_transfer)

    b = sub.add_parser(
        "edit-battery", help="a learned token in new contexts (genre, recording, accompaniment, background)",
        description="Generates every editability template with the token as one run and scores it: CLAP-T "
        "against the template with the class word, CLAP-A and latent cosine against the token's clips. "
        "Length defaults to the model's.",
    )
    add_model_args(b)
    b.add_argument("--token", required=True, help="learned token file (.safetensors)")
    b.add_argument("--templates", default=None, help="file of templates, one per line with {} for the token "
                   "(default: the 20 in assets/battery_templates.txt)")
    b.add_argument("--class-word", default=None, help="word CLAP-T uses for the token (default: its init word)")
    b.add_argument("--with-class-prompts", action="store_true",
                   help="also generate each template with the class word (the CLAP-T ceiling; doubles the clips)")
    _add_generation_args(b)
    b.set_defaults(func=run_battery)


def _model_from_token(args: argparse.Namespace, token_path: str) -> None:
    """Without --model, use the model a token was trained for."""
    from recap.tokens.files import read_token_file

    if args.model is None:
        args.model = read_token_file(token_path).meta.get("model_name") or None


def _references(paths: list[str]):
    from recap.audio_io import load_audio

    return [load_audio(p) for p in paths]


def _clap(args: argparse.Namespace):
    from recap.analysis.transfer_curves import load_clap

    if args.no_clap:
        return None, "turned off (--no-clap)"
    scorer, why = load_clap(args.clap_model, allow_download=args.clap_download)
    if scorer is None and not args.clap_download:
        why += " (--clap-download fetches it from the Hub; --clap-model takes a local folder)"
    return scorer, why


def run_transfer(args: argparse.Namespace) -> int:
    from recap.audio_io import load_audio
    from recap.errors import BadInput
    from recap.generation.grid import check_prompt, check_work
    from recap.tokens.files import load_token
    from recap.generation.transfer import MAX_REFERENCES, TransferConfig, sweep_work, transfer
    from recap.analysis.transfer_curves import save_transfer, similarity_curves

    # Every bound the core applies that does not need the model or the audio, checked first
    check_prompt("the prompt", args.prompt)
    config = TransferConfig(
        strengths=args.strengths, seeds=args.seeds, seconds=args.seconds, steps=args.steps, guidance=args.guidance,
        negative_prompt=args.negative_prompt, max_batch=args.max_batch, wav_subtype="PCM_16" if args.pcm16 else "FLOAT",
    ).check()
    if config.steps is not None:
        check_work(*sweep_work(config), what="this sweep")
    if len(args.references) > MAX_REFERENCES:
        raise BadInput(f"{len(args.references)} reference clips is too many; the limit is {MAX_REFERENCES}")
    if args.token:
        _model_from_token(args, args.token[0])
    source = load_audio(args.source)
    references = _references(args.references)
    backend = open_backend(args)
    tokens, token_info = {}, []
    for path in args.token:
        tok = load_token(backend, path)
        tokens[tok.placeholder] = tok.vectors
        token_info.append(tok.summary())
        if tok.placeholder not in args.prompt:
            print(f"note: the prompt does not use {tok.placeholder}", file=sys.stderr)
    with progress_bar("transfer") as progress:
        result = transfer(backend, source, args.prompt, config, tokens=tokens or None, references=references,
                          progress=progress)
    scorer, why = _clap(args)
    curves = similarity_curves(result, backend, scorer, why)
    manifest = save_transfer(result, backend, runs_dir(args.out), curves, token_info, static=True)
    print(f"run {manifest.run_id} -> {manifest.path}")
    print(f"model {backend.label}; {result.config.steps} steps, {result.config.seconds:.2f} s, "
          f"seeds {result.config.seeds}; prompt {args.prompt!r}")
    keys = [("source_cosine", "cos->source"), ("source_l2", "L2->source"), ("target_cosine", "cos->token"),
            ("target_l2", "L2->token"), ("clap_source", "CLAP-A->source"), ("clap_target", "CLAP-A->token")]
    shown = [(k, h) for k, h in keys if any(getattr(p, k) is not None for p in curves.points)]
    rows = [[f"{p.strength:.2f}", p.steps_run, f"{p.sigma:.4g}", *[getattr(p, k) for k, _ in shown]]
            for p in curves.points]
    print("Similarity of the outputs to the source and to the token's clips (latent cosine / unit L2, "
          "mean over seeds; paper 001, Fig. 4):")
    print_table(["strength", "steps run", "start sigma", *[h for _, h in shown]], rows)
    for note in curves.notes:
        print(f"note: {note}")
    print(f"curves: {manifest.path / 'transfer.csv'}, figure: {manifest.path / 'transfer.html'}")
    return 0


def run_battery(args: argparse.Namespace) -> int:
    from recap.tokens.battery import BatteryConfig, load_templates, per_template, run_battery, save_battery, score_battery
    from recap.generation.grid import GenerationConfig
    from recap.tokens.files import load_token

    generation = GenerationConfig(  # checked before anything loads
        seconds=args.seconds, steps=args.steps, guidance=args.guidance, negative_prompt=args.negative_prompt,
        seeds=args.seeds, max_batch=args.max_batch, wav_subtype="PCM_16" if args.pcm16 else "FLOAT",
    ).check()
    _model_from_token(args, args.token)
    templates = load_templates(args.templates)
    references = _references(args.references)
    backend = open_backend(args)
    token = load_token(backend, args.token)
    config = BatteryConfig(templates=templates, class_word=args.class_word, with_class_prompts=args.with_class_prompts,
                           templates_file=str(args.templates) if args.templates else "assets/battery_templates.txt")
    with progress_bar("edit battery") as progress:
        result = run_battery(backend, token, generation, config, progress=progress)
    scorer, why = _clap(args)
    scores = score_battery(result, backend, token, config, references, scorer, why)
    manifest = save_battery(result, backend, token, config, runs_dir(args.out), scores, references)
    print(f"run {manifest.run_id} -> {manifest.path}")
    print(f"model {backend.label}; token {token.placeholder}; {len(templates)} templates x {len(args.seeds)} seed(s) "
          f"= {len(result.clips)} clips in {result.denoising_calls} denoising call(s)")
    rows = per_template(scores)
    keys = [("latent_cosine", "latent cos->token"), ("clap_t", "CLAP-T"), ("clap_a", "CLAP-A"),
            ("clap_t_class", "CLAP-T class word")]
    shown = [(k, h) for k, h in keys if any(r.get(k) is not None for r in rows)]
    print_table(["#", "prompt", *[h for _, h in shown]],
                [[i, r["prompt"], *[r.get(k) for k, _ in shown]] for i, r in enumerate(rows, 1)])
    s = scores.summary
    labels = {"clap_t": "CLAP-T (token clips vs class-word text)",
              "clap_t_ceiling": "CLAP-T ceiling (class-word clips)",
              "clap_t_floor": "CLAP-T floor (training clips)", "clap_a": "CLAP-A (vs training clips)",
              "clap_a_ceiling": "CLAP-A ceiling (training clips among themselves)",
              "latent_cosine": "latent cosine to the training clips"}
    for k, text in labels.items():
        if s.get(k) is not None:
            print(f"{text}: {s[k]:.4f}")
    for note in scores.notes:
        print(f"note: {note}")
    print(f"scores: {manifest.path / 'battery.csv'}")
    return 0
