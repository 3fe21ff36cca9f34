"""`recap fad RUN --reference FOLDER_OR_TOKEN`: FAD and KAD of a run's clips against reference clips."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from recap.audio_io import load_audio
from recap.cli.common import print_table
from recap.config import settings
from recap.errors import BadInput, ModelUnavailable
from recap.generation.runs import RunManifest, load_run
from recap.metrics.fad import EMBEDDINGS, KAD_SCALE, MIN_CLIPS, DistanceResult, embed_clips, fad, kad
from recap.paths import atomic_write_bytes, inside, json_bytes, safe_name

FORMAT = "recap.fad/1"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff"}
# Every reference clip is decoded and embedded; FAD wants many, but not an archive's worth by accident.
MAX_REFERENCE_CLIPS = 2000
CLAP_PRESET_OF = {"clap": "recap", "clap-paper": "paper"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fad", help="FAD and KAD of a run's clips against reference clips",
        description="Fréchet Audio Distance (fadtk's definition) and Kernel Audio Distance (kadtk's, x100) of "
        "each variant's clips, and of all clips, against reference clips: a folder of audio files, or a "
        "learned token's training clips. Small sets get a warning: FAD needs many more clips than embedding "
        "dimensions; KAD is unbiased and fits small sets.",
    )
    p.add_argument("run", metavar="RUN_ID_OR_DIR", help="a run folder, or the id of a run under $RECAP_HOME/runs")
    p.add_argument("--reference", required=True, metavar="FOLDER_OR_TOKEN",
                   help="a folder of reference clips, or a learned token (file, name or placeholder) whose "
                        "training clips are the reference")
    p.add_argument("--clips-dir", default=None, metavar="DIR",
                   help="where a token's training clips are (the token keeps only their names; default: "
                        "the token's own folder)")
    p.add_argument("--embedding", choices=list(EMBEDDINGS), default="clap-paper",
                   help="clap-paper: LAION-CLAP fused with stable-audio-metrics' preprocessing, as papers "
                        "report it (needs laion/clap-htsat-fused weights); clap: recap's own CLAP preset; "
                        "vae-latent: the run model's own autoencoder, mean-pooled over time (offline, not "
                        "comparable to published FAD). Default: clap-paper")
    p.add_argument("--clap-model", default=None, metavar="ID_OR_DIR",
                   help="another CLAP checkpoint with the chosen preset's preprocessing")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- inputs
def resolve_run(run: str) -> RunManifest:
    """A run folder, or a run id under the runs folder (:class:`BadInput` naming it otherwise)."""
    path = Path(run)
    if path.is_dir():
        return load_run(path)
    runs = settings().runs_dir
    if safe_name(run, max_len=120) == run and (runs / run).is_dir():
        return load_run(runs / run)
    raise BadInput(f"{run!r} is neither a run folder nor the id of a run in {runs}")


def resolve_reference(reference: str, clips_dir: str | None = None) -> tuple[list[Path], str]:
    """The reference clip files and a sentence saying where they come from.

    Args:
        reference: a folder of audio files, or a learned token: its ``.safetensors`` file, or its
            name / placeholder in the tokens folder.
        clips_dir: where a token's training clips are (default: the token's folder).

    Raises:
        BadInput: no such folder or token, a folder without audio, or a token whose clips are
            not found (the message names them).
    """
    path = Path(reference)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise BadInput(f"--reference {reference}: the folder holds no audio files "
                           f"({', '.join(sorted(AUDIO_SUFFIXES))})")
        return _bounded(files, reference), f"{len(files)} clip(s) in {path}"
    if path.suffix == ".safetensors" or len(path.parts) > 1:  # a path, not a token name
        token_file = path
    else:
        token_file = settings().tokens_dir / f"{safe_name(reference, fallback='token')}.safetensors"
    if not token_file.is_file():
        where = "" if token_file == path else f" (looked for {token_file})"
        raise BadInput(f"--reference {reference!r} is neither a folder nor a learned token{where}")
    from recap.tokens.files import read_token_file

    token = read_token_file(token_file)
    names = [n for n in token.meta.get("clip_names") or [] if isinstance(n, str) and n]
    if not names:
        raise BadInput(f"token {token.placeholder} ({token_file.name}) records no training clips; "
                       "pass the folder of its clips as --reference")
    folder = Path(clips_dir) if clips_dir else token_file.parent
    found, missing = [], []
    for name in names:
        # Names come from a token file, which may come from anyone: a bare file name inside the folder only.
        try:
            candidate = inside(folder, name) if Path(name).name == name else None
        except ValueError:
            candidate = None
        (found if candidate is not None and candidate.is_file() else missing).append(candidate or name)
    if missing:
        shown = ", ".join(str(Path(m).name) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BadInput(f"token {token.placeholder} was trained on {len(names)} clip(s); {len(missing)} are not in "
                       f"{folder} ({shown}). recap keeps only their names: pass the folder that holds them "
                       "with --clips-dir, or a folder of reference clips as --reference")
    return _bounded(found, reference), f"the {len(found)} training clip(s) of token {token.placeholder} in {folder}"


def _bounded(files: list[Path], reference: str) -> list[Path]:
    if len(files) > MAX_REFERENCE_CLIPS:
        raise BadInput(f"--reference {reference}: {len(files):,} clips is too many; the limit is {MAX_REFERENCE_CLIPS:,}")
    if len(files) < MIN_CLIPS:
        raise BadInput(f"--reference {reference}: {len(files)} clip; FAD and KAD need at least {MIN_CLIPS}")
    return files


def _embedder(args: argparse.Namespace, run: RunManifest) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """Keyword arguments for :func:`embed_clips`, the embedding's label, and the CLAP description."""
    if args.embedding == "vae-latent":
        from recap.backends.loading import load_backend

        s = settings()
        backend = load_backend(str(run.model.get("name")), device=s.device, dtype=s.dtype)
        return {"backend": backend}, f"{EMBEDDINGS['vae-latent']} of {backend.name}", None
    from recap.metrics.clap import ClapScorer, ClapUnavailable

    try:
        scorer = ClapScorer.from_preset(CLAP_PRESET_OF[args.embedding], model=args.clap_model)
    except ClapUnavailable as exc:
        raise ModelUnavailable(f"{exc} For an offline measure, use --embedding vae-latent.") from None
    return {"scorer": scorer}, f"{args.embedding}: {scorer.label}", scorer.describe()


# ----------------------------------------------------------------------------- output
def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6g}"


def _as_json(r: DistanceResult | None) -> dict[str, Any] | None:
    return None if r is None else r._asdict()


def run(args: argparse.Namespace) -> int:
    # 1. Check inputs (cheap ones first: nothing is loaded before they pass)
    manifest = resolve_run(args.run)
    ref_files, ref_note = resolve_reference(args.reference, args.clips_dir)
    clips_of: dict[str, list] = {v["label"]: [] for v in manifest.variants}
    for c in manifest.clips:
        clips_of[c.variant].append(c)
    if len(manifest.clips) < MIN_CLIPS:
        raise BadInput(f"run {manifest.run_id} holds {len(manifest.clips)} clip(s); FAD and KAD need at least {MIN_CLIPS}")
    # 2. Load audio (each clip at its own rate: the embedder resamples once, from the source)
    refs = [load_audio(p, max_seconds=None) for p in ref_files]
    gen = {label: [load_audio(manifest.audio_path(c), max_seconds=None, allow_silent=True) for c in cs]
           for label, cs in clips_of.items()}
    # 3. Embed
    kwargs, label, clap = _embedder(args, manifest)
    ref_emb = embed_clips([c.audio for c in refs], [c.sample_rate for c in refs], args.embedding, **kwargs)
    emb = {lb: embed_clips([c.audio for c in cs], [c.sample_rate for c in cs], args.embedding, **kwargs)
           for lb, cs in gen.items() if cs}
    # 4. Distances per variant and over all clips
    groups = [(lb, e) for lb, e in emb.items()] + [("all clips", np.concatenate(list(emb.values())))]
    results = []
    for group, e in groups:
        ok = e.shape[0] >= MIN_CLIPS
        results.append({"group": group, "n": int(e.shape[0]),
                        "fad": _as_json(fad(e, ref_emb, label)) if ok else None,
                        "kad": _as_json(kad(e, ref_emb, label)) if ok else None})
    # 5. Report
    print(f"run {manifest.run_id}  model {manifest.model.get('name', '?')}  reference: {ref_note}")
    print(f"embedding: {label}")
    print(f"FAD: fadtk's Fréchet distance; KAD: kadtk's unbiased MMD^2 (Gaussian kernel, median-distance "
          f"bandwidth) x{KAD_SCALE:g}. Lower is closer.")
    print_table(["group", "n", "FAD", "KAD"],
                [[r["group"], r["n"], _fmt(r["fad"] and r["fad"]["value"]), _fmt(r["kad"] and r["kad"]["value"])]
                 for r in results])
    warnings = []
    for r in results:
        if r["fad"] is None:
            warnings.append(f"{r['group']}: {r['n']} clip; FAD and KAD need at least {MIN_CLIPS}.")
        for key in ("fad", "kad"):
            if r[key] and r[key]["warning"] and r[key]["warning"] not in warnings:
                warnings.append(r[key]["warning"])
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        out = {"format": FORMAT, "run_id": manifest.run_id, "run_dir": str(manifest.path), "embedding": args.embedding,
               "embedding_label": label, "clap": clap,
               "reference": {"argument": args.reference, "source": ref_note, "files": [p.name for p in ref_files]},
               "kad_scale": KAD_SCALE, "results": results, "warnings": warnings}
        atomic_write_bytes(Path(args.json), json_bytes(out))
        print(f"\nwrote {args.json}")
    return 0
