"""The one scoring path: what is measured on the clips of one prompt, for run folders and experiments.

:func:`recap.analysis.scoring.analyze_run` (a run folder, with its caches) and the experiment
runner (a grid in memory) both call :func:`encode_clips` and :func:`score_clips` (the runner
through :func:`score_audio`), so a number means the same in ``metrics.json`` and in an
experiment's ``pairs.csv``. Definitions are DESIGN.md's:

- the **clip latent** is ``encode(wav)``, the saved audio re-encoded by the model's autoencoder,
  and the default; the **sampler latent** (the final denoised latent) only where a caller asks,
  and then every result says so (:attr:`ClipScores.latent`);
- reconstruction (thesis Table 5.4): waveform MSE and raw L2 between x and decode(encode(x)), and
  latent MSE / raw L2 / unit L2 / cosine between encode(x) and encode(decode(encode(x))); beside
  them the same quantities for a seed change (the variant's next seed) and for the closest
  rewording (the variant nearest the baseline at that seed), so a reader sees whether the
  autoencoder or the wording moves a clip more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from recap.metrics import similarity as metrics
from recap.metrics.similarity import ClipKey, PairRecord

LatentKind = Literal["clip", "sampler"]
LATENT_NAMES: dict[str, str] = {"clip": "clip latent", "sampler": "sampler latent"}
# Waveform quantities first: they are the thesis's (MSE 0.005 with L2 46.2 needs waveform-sized vectors).
RECONSTRUCTION_METRICS = ("audio_mse", "audio_l2_raw", "latent_mse", "latent_l2_raw", "latent_l2", "latent_cosine")
COMPARISONS = ("autoencoder round trip", "seed change", "closest rewording")


def as_model_audio(audio: torch.Tensor, sr: int, backend: Any) -> torch.Tensor:
    """[B, C, T] audio at the backend's rate and channel count (what its decoder reproduces)."""
    if sr != backend.sample_rate:
        import librosa

        audio = torch.from_numpy(librosa.resample(audio.numpy(), orig_sr=sr, target_sr=backend.sample_rate, axis=-1))
    if audio.shape[1] != backend.channels:
        audio = audio.mean(1, keepdim=True).repeat(1, backend.channels, 1)
    return audio


def waveform_scores(a: Any, b: Any) -> tuple[float, float]:
    """(MSE, raw L2) between two waveforms [C, T] of one rate, over their common length (sample units)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = min(x.shape[-1], y.shape[-1])
    diff = x[..., :n] - y[..., :n]
    return float(np.mean(diff**2)), float(np.linalg.norm(diff.ravel()))


def encode_clips(backend: Any, audio: torch.Tensor, sr: int, *, reconstruction: bool,
                 batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Clip latents (and the autoencoder round trip) of clips of one length.

    Args:
        backend: The model whose autoencoder encodes.
        audio: [N, C, T] float waveforms at ``sr`` Hz.
        reconstruction: Also decode and re-encode (thesis 4.4.2).
        batch_size: Clips per autoencoder call (memory only).

    Returns:
        Per clip: ``z`` (the clip latent, float32 CPU), and with ``reconstruction``: ``z_rec``
        (encode(decode(z))), ``audio_mse`` and ``audio_l2_raw`` (0-d tensors: x vs decode(z) at the
        backend's rate, over their common length).
    """
    out: list[dict[str, torch.Tensor]] = []
    seconds = audio.shape[-1] / sr
    for start in range(0, audio.shape[0], max(1, batch_size)):
        chunk = audio[start : start + batch_size]
        z = backend.encode_audio(chunk, sr)
        entry = {"z": z}
        if reconstruction:
            recon = backend.decode(z, seconds)  # [B, C', T'] at the backend's rate
            target = as_model_audio(chunk, sr, backend)
            n = min(recon.shape[-1], target.shape[-1])
            diff = (recon[..., :n] - target[..., :n]).double().flatten(1)
            entry.update(z_rec=backend.encode_audio(recon, backend.sample_rate), audio_mse=(diff**2).mean(1),
                         audio_l2_raw=diff.norm(dim=1))
        out += [{k: v[j].float().cpu() for k, v in entry.items()} for j in range(z.shape[0])]
    return out


def _both(za: Any, zb: Any, wa: Any | None, wb: Any | None) -> dict[str, float]:
    """The reconstruction table's quantities between two clips (latents za, zb; waveforms wa, wb)."""
    s = metrics.pair_scores(za, zb)
    wave = waveform_scores(wa, wb) if wa is not None and wb is not None else (None, None)
    return {"audio_mse": wave[0], "audio_l2_raw": wave[1], "latent_mse": s.mse, "latent_l2_raw": s.l2_raw,
            "latent_l2": s.l2, "latent_cosine": s.cosine}


@dataclass
class ClipScores:
    """Everything measured on the clips of one prompt (a run, or one prompt of an experiment).

    Attributes:
        latent: Which latent the pair scores use: "clip latent" or "sampler latent".
        latents: That latent per (variant, seed).
        baseline_pairs: Baseline vs each variant, same seed (the wording effect).
        seed_pairs: Same variant, every pair of seeds (generation variance).
        text: Per non-baseline variant: cosine of its prompt's mean-pooled text embedding with the
            baseline prompt's; empty when no embeddings were given.
        reconstruction: Per clip: the autoencoder round trip (:data:`RECONSTRUCTION_METRICS`, always
            on clip latents); empty unless asked.
        seed_change: Per clip with a next seed: the same quantities against the variant's clip at that
            seed (``other_seed``).
        closest_rewording: Per seed: the same quantities between the baseline clip and the variant
            whose latent is closest to it at that seed (``variant``).
    """

    latent: str
    latents: dict[ClipKey, torch.Tensor]
    baseline_pairs: list[PairRecord]
    seed_pairs: list[PairRecord]
    text: dict[str, float] = field(default_factory=dict)
    reconstruction: dict[ClipKey, dict[str, float]] = field(default_factory=dict)
    seed_change: dict[ClipKey, dict[str, Any]] = field(default_factory=dict)
    closest_rewording: dict[int, dict[str, Any]] = field(default_factory=dict)

    def comparison_items(self) -> list[dict[str, Any]]:
        """The reconstruction table's records: one per clip and comparison (``comparison``, variant, seed)."""
        items = [{"comparison": COMPARISONS[0], "variant": k[0], "seed": k[1], **v}
                 for k, v in self.reconstruction.items()]
        items += [{"comparison": COMPARISONS[1], "variant": k[0], "seed": k[1], **v} for k, v in self.seed_change.items()]
        items += [{"comparison": COMPARISONS[2], "seed": s, **v} for s, v in self.closest_rewording.items()]
        return items


def score_clips(
    latents: Mapping[ClipKey, Any],
    *,
    baseline: str = "baseline",
    latent: LatentKind = "clip",
    text_embeddings: Mapping[str, torch.Tensor] | None = None,
    encoded: Mapping[ClipKey, Mapping[str, torch.Tensor]] | None = None,
    audio: Mapping[ClipKey, Any] | None = None,
) -> ClipScores:
    """Pair scores, seed pairs, text cosines and the reconstruction check of one prompt's clips.

    Args:
        latents: The latent per (variant, seed) the pair scores use, any shape (flattened).
        baseline: Label of the reference variant.
        latent: Which latent ``latents`` are: "clip" (encode(saved wav)) or "sampler".
        text_embeddings: Mean-pooled text embedding [D] per variant label (``backend.embed_text``).
        encoded: :func:`encode_clips` entries per clip; with ``z_rec`` they give the reconstruction
            rows and their seed-change / closest-rewording comparisons (on clip latents).
        audio: Waveform [C, T] per clip (one rate), for the comparisons' waveform quantities.

    Raises:
        ValueError: no baseline clip, latents of different sizes, or an unknown ``latent``.
    """
    if latent not in LATENT_NAMES:
        raise ValueError(f"latent must be one of {tuple(LATENT_NAMES)}; got {latent!r}")
    pairs = metrics.baseline_pairs(latents, baseline)
    out = ClipScores(LATENT_NAMES[latent], dict(latents), pairs, metrics.seed_pairs(latents))
    if text_embeddings is not None and baseline in text_embeddings:
        out.text = {lb: metrics.cosine(text_embeddings[baseline], e) for lb, e in text_embeddings.items() if lb != baseline}
    if not encoded or not all("z_rec" in e for e in encoded.values()):
        return out
    wave = audio or {}
    for k, e in encoded.items():
        out.reconstruction[k] = {**_both(e["z"], e["z_rec"], None, None), "audio_mse": float(e["audio_mse"]),
                                 "audio_l2_raw": float(e["audio_l2_raw"])}
    seeds: dict[str, list[int]] = {}
    for label, seed in encoded:
        seeds.setdefault(label, []).append(seed)
    for label, ss in seeds.items():
        ss = sorted(ss)
        for s, nxt in zip(ss, ss[1:]):  # each clip against the next seed: every clip in at most two comparisons
            a, b = (label, s), (label, nxt)
            out.seed_change[a] = {"other_seed": nxt, **_both(encoded[a]["z"], encoded[b]["z"], wave.get(a), wave.get(b))}
    for seed in seeds.get(baseline, []):
        near = [p for p in pairs if p.seed_b == seed and (p.variant_b, seed) in encoded]
        if near:
            best = max(near, key=lambda p: p.cosine)
            a, b = (baseline, seed), (best.variant_b, seed)
            out.closest_rewording[seed] = {"variant": best.variant_b,
                                           **_both(encoded[a]["z"], encoded[b]["z"], wave.get(a), wave.get(b))}
    return out


def score_audio(
    backend: Any,
    audio: Mapping[ClipKey, Any],
    sr: int,
    prompts: Mapping[str, str],
    *,
    baseline: str = "baseline",
    tokens: Mapping[str, torch.Tensor] | None = None,
    text: bool = True,
    reconstruction: bool = True,
    batch_size: int = 8,
) -> ClipScores:
    """Encodes clips held in memory and scores them (:func:`encode_clips` then :func:`score_clips`).

    Args:
        backend: The model whose autoencoder and text encoder are used.
        audio: Waveform [C, T] per (variant, seed), all of one length, at ``sr`` Hz.
        prompts: Prompt per variant label (text cosine).
        tokens: Learned-token vectors the prompts use.
        text, reconstruction: What to add to the pair scores.

    Returns:
        The scores on clip latents.
    """
    keys = list(audio)
    stacked = torch.stack([torch.as_tensor(np.asarray(audio[k], dtype=np.float32)) for k in keys])  # [N, C, T]
    entries = encode_clips(backend, stacked, sr, reconstruction=reconstruction, batch_size=batch_size)
    encoded = dict(zip(keys, entries))
    emb = None
    if text:
        labels: Sequence[str] = list(prompts)
        vectors = backend.embed_text([prompts[lb] for lb in labels], dict(tokens) if tokens else None)  # [V, D]
        emb = dict(zip(labels, vectors))
    return score_clips({k: e["z"] for k, e in encoded.items()}, baseline=baseline, latent="clip", text_embeddings=emb,
                       encoded=encoded, audio=audio)
