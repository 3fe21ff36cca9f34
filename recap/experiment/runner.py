"""Batch experiments over a prompt file: the thesis tables, resumable, on one GPU or many.

For every selected prompt: reword it (tier 1 = light, tier 2 = strong, the thesis's batches; cached per prompt),
optionally add learned-token prompts, generate baseline and variants from identical noise per
seed, and score the prompt's clips through the one scoring path
(:func:`recap.analysis.clip_scores.score_audio`: clip latents, each variant against the baseline of
the same seed, text cosine, reconstruction). Work is kept as one small file set per (prompt, variant, seed) *unit*::

    DIR/config.json                         the experiment config + model, resolved settings, versions
    DIR/prompts.csv                         the selected prompts
    DIR/recaptions/<prompt-id>.json         the rewordings (a rerun never asks the LLM again)
    DIR/units/<prompt-id>/<label>__seed<k>.json          scores; written last, so it marks the unit done
    DIR/units/<prompt-id>/<label>__seed<k>.wav           the clip
    DIR/units/<prompt-id>/<label>__seed<k>.safetensors   its clip latent {"z": encode(audio)}

Every file is written atomically, so a crash loses at most the prompt in flight and a rerun
skips finished units. Tables and charts (:mod:`recap.experiment.report`) are rebuilt from the
unit files, never appended to. Under ``accelerate launch`` each process takes every
``num_processes``-th prompt; processes write disjoint unit files and the main one rebuilds the
tables once all are done.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from recap.experiment.config import (
    MAY_CHANGE_ON_RESUME,
    PAIR_METRICS,
    ExperimentConfig,
    PromptRow,
    load_prompts,
    select_prompts,
    write_prompts,
)
from recap.experiment.layout import (
    FORMAT,
    RECAPTION_FORMAT,
    UNIT_FORMAT,
    plan_variants,
    read_config_json,
    read_unit,
    recaption_path,
    unit_dir,
    unit_stem,
)
from recap.generation.grid import GenerationConfig
from recap.variants import Variant
from recap.paths import atomic_write_bytes, atomic_write_json
from recap.generation.runs import read_json

if TYPE_CHECKING:
    from accelerate import PartialState

    from recap.backends.base import AudioBackend
    from recap.experiment.report import ExperimentReport

log = logging.getLogger(__name__)

# progress(done, total, message) in two phases, each counting from 0: "rewording: ..." over this
# process's prompts, then "generating: ..." over its units (fractional while a prompt generates).
Progress = Callable[[float, int, str], None]


# ---------------------------------------------------------------------- variants and units


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def rewordings_for(row: PromptRow, config: ExperimentConfig, out_dir: Path, backend: AudioBackend | None,
                   api_key: str | None = None) -> list[dict[str, Any]]:
    """The prompt's rewordings, from ``recaptions/<id>.json`` or made now and cached there."""
    from recap.rewording.recaption import recaption

    key = _digest([row.prompt, config.distances, _rewording_settings(config)])
    path = recaption_path(out_dir, row.id)
    try:
        cached = read_json(path)
        if isinstance(cached, dict) and cached.get("format") == RECAPTION_FORMAT and cached.get("key") == key \
                and isinstance(cached.get("variants"), list):
            return cached["variants"]
    except (OSError, ValueError):
        pass
    variants: list[dict[str, Any]] = []
    records = []
    for distance in config.distances:
        result = recaption(row.prompt, dataclasses.replace(config.recaption, distance=distance), backend, api_key=api_key)
        records.append(result.to_dict())
        variants += [{"label": v.label, "prompt": v.prompt, "method": v.method, "tier": v.tier}
                     for v in result.to_variants()[1:]]
    if not variants:
        log.warning("prompt %s: no rewording could be made of %r", row.id, row.prompt)
    atomic_write_json(path, {"format": RECAPTION_FORMAT, "prompt_id": row.id, "key": key, "baseline": row.prompt,
                             "variants": variants, "recaptions": records})
    return variants


# ---------------------------------------------------------------------- setup


def distributed_state(device: str | None = None) -> PartialState:
    """The process group ``accelerate launch`` set up; a group of one when started plainly.

    Processes launched without CUDA (or asked to run on the CPU) meet over gloo on the CPU, the
    way accelerate's own ``--cpu`` mode does; otherwise accelerate picks NCCL and one GPU each.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (
        launched and (not torch.cuda.is_available() or str(device or "").startswith("cpu")))
    # Processes wait for the slowest one at the end; a day is longer than any shard should take.
    return PartialState(cpu=cpu, timeout=dt.timedelta(hours=24))


def _saved_config(config: ExperimentConfig) -> dict[str, Any]:
    from recap.rewording.llm import public_url

    d = config.to_dict()
    if d["recaption"].get("base_url"):  # never store credentials written into a URL
        d["recaption"]["base_url"] = public_url(d["recaption"]["base_url"])
    return d


def _rewording_settings(config: ExperimentConfig) -> dict[str, Any]:
    """The recaption settings that decide the rewordings (not how long to wait for them)."""
    d = _saved_config(config)["recaption"]
    return {k: v for k, v in d.items() if k not in ("timeout_s", "max_retries", "backoff_s")}


def _identity(config: ExperimentConfig, model: str, rows: Sequence[PromptRow], token_files: Sequence[Path]) -> dict[str, Any]:
    """What a unit's content depends on; two runs into one folder must agree on all of it."""
    from recap.paths import sha256_file

    d = {k: v for k, v in _saved_config(config).items() if k not in MAY_CHANGE_ON_RESUME}
    d["model"] = model
    d["recaption"] = _rewording_settings(config)
    # The selection, not the path: the same prompts from another checkout are the same experiment.
    d["prompts"] = _digest([asdict(r) for r in rows])
    d["tokens"] = {"files": [sha256_file(p) for p in token_files], "templates": config.tokens.templates}
    return d


def _check_compatible(out_dir: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    previous = read_config_json(out_dir)
    if previous is not None and previous.get("identity") != identity:
        old = previous.get("identity", {})
        keys = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        raise ValueError(f"{out_dir} holds an experiment with other settings ({', '.join(keys)} differ); "
                         "use a new --out folder, or the same config to resume")
    return previous


@dataclass
class RunOutcome:
    """What one process did.

    Attributes:
        out_dir: The experiment folder.
        process_index: This process's rank; ``num_processes`` in all.
        prompts: Prompts in this process's share.
        units_written: Units generated now; ``units_skipped`` were already done.
        report: The rebuilt tables (main process only; None on the others).
    """

    out_dir: Path
    process_index: int
    num_processes: int
    prompts: int
    units_written: int
    units_skipped: int
    report: ExperimentReport | None = None


# ---------------------------------------------------------------------- running


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    backend: AudioBackend | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    state: PartialState | None = None,
    api_key: str | None = None,
) -> RunOutcome:
    """Runs (or resumes) an experiment into ``out_dir``; this process does its share of the prompts.

    Args:
        config: The experiment.
        out_dir: Its folder; an existing one is resumed (its config must match).
        backend: A loaded model (else ``config.model`` is loaded on ``device``/``dtype``).
        progress: Called as this process's prompts are reworded, then as its units finish (see ``Progress``).
        stop: Set it to stop at the next denoising step (raises ``Cancelled``; finished units stay).
        state: accelerate's process state (default: :func:`distributed_state`).
        api_key: LLM key for recaptioning (else ``OPENAI_API_KEY``); used for calls only, never stored.

    Raises:
        ValueError: bad config or prompts, or ``out_dir`` holds an experiment with other settings.
    """
    from recap.backends.loading import load_backend
    from recap.errors import Cancelled
    from recap.config import settings
    from recap.tokens.files import load_token
    from recap.generation.runs import versions

    # 1. Check inputs (every process, read-only, so all of them fail alike)
    config.validate()
    out_dir = Path(out_dir)
    source = config.path(config.prompts.file)
    all_rows = load_prompts(source)
    rows = select_prompts(all_rows, config.prompts)
    config.check_size(len(rows))
    token_files = [config.path(p) for p in config.tokens.files]
    for p in token_files:
        if not p.is_file():
            raise FileNotFoundError(f"token file {p} does not exist")
    model = backend.name if backend is not None else (config.model or settings().model)
    identity = _identity(config, model, rows, token_files)
    previous = _check_compatible(out_dir, identity)
    state = state or distributed_state(device or settings().device)
    # 2. Model and learned tokens
    if backend is None:
        if device is None:  # several processes: one GPU each, as accelerate assigned them
            device = str(state.device) if state.num_processes > 1 else settings().device
        backend = load_backend(model, device=device, dtype=dtype or settings().dtype)
    tokens = [load_token(backend, p) for p in token_files]
    placeholders = [t.placeholder for t in tokens]
    if len(set(placeholders)) != len(placeholders):
        raise ValueError(f"token files share a placeholder: {placeholders}")
    vectors = {t.placeholder: t.vectors for t in tokens} or None
    gen = GenerationConfig(
        seconds=config.seconds, steps=config.steps, guidance=config.guidance, negative_prompt=config.negative_prompt,
        seeds=config.seeds, max_batch=config.max_batch, wav_subtype=config.wav_subtype, fast_preview=config.fast_preview,
    ).resolved(backend)
    # 3. The main process records the setup (the first run's creation time is kept)
    if state.is_main_process:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(out_dir / "config.json", {
            "format": FORMAT, "config": _saved_config(config), "identity": identity,
            "prompts": {"source": str(source), "selected": len(rows), "of": len(all_rows)},
            "model": backend.describe(), "generation": asdict(gen), "seeds": config.seeds,
            "tokens": [t.summary() for t in tokens], "versions": versions(),
            "created": (previous or {}).get("created", now), "updated": now, "processes": state.num_processes,
        })
        write_prompts(out_dir / "prompts.csv", rows)
    # 4. This process's share: every num_processes-th prompt, so shares are fixed and disjoint
    mine = rows[state.process_index :: state.num_processes]
    plans: dict[str, list[Variant]] = {}
    for i, r in enumerate(mine):  # all rewordings first: an LLM failure stops the run before any GPU work
        if progress is not None:
            progress(i, len(mine), f"rewording: prompt {r.id}")
        plans[r.id] = plan_variants(r.prompt, rewordings_for(r, config, out_dir, backend, api_key), placeholders,
                                    config.tokens.templates)
    todo = {r.id: [(v, s) for v in plans[r.id] for s in config.seeds if read_unit(out_dir, r.id, v.label, s) is None]
            for r in mine if len(plans[r.id]) > 1}
    total = sum(len(t) for t in todo.values())
    skipped = sum(len(plans[r.id]) * len(config.seeds) for r in mine if len(plans[r.id]) > 1) - total
    log.info("process %d/%d: %d prompt(s), %d unit(s) to do, %d done before",
             state.process_index, state.num_processes, len(mine), total, skipped)
    done = 0
    for row in mine:
        units = todo.get(row.id)
        if not units:
            continue
        if stop is not None and stop.is_set():
            raise Cancelled("experiment stopped; finished units are kept")
        _run_prompt(backend, row, plans[row.id], units, gen, vectors, config, out_dir, progress, done, total, stop)
        done += len(units)
        if progress is not None:
            progress(done, total, f"generating: prompt {row.id} done")
    # 5. Tables, once every process has written its units
    state.wait_for_everyone()
    report = None
    if state.is_main_process:
        from recap.experiment.report import build_report

        report = build_report(out_dir)
    return RunOutcome(out_dir, state.process_index, state.num_processes, len(mine), done, skipped, report)


def _run_prompt(backend: AudioBackend, row: PromptRow, variants: list[Variant], units: list[tuple[Variant, int]],
                gen: GenerationConfig, vectors: dict[str, torch.Tensor] | None, config: ExperimentConfig,
                out_dir: Path, progress: Progress | None, done: int, total: int,
                stop: threading.Event | None) -> None:
    """Generates the prompt's whole grid and writes the missing units one by one.

    The whole grid, even when only some units are missing: the same batches as an uninterrupted
    run give bit-identical clips, so a resumed experiment equals one that never stopped.
    """
    from recap.generation.grid import generate_grid

    def on_grid(clips_done: float, clips: int, message: str) -> None:
        if progress is not None:
            progress(done + len(units) * clips_done / max(clips, 1), total, f"generating: prompt {row.id}: {message}")

    # No per-request bound here: an experiment is a batch job, bounded by its own counts
    # (ExperimentConfig.check_size); each grid is at most LIMITS.variants × LIMITS.seeds clips.
    grid = generate_grid(backend, variants, gen, tokens=vectors, progress=on_grid, stop=stop, limit=None)
    scores = _score_grid(backend, grid, variants, config, vectors)
    for v, seed in units:
        _write_unit(out_dir, row, v, seed, grid.clip(v.label, seed).audio, scores[(v.label, seed)], backend, config)


def _score_grid(backend: AudioBackend, grid: Any, variants: list[Variant], config: ExperimentConfig,
                vectors: dict[str, torch.Tensor] | None) -> dict[tuple[str, int], dict[str, Any]]:
    """Per clip: its clip latent, scores vs the same seed's baseline, text cosine and reconstruction.

    The measurements are :func:`recap.analysis.clip_scores.score_audio`'s, the ones a run folder's
    analysis makes; only the metrics the config asks for are kept.
    """
    from recap.analysis.clip_scores import score_audio

    scores = score_audio(
        backend, {(c.variant.label, c.seed): c.audio for c in grid.clips}, backend.sample_rate,
        {v.label: v.prompt for v in variants}, tokens=vectors, text="text_cosine" in config.metrics,
        reconstruction="reconstruction" in config.metrics, batch_size=config.max_batch or 8)
    pairs = {(p.variant_b, p.seed_b): p for p in scores.baseline_pairs}
    out = {}
    for key, z in scores.latents.items():
        pair: dict[str, float | None] = dict.fromkeys(PAIR_METRICS[1:])
        if key in pairs:
            pair = {m: (getattr(pairs[key], m) if m in config.metrics else None) for m in PAIR_METRICS[1:]}
        recon = None
        if key in scores.reconstruction:  # the round trip, and beside it a seed change and the closest rewording
            recon = {**scores.reconstruction[key], "seed_change": scores.seed_change.get(key),
                     "closest_rewording": scores.closest_rewording.get(key[1]) if key[0] == "baseline" else None}
        out[key] = {"z": z, "latent": scores.latent, "text_cosine": scores.text.get(key[0]), **pair,
                    "reconstruction": recon}
    return out


def _write_unit(out_dir: Path, row: PromptRow, v: Variant, seed: int, audio: Any, score: dict[str, Any],
                backend: AudioBackend, config: ExperimentConfig) -> None:
    """Audio and latent first, the JSON record last: a unit without its record is redone."""
    from safetensors.torch import save

    from recap.audio_io import write_wav

    folder = unit_dir(out_dir, row.id)
    stem = unit_stem(v.label, seed)
    if config.save_audio:
        write_wav(folder / f"{stem}.wav", audio, backend.sample_rate, config.wav_subtype)
    z = score["z"].float().cpu().contiguous()
    atomic_write_bytes(folder / f"{stem}.safetensors", save({"z": z}))
    record = {
        "format": UNIT_FORMAT, "prompt_id": row.id, "category": row.category, "complexity": row.complexity,
        "variant": v.label, "prompt": v.prompt, "method": v.method, "tier": v.tier, "seed": seed,
        "audio": f"{stem}.wav" if config.save_audio else None, "latent": f"{stem}.safetensors",
        "latent_shape": list(z.shape), "latent_kind": score["latent"],
        **{m: score[m] for m in PAIR_METRICS}, "reconstruction": score["reconstruction"],
    }
    atomic_write_json(folder / f"{stem}.json", record)
    log.info("unit %s/%s written", row.id, stem)
