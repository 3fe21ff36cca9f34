"""Analysis of a run folder: latent metrics, text cosine, reconstruction, CLAP and music scores.

The measurements come from :mod:`recap.analysis.clip_scores` (the one scoring path, shared with
experiments), the tables from :mod:`recap.analysis.run_tables`. :func:`analyze_run` reads
``RUN_DIR/manifest.json`` and the audio, and writes ``RUN_DIR/metrics.json`` (everything, with the config that made it) and ``RUN_DIR/metrics.csv``
(one row per measured value, tidy). Work is cached twice, so repeating an analysis is free:

- per clip, by the SHA-256 of its WAV file: the VAE latents of the clip and of its
  reconstruction, and the prompts' text embeddings, under ``RUN_DIR/analysis_cache/``;
- per run, by a key over every clip hash, the prompts and the :class:`AnalysisConfig`: when
  ``metrics.json`` already carries that key nothing is computed, loaded or rewritten.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from recap.analysis.cache import LazyBackend, TensorCache, digest, write_if_changed
from recap.analysis.clip_scores import LATENT_NAMES, encode_clips, score_clips
from recap.analysis import documents
from recap.analysis.run_tables import run_csv, run_document, run_summaries
from recap.analysis.tables import SummaryRow
from recap.audio_io import load_audio
from recap.backends.registry import find_spec
from recap.metrics.clap import DEFAULT_CLAP_MODEL
from recap.metrics.clap import is_cached as clap_is_cached
from recap.errors import BadInput
from recap.limits import finite, whole
from recap.metrics.similarity import ClipKey, PairRecord
from recap.paths import json_bytes, safe_name, sha256_file
from recap.generation.runs import RunManifest, load_run, read_json
from recap.variants import tier_of

logger = logging.getLogger(__name__)

# 2: variants carry their rewording "tier"; 3: intervals over the independent unit, waveform L2,
# reconstruction comparisons, the wording effect, the latent named
FORMAT = "recap.analysis/3"
CACHE_DIR = "analysis_cache"
# Bounds of the settings (references are all loaded).
MAX_N_BOOT = 100_000
MAX_BATCH_SIZE = 256
MAX_REFERENCES = 64


@dataclass(frozen=True)
class AnalysisConfig:
    """What :func:`analyze_run` computes. Saved in ``metrics.json``; part of its cache key.

    Attributes:
        baseline: label of the reference variant.
        reconstruction: run the encode -> decode -> encode check (thesis 4.4.2, Table 5.4).
        clap: add CLAP-A / CLAP-T (needs the CLAP weights; skipped with a note otherwise).
        clap_model: Hub id or folder of the CLAP checkpoint.
        music: add tempo / key / loudness against the reference clips (paper 001).
        references: audio files the CLAP-A and music scores compare with (e.g. a learned
            token's training clips); empty means the run's baseline clips.
        confidence: coverage of the interval of each mean (t over seeds, jackknife over clips,
            cluster-robust t over variants; see :mod:`recap.analysis.tables`).
        n_boot: bootstrap resamples; the run tables use none (their intervals are analytic), kept
            so that saved configs and callers stay valid.
        batch_size: clips per VAE call (memory only; results do not depend on it beyond float rounding).
        latent: which latent the pair scores use: "clip" (encode(saved wav), the default) or
            "sampler" (the final denoised latent the run saved; every table then says so).
    """

    baseline: str = "baseline"
    reconstruction: bool = True
    clap: bool = False
    clap_model: str = DEFAULT_CLAP_MODEL
    music: bool = False
    references: tuple[str, ...] = ()
    confidence: float = 0.95
    n_boot: int = 2000
    batch_size: int = 8
    latent: str = "clip"


@dataclass
class RunAnalysis:
    """Everything measured on one run; the content of ``metrics.json``.

    Attributes:
        run_id: the run analysed.
        model: the manifest's model description; ``encoder`` names the backend that encoded.
        config: the settings used.
        cache_key: hash of clip hashes, prompts and config; equal key = nothing to recompute.
        clips: per clip: variant, seed, method, tier, prompt, sha256, latent_shape.
        baseline_pairs: baseline vs each variant, same seed.
        seed_pairs: same variant, different seeds (generation variance).
        text: per variant: cosine of its prompt's embedding with the baseline prompt's.
        reconstruction: per clip: waveform MSE and raw L2 between x and decode(encode(x)), and latent
            MSE / raw L2 / unit L2 / cosine between encode(x) and encode(decode(encode(x))).
        clap: per clip CLAP-A / CLAP-T (empty unless asked and available).
        music: per clip tempo, key, loudness and their match with the references.
        summaries: the tables.
        comparisons: the reconstruction table's records: the round trip, a seed change and the
            closest rewording, per clip (``comparison`` names which).
        latent: the latent of the pair scores ("clip latent" or "sampler latent").
        toy_features: per clip, for runs of the ``toy`` model: the toy world's model-free spectral
            measurements (centroid, loudness variation, flatness, pitch-modulation depth/speed).
        notes: things a reader must know (random weights, skipped parts).
        recomputed: False when the result came from the cache (not stored).
    """

    run_id: str
    model: dict[str, Any]
    encoder: dict[str, Any]
    config: AnalysisConfig
    cache_key: str
    clips: list[dict[str, Any]]
    baseline_pairs: list[PairRecord]
    seed_pairs: list[PairRecord]
    text: list[dict[str, Any]]
    reconstruction: list[dict[str, Any]]
    clap: list[dict[str, Any]]
    music: list[dict[str, Any]]
    summaries: list[SummaryRow]
    toy_features: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    latent: str = LATENT_NAMES["clip"]
    notes: list[str] = field(default_factory=list)
    recomputed: bool = field(default=True, compare=False)

    def table(self, name: str, metric: str | None = None) -> list[SummaryRow]:
        """Summary rows of one table (and one metric), in display order."""
        return [r for r in self.summaries if r.table == name and (metric is None or r.metric == metric)]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("recomputed")
        d["config"]["references"] = list(self.config.references)
        return {"format": FORMAT, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunAnalysis:
        d = dict(d)
        d.pop("format", None)
        cfg = dict(d.pop("config"))
        cfg["references"] = tuple(cfg.get("references", ()))
        return cls(
            config=AnalysisConfig(**cfg),
            baseline_pairs=[PairRecord(**p) for p in d.pop("baseline_pairs")],
            seed_pairs=[PairRecord(**p) for p in d.pop("seed_pairs")],
            summaries=[SummaryRow(**s) for s in d.pop("summaries")],
            recomputed=False,
            **d,
        )


def _encode_clips(run: RunManifest, keys: list[ClipKey], hashes: dict[ClipKey, str], lazy: LazyBackend,
                  cache: TensorCache, config: AnalysisConfig) -> dict[ClipKey, dict[str, torch.Tensor]]:
    """:func:`~recap.analysis.clip_scores.encode_clips` entries per clip, from the cache or by encoding the missing ones."""
    out: dict[ClipKey, dict[str, torch.Tensor]] = {}
    missing: list[ClipKey] = []
    for key in keys:
        hit = cache.get(f"{hashes[key]}-{lazy.name}")
        if hit is not None and (not config.reconstruction or "audio_l2_raw" in hit):
            out[key] = hit
        else:
            missing.append(key)
    if not missing:
        return out
    backend = lazy.get()
    logger.info("encoding %d clip(s) with %s", len(missing), backend.name)
    for start in range(0, len(missing), max(1, config.batch_size)):
        chunk = missing[start : start + config.batch_size]
        clips = [load_audio(run.audio_path(run.clip(*k)), max_seconds=None, allow_silent=True) for k in chunk]
        # Clips of one run share a length; a stray one of another length is encoded alone.
        by_shape: dict[tuple[int, int, int], list[int]] = {}
        for i, c in enumerate(clips):
            by_shape.setdefault((c.audio.shape[0], c.audio.shape[1], c.sample_rate), []).append(i)
        for (_, _, sr), idx in by_shape.items():
            audio = torch.stack([torch.from_numpy(clips[i].audio) for i in idx])  # [B, C, T]
            entries = encode_clips(backend, audio, sr, reconstruction=config.reconstruction, batch_size=len(idx))
            for i, tensors in zip(idx, entries):
                cache.put(f"{hashes[chunk[i]]}-{lazy.name}", tensors)
                out[chunk[i]] = tensors
    return out


def _run_tokens(run: RunManifest) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The learned tokens the run's prompts use (from the files the manifest names) and their hashes."""
    from recap.tokens.files import read_token_file

    tokens, hashes = {}, []
    for info in run.tokens:
        path = run.token_file(info)
        if path is not None:
            token = read_token_file(path)
            tokens[token.placeholder] = token.vectors
            hashes.append(sha256_file(path))
    return tokens, hashes


def _text_embeddings(prompts: list[str], run: RunManifest, lazy: LazyBackend,
                     cache: TensorCache) -> dict[str, torch.Tensor]:
    tokens, token_hashes = _run_tokens(run)
    keys = {p: "text-" + digest([lazy.name, p, token_hashes])[:40] for p in prompts}
    out = {p: hit["e"] for p in prompts if (hit := cache.get(keys[p])) is not None}
    todo = [p for p in prompts if p not in out]
    if todo:
        emb = lazy.get().embed_text(todo, tokens or None)
        for p, e in zip(todo, emb):
            cache.put(keys[p], {"e": e.float().cpu()})
            out[p] = e.float().cpu()
    return out


def _toy_features(run: RunManifest, keys: list[ClipKey]) -> list[dict[str, Any]]:
    """The toy world's reference measurements of every clip: an honest check that uses no model."""
    from recap.toy.world import FEATURE_NAMES, SAMPLE_RATE, features

    out = []
    for k in keys:
        clip = load_audio(run.audio_path(run.clip(*k)), target_sr=SAMPLE_RATE, channels=1, max_seconds=None,
                          allow_silent=True)
        f = features(clip.audio[0])[0]
        out.append({"variant": k[0], "seed": k[1], "centroid_hz": float(2 ** f[0]),
                    **{name: float(v) for name, v in zip(FEATURE_NAMES, f)}})
    return out


def _optional_scores(a: RunAnalysis, run: RunManifest, keys: list[ClipKey], lazy: LazyBackend) -> None:
    """Adds CLAP and music scores to ``a`` in place; a part that cannot run leaves a note."""
    cfg = a.config
    clips = {k: (c.audio, c.sample_rate) for k in keys
             for c in [load_audio(run.audio_path(run.clip(*k)), max_seconds=None, allow_silent=True)]}
    if cfg.references:
        refs = [(c.audio, c.sample_rate) for c in (load_audio(p, allow_silent=True) for p in cfg.references)]
        refs_note = f"{len(refs)} reference file(s)"
    else:
        refs = [v for (label, _), v in clips.items() if label == cfg.baseline]
        refs_note = f"the {len(refs)} {cfg.baseline} clip(s) of the run"
    prompt = {v["label"]: v["prompt"] for v in run.variants}
    if cfg.clap:
        from recap.metrics.clap import ClapScorer, ClapUnavailable, score_clips

        try:
            device = lazy.loaded.device if lazy.loaded is not None else None
            scorer = ClapScorer.from_pretrained(cfg.clap_model, device=device)
        except ClapUnavailable as exc:
            a.notes.append(f"CLAP scores skipped: {exc}")
            logger.warning("%s", exc)
        else:
            ca, ct = score_clips(scorer, [clips[k] for k in keys], [prompt[k[0]] for k in keys], refs)
            a.clap = [{"variant": k[0], "seed": k[1], "clap_a": float(x), "clap_t": float(y)}
                      for k, x, y in zip(keys, ca, ct)]
            a.notes.append(f"CLAP ({scorer.label}): CLAP-A against {refs_note}; CLAP-T against each clip's prompt.")
    if cfg.music:
        from recap.metrics.music import score_clips

        scored = score_clips([clips[k] for k in keys], refs)
        a.music = [{"variant": k[0], "seed": k[1], **asdict(f), **asdict(c)} for k, (f, c) in zip(keys, scored)]
        a.notes.append(f"Music metrics against {refs_note} (tempo within 5 BPM, loudness within 2.5 LU).")


def _cache_key(run: RunManifest, hashes: dict[ClipKey, str], config: AnalysisConfig, encoder: str) -> str:
    refs = [[p, sha256_file(Path(p))] for p in config.references]
    tokens = sorted(sha256_file(path) for path in map(run.token_file, run.tokens) if path is not None)
    return digest({
        "format": FORMAT, "encoder": encoder, "config": asdict(config), "references": refs, "tokens": tokens,
        "clips": sorted([k[0], k[1], h] for k, h in hashes.items()),
        "variants": [[v["label"], v["prompt"], v.get("method"), tier_of(v)] for v in run.variants],
    })


def _load_cached(path: Path, key: str, config: AnalysisConfig) -> RunAnalysis | None:
    if not path.is_file() or not path.with_suffix(".csv").is_file():
        return None
    try:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("cache_key") != key:
            return None
        cached = RunAnalysis.from_json(data)
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("recomputing: %s is unreadable (%s)", path, exc)
        return None
    # CLAP weights missing last time may be in the cache now (checked without network).
    if config.clap and not cached.clap and clap_is_cached(config.clap_model):
        return None
    return cached


def check_config(config: AnalysisConfig) -> None:
    """Raises :class:`BadInput` naming the first setting out of its bounds."""
    if not isinstance(config.baseline, str) or safe_name(config.baseline) != config.baseline:
        raise BadInput(f"baseline must be a variant label, got {str(config.baseline)[:40]!r}")
    whole("batch_size", config.batch_size, 1, MAX_BATCH_SIZE)
    whole("n_boot", config.n_boot, 1, MAX_N_BOOT)
    if config.latent not in LATENT_NAMES:
        raise BadInput(f"latent must be one of {', '.join(LATENT_NAMES)}, got {str(config.latent)[:20]!r}")
    confidence = finite("confidence", config.confidence, 0.0, 1.0)
    if not 0 < confidence < 1:
        raise BadInput(f"confidence must be strictly between 0 and 1, got {confidence}")
    if len(config.references) > MAX_REFERENCES:
        raise BadInput(f"{len(config.references):,} reference clips is too many; the limit is {MAX_REFERENCES}")


def analyze_run(run_dir: str | Path, backend: Any | None = None, config: AnalysisConfig = AnalysisConfig()) -> RunAnalysis:
    """Measures a run folder and writes ``metrics.json`` and ``metrics.csv`` into it.

    Args:
        run_dir: a folder written by :func:`recap.generation.grid.save_run`.
        backend: the model to encode with; None loads the one named in the manifest, and only
            if some clip or prompt is not cached yet.
        config: what to compute.

    Returns:
        The analysis (``recomputed`` is False when nothing had changed since the last call).

    Raises:
        ValueError: not a run folder, no baseline clips, or a bad config value.
    """
    # 1. Check inputs
    run = load_run(run_dir)
    run_dir = Path(run.path)
    labels = [v["label"] for v in run.variants]
    if config.baseline not in labels:
        raise ValueError(f"baseline variant {config.baseline!r} is not in run {run.run_id} (variants: {labels})")
    check_config(config)
    if config.latent == "sampler" and not all(c.latents for c in run.clips):
        raise ValueError(f"run {run.run_id} did not save sampler latents for every clip; use the clip latent")
    for ref in config.references:
        if not Path(ref).is_file():
            raise ValueError(f"reference clip {ref!r} does not exist")
    if backend is not None and backend.name != run.model.get("name"):
        logger.warning("run %s was made by %s; encoding with %s", run.run_id, run.model.get("name"), backend.name)
    # 2. Hash the clips as they are on disk (a replaced WAV must not reuse stale latents)
    keys: list[ClipKey] = [(c.variant, int(c.seed)) for c in run.clips]
    hashes = {}
    for c in run.clips:
        hashes[(c.variant, int(c.seed))] = h = sha256_file(run.audio_path(c))
        if c.sha256 and c.sha256 != h:
            logger.warning("%s changed since generation (hash differs from the manifest)", c.audio)
    lazy = LazyBackend(run, backend)
    key = _cache_key(run, hashes, config, lazy.name)
    json_path = run_dir / "metrics.json"
    cached = _load_cached(json_path, key, config)
    if cached is not None:
        logger.info("metrics of run %s are up to date", run.run_id)
        return cached
    # 3. Latents and text embeddings (cached per clip / prompt)
    cache = TensorCache(run_dir / CACHE_DIR)
    lat = _encode_clips(run, keys, hashes, lazy, cache, config)
    prompt = {v["label"]: v["prompt"] for v in run.variants}
    emb = _text_embeddings(list(dict.fromkeys(prompt.values())), run, lazy, cache)
    # 4. The one scoring path: pairs, seed pairs, text cosine, reconstruction and its comparisons
    tiers = {v["label"]: tier_of(v) for v in run.variants}
    method_of = {v["label"]: v.get("method", "") for v in run.variants}
    z = {k: lat[k]["z"] for k in keys}
    # the sampler latent only where asked: every table then names it
    pair_latents = z if config.latent == "clip" else {k: run.load_latents(run.clip(*k))["final"] for k in keys}
    waves = ({k: load_audio(run.audio_path(run.clip(*k)), max_seconds=None, allow_silent=True).audio for k in keys}
             if config.reconstruction else None)
    scores = score_clips(pair_latents, baseline=config.baseline, latent=config.latent,  # type: ignore[arg-type]
                         text_embeddings={lb: emb[prompt[lb]] for lb in labels},
                         encoded=lat if config.reconstruction else None, audio=waves)
    text = [{"variant": lb, "tier": tiers[lb], "prompt": prompt[lb], "cosine": scores.text[lb]}
            for lb in labels if lb != config.baseline]
    recon = [{"variant": k[0], "seed": k[1], **scores.reconstruction[k]} for k in keys if k in scores.reconstruction]
    # Only the name: where the latents were computed must not change the file when nothing else did.
    encoder = {"name": lazy.name}
    a = RunAnalysis(
        run_id=run.run_id, model=dict(run.model), encoder=encoder, config=config, cache_key=key,
        clips=[{"variant": k[0], "seed": k[1], "method": method_of[k[0]], "tier": tiers[k[0]],
                "prompt": prompt[k[0]], "sha256": hashes[k], "latent_shape": list(z[k].shape)} for k in keys],
        baseline_pairs=scores.baseline_pairs, seed_pairs=scores.seed_pairs, text=text, reconstruction=recon,
        clap=[], music=[], summaries=[], comparisons=scores.comparison_items(), latent=scores.latent,
    )
    if run.model.get("random_weights"):
        a.notes.append(f"{run.model.get('name')} has random weights: its audio is noise, so these numbers only "
                       "exercise the pipeline and say nothing about wording.")
    missing = [t.get("placeholder", "?") for t in run.tokens if run.token_file(t) is None]
    if missing:
        a.notes.append(f"Token file(s) of {', '.join(missing)} not found: text cosine embeds them as plain text.")
    # 5. Optional scores, 6. tables
    spec = find_spec(run.model.get("name"))
    if spec is not None and spec.world == "toy":  # the toy world's features describe its clips (not the music world's)
        a.toy_features = _toy_features(run, keys)
    _optional_scores(a, run, keys, lazy)
    a.summaries = run_summaries(a, run)
    # 7. Write (only what changed)
    write_if_changed(json_path, json_bytes(a.to_json()))
    write_if_changed(run_dir / "metrics.csv", run_csv(a))
    # the tables for a paper: the same blocks as Markdown and as LaTeX
    document = run_document(a)
    write_if_changed(run_dir / "summary.md", documents.markdown(document).encode())
    write_if_changed(run_dir / "summary.tex", documents.latex(document, f"recap run {a.run_id}").encode())
    logger.info("wrote %s, metrics.csv, summary.md and summary.tex", json_path)
    return a
