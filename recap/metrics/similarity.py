"""Latent and text similarity metrics and pairings over a run (tables: :mod:`recap.analysis.tables`).

Pure functions on arrays and tensors: no file or model access here. Definitions (shared by the
UI, the CLI and the tests; see DESIGN.md, "Metrics"), for two clips a, b of one backend with
flattened latents z_a, z_b (the *clip latent*, encode(saved wav), unless a caller says
"sampler latent"):

- ``cosine = z_a·z_b / (|z_a| |z_b|)``
- ``l2 = | z_a/|z_a| - z_b/|z_b| |`` (unit vectors, equals ``sqrt(2 - 2 cos)``, range 0..2;
  the scale of the thesis tables)
- ``l2_raw = |z_a - z_b|`` and ``mse = mean((z_a - z_b)^2)``

Pairings: "baseline vs each variant with the same seed" isolates the effect of the wording,
"same variant, different seeds" measures generation variance (thesis 4.3.1); a wording effect
is only visible where the first is clearly larger than the second.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ClipKey = tuple[str, int]
"""(variant label, seed) — names one clip of a run."""

METRIC_NAMES = ("cosine", "l2", "l2_raw", "mse")


def as_vector(x: Any) -> np.ndarray:
    """Flattens an array or tensor of any shape to a float64 vector.

    Args:
        x: numpy array, torch tensor (any device/dtype) or nested sequence.

    Returns:
        1-D float64 array with ``x.size`` elements.

    Raises:
        ValueError: if ``x`` is empty or holds non-finite values.
    """
    if hasattr(x, "detach"):  # torch tensor; kept duck-typed so this module needs no torch
        x = x.detach().to("cpu").double().numpy()
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("cannot compare an empty latent (0 elements)")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"latent holds {int(np.sum(~np.isfinite(v)))} non-finite values (NaN/inf)")
    return v


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    va, vb = as_vector(a), as_vector(b)
    if va.shape != vb.shape:
        raise ValueError(
            f"latents differ in size: {va.size} vs {vb.size} elements; only clips of one backend "
            "and one duration can be compared"
        )
    return va, vb


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise ValueError("latent has zero norm; cosine and unit-L2 are undefined for it")
    return v / norm


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two flattened latents (or embeddings), in [-1, 1]."""
    va, vb = _pair(a, b)
    # Clamped: rounding can put the dot product of unit vectors a hair outside [-1, 1].
    return float(np.clip(np.dot(_unit(va), _unit(vb)), -1.0, 1.0))


def l2_unit(a: Any, b: Any) -> float:
    """Euclidean distance between the unit-normalised flattened latents, in [0, 2].

    Computed as the norm of the difference (not as ``sqrt(2 - 2 cos)``), which stays accurate
    for nearly identical clips where ``2 - 2 cos`` loses every significant digit.
    """
    va, vb = _pair(a, b)
    return float(np.linalg.norm(_unit(va) - _unit(vb)))


def l2_raw(a: Any, b: Any) -> float:
    """Euclidean distance between the flattened latents, in latent units."""
    va, vb = _pair(a, b)
    return float(np.linalg.norm(va - vb))


def mse(a: Any, b: Any) -> float:
    """Mean squared difference of the flattened latents (``l2_raw**2 / n``)."""
    va, vb = _pair(a, b)
    return float(np.mean((va - vb) ** 2))


@dataclass(frozen=True)
class PairScores:
    """All four latent metrics of one pair of clips."""

    cosine: float
    l2: float
    l2_raw: float
    mse: float


def pair_scores(a: Any, b: Any) -> PairScores:
    """Computes cosine, unit L2, raw L2 and MSE between two latents in one pass."""
    va, vb = _pair(a, b)
    ua, ub = _unit(va), _unit(vb)
    diff = va - vb
    return PairScores(
        cosine=float(np.clip(np.dot(ua, ub), -1.0, 1.0)),
        l2=float(np.linalg.norm(ua - ub)),
        l2_raw=float(np.linalg.norm(diff)),
        mse=float(np.mean(diff**2)),
    )


def pairwise_matrix(latents: Sequence[Any], metric: str = "cosine") -> np.ndarray:
    """Matrix of one metric between every pair of latents.

    Args:
        latents: N latents of equal size (any shape each; flattened).
        metric: one of ``cosine``, ``l2``, ``l2_raw``, ``mse``.

    Returns:
        [N, N] float64 array, symmetric; the diagonal is 1 for cosine and 0 otherwise.
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRIC_NAMES}")
    if len(latents) == 0:
        return np.zeros((0, 0))
    vectors = [as_vector(z) for z in latents]
    sizes = {v.size for v in vectors}
    if len(sizes) > 1:
        raise ValueError(f"latents differ in size: {sorted(sizes)} elements")
    z = np.stack(vectors)  # [N, D]
    if metric in ("cosine", "l2"):
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("a latent has zero norm; cosine and unit-L2 are undefined for it")
        u = z / norms
        if metric == "cosine":
            out = np.clip(u @ u.T, -1.0, 1.0)
            np.fill_diagonal(out, 1.0)
            return out
        z = u
    # Squared distances from the Gram matrix would cancel badly for close clips; N is small
    # (variants x seeds), so an explicit difference per pair is affordable.
    n = len(z)
    out = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        diff = z[i] - z[j]
        out[i, j] = out[j, i] = float(np.mean(diff**2)) if metric == "mse" else float(np.linalg.norm(diff))
    return out


def text_cosine_matrix(embeddings: Any) -> np.ndarray:
    """Cosine similarity between every pair of text embeddings.

    Args:
        embeddings: [N, D] mean-pooled text-encoder embeddings (``backend.embed_text``).

    Returns:
        [N, N] float64 cosine matrix.
    """
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().to("cpu").double().numpy()
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"text embeddings must be [N, D]; got shape {emb.shape}")
    return pairwise_matrix(list(emb), "cosine")


@dataclass(frozen=True)
class PairRecord:
    """Metrics between clip (variant_a, seed_a) and clip (variant_b, seed_b)."""

    variant_a: str
    seed_a: int
    variant_b: str
    seed_b: int
    cosine: float
    l2: float
    l2_raw: float
    mse: float


def _record(key_a: ClipKey, key_b: ClipKey, za: Any, zb: Any) -> PairRecord:
    s = pair_scores(za, zb)
    return PairRecord(key_a[0], key_a[1], key_b[0], key_b[1], s.cosine, s.l2, s.l2_raw, s.mse)


def baseline_pairs(latents: Mapping[ClipKey, Any], baseline: str = "baseline") -> list[PairRecord]:
    """Baseline vs every other variant, paired by seed (the prompt effect).

    Args:
        latents: latent per (variant, seed).
        baseline: label of the reference variant.

    Returns:
        One record per (variant, seed) whose baseline clip with the same seed exists, ordered
        by variant (first appearance) then seed.

    Raises:
        ValueError: if no clip of ``baseline`` is present.
    """
    base = {seed: z for (label, seed), z in latents.items() if label == baseline}
    if not base:
        labels = sorted({label for label, _ in latents})
        raise ValueError(f"no clips of baseline variant {baseline!r}; variants present: {labels}")
    return [
        _record((baseline, seed), (label, seed), base[seed], z)
        for (label, seed), z in latents.items()
        if label != baseline and seed in base
    ]


def seed_pairs(latents: Mapping[ClipKey, Any]) -> list[PairRecord]:
    """Every pair of different seeds within each variant (generation variance, thesis 4.3.1).

    Returns:
        One record per variant and unordered seed pair (seed_a < seed_b).
    """
    by_label: dict[str, dict[int, Any]] = {}
    for (label, seed), z in latents.items():
        by_label.setdefault(label, {})[seed] = z
    records = []
    for label, by_seed in by_label.items():
        for sa, sb in itertools.combinations(sorted(by_seed), 2):
            records.append(_record((label, sa), (label, sb), by_seed[sa], by_seed[sb]))
    return records
