"""`recap generate` (a comparison grid into a run folder) and `recap models`."""

from __future__ import annotations

import argparse

import numpy as np

from recap.backends.registry import availability, list_specs
from recap.cli.common import add_model_args, open_backend, print_table, progress_bar, runs_dir
from recap.generation.grid import GenerationConfig, check_variants, check_work, generate_grid, make_variants, save_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate baseline + variants x seeds from identical noise")
    add_model_args(p)
    p.add_argument("--prompt", required=True, help="the baseline prompt")
    p.add_argument("--variant", action="append", default=[], help="a rewording to compare (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (one grid column each)")
    p.add_argument("--seconds", type=float, default=None, help="clip length (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--token", action="append", default=[], help="learned token file (.safetensors) to use in prompts")
    p.add_argument("--max-batch", type=int, default=None, help="most clips per denoising call (default: automatic)")
    p.add_argument("--pcm16", action="store_true", help="write 16-bit WAV instead of 32-bit float")
    p.add_argument("--fast-preview", action="store_true",
                   help="denoise only the requested length, not the model's full window (faster; fidelity not guaranteed)")
    p.add_argument("--out", default=None, help="runs folder (default: $RECAP_HOME/runs)")
    p.set_defaults(func=run)

    m = sub.add_parser("models", help="list the known models and whether each can be used here")
    m.set_defaults(func=run_models)


def run(args: argparse.Namespace) -> int:
    # Every bound the core applies that does not need the model, checked before loading it (seconds)
    variants = make_variants(args.prompt, args.variant)
    check_variants(variants)
    config = GenerationConfig(
        seconds=args.seconds, steps=args.steps, guidance=args.guidance, negative_prompt=args.negative_prompt,
        seeds=args.seeds, max_batch=args.max_batch, wav_subtype="PCM_16" if args.pcm16 else "FLOAT", fast_preview=args.fast_preview,
    ).check()
    n_clips = len(variants) * len(config.seeds)
    check_work(n_clips, n_clips * (config.steps or 1))
    backend = open_backend(args)
    token_vectors, token_info = {}, []
    if args.token:
        from recap.tokens.files import load_token

        for path in args.token:
            tok = load_token(backend, path)
            token_vectors[tok.placeholder] = tok.vectors
            token_info.append(tok.summary())
    if token_vectors:
        for v in variants:
            if any(p in v.prompt for p in token_vectors):
                v.method = "token" if v.label != "baseline" else v.method
    with progress_bar("generating") as progress:
        result = generate_grid(backend, variants, config, tokens=token_vectors or None, progress=progress)
    manifest = save_run(result, backend, runs_dir(args.out), token_info=token_info)
    print(f"run {manifest.run_id} -> {manifest.path}")
    print(f"model {backend.label}; {len(result.clips)} clips in {result.denoising_calls} denoising call(s), "
          f"{result.seconds_elapsed:.2f} s")
    rows = []
    for rec, clip in zip(manifest.clips, result.clips):
        rows.append([rec.variant, rec.seed, round(rec.seconds, 3), float(np.abs(clip.audio).max()), rec.audio,
                     manifest.variant(rec.variant)["prompt"]])
    print_table(["variant", "seed", "seconds", "peak", "file", "prompt"], rows)
    for label, words in result.unreadable.items():
        print(f"warning: {backend.name} reads these words of {label!r} as unknown (<unk>): {' '.join(words)}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    rows = [[spec.name, spec.family, availability(spec), spec.licence, spec.description] for spec in list_specs()]
    print_table(["name", "family", "here", "licence", "description"], rows)
    return 0
