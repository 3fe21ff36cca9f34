"""Fréchet Audio Distance (FAD) and Kernel Audio Distance (KAD) between two sets of clips.

Both compare the distribution of generated clips with that of reference clips (a learned
token's training clips, or a folder) in an embedding space; lower is closer. The maths are pure
numpy / scipy functions on [N, D] embedding matrices (one row per clip); :func:`embed_clips`
is the one place that calls a model. Definitions, as the toolkits the field uses compute them:

- **FAD** (fadtk, ``fadtk/fad.py``: ``calc_embd_statistics`` and ``calc_frechet_distance``,
  after pytorch-fid): fit a Gaussian to each set (mean, ``np.cov`` with ddof 1) and take
  ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b))``. The matrix square root is
  ``scipy.linalg.sqrtm``; when it is not finite, ``eps`` is added to both diagonals and it is
  taken again; an imaginary part on its diagonal above 1e-3 is an error, a smaller one is
  rounding and dropped; and, as fadtk does, its trace is checked against the eigenvalue route
  (``Tr sqrt(S_a S_b) = sum sqrt(eig(S_a S_b))``), with a warning logged when they differ by
  more than 1e-3. FAD is biased upward at small n and its covariance is singular below D + 1
  clips: compare FADs only at equal n, and prefer KAD for small sets.
- **KAD** (kadtk, ``kadtk/kad.py``: ``calc_kernel_audio_distance`` and
  ``median_pairwise_distance``, checked at YoonjinXD/kadtk 8bda71d, June 2025): the unbiased
  estimate of MMD^2 with a Gaussian kernel ``k(a, b) = exp(-gamma ||a - b||^2)``,
  ``gamma = 1 / (2 h^2 + 1e-8)``: the means of ``k`` over distinct pairs within each set
  (diagonals left out, divided by n(n-1)) minus twice the mean over all cross pairs, times
  :data:`KAD_SCALE` = 100 (kadtk used 1000 until its "fix scale value" commit of 27 Feb 2025).
  The bandwidth ``h`` is the median pairwise Euclidean distance within the *evaluated*
  (generated) set: kadtk's ``score(baseline, eval)`` passes the eval set as ``y`` and takes the
  median of ``y`` (its README says the reference set; recap follows the code, which makes the
  published numbers). The median is the lower middle value, as ``torch.median`` returns. KAD
  can be slightly negative when the sets are close. kadtk computes in float32; recap in float64.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.scimath import sqrt as complex_sqrt
from scipy import linalg
from scipy.spatial.distance import cdist, pdist

logger = logging.getLogger(__name__)

KAD_SCALE = 100.0  # kadtk's SCALE_FACTOR
MIN_CLIPS = 2  # a covariance and the unbiased within-set kernel mean both need two clips
# Below these sizes the numbers are shown with a warning (not refused): FAD's covariance needs
# far more clips than a few; KAD is unbiased but its spread is large under ~10 clips.
FAD_WARN_CLIPS = 50
KAD_WARN_CLIPS = 10

# What each embedding means; the label goes into every result.
EMBEDDINGS = {
    "clap": "clap (recap preset: laion/clap-htsat-unfused, 10 s windows averaged; not comparable to published FAD)",
    "clap-paper": "clap-paper (laion/clap-htsat-fused, stable-audio-metrics preprocessing: 48 kHz, "
                  "peak -1 dBFS, int16, whole clip)",
    "vae-latent": "vae-latent (model's own autoencoder, not comparable to published FAD)",
}


class DistanceResult(NamedTuple):
    """One FAD or KAD value with what it was computed from.

    Attributes:
        metric: ``"FAD"`` or ``"KAD"``.
        value: the distance (KAD already scaled by :data:`KAD_SCALE`).
        n_generated: clips in the evaluated set.
        n_reference: clips in the reference set.
        embedding: the embedding's label (see :data:`EMBEDDINGS`).
        warning: a sentence when the sets are too small for a stable value, else "".
        bandwidth: KAD's kernel bandwidth h (embedding units); None for FAD.
    """

    metric: str
    value: float
    n_generated: int
    n_reference: int
    embedding: str
    warning: str = ""
    bandwidth: float | None = None


# ----------------------------------------------------------------------------- checks
def as_embeddings(x: Any, name: str = "embeddings") -> np.ndarray:
    """``x`` as a finite float64 [N, D] matrix (a torch tensor is accepted, duck-typed).

    Raises:
        ValueError: not 2-D, empty, or holding NaN / infinite values (the message names ``name``).
    """
    if hasattr(x, "detach"):  # torch tensor; this module needs no torch
        x = x.detach().to("cpu").double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"{name} must be [N, D] with D > 0; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} hold {int(np.sum(~np.isfinite(a)))} non-finite values (NaN/inf)")
    return a


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_embeddings(a, "generated embeddings"), as_embeddings(b, "reference embeddings")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embeddings differ in width: {x.shape[1]} vs {y.shape[1]}; embed both sets the same way")
    for n, which in ((x.shape[0], "generated"), (y.shape[0], "reference")):
        if n < MIN_CLIPS:
            raise ValueError(f"FAD and KAD need at least {MIN_CLIPS} {which} clips; got {n}")
    return x, y


# ----------------------------------------------------------------------------- FAD
def embedding_statistics(emb: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and sample covariance [D, D] (ddof 1) of [N >= 2, D] embeddings (fadtk's statistics)."""
    e = as_embeddings(emb)
    if e.shape[0] < MIN_CLIPS:
        raise ValueError(f"a covariance needs at least {MIN_CLIPS} embeddings; got {e.shape[0]}")
    return e.mean(axis=0), np.atleast_2d(np.cov(e, rowvar=False))


def frechet_distance_from_statistics(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray,
                                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b).

    ``||mu_a - mu_b||^2 + Tr(cov_a) + Tr(cov_b) - 2 Tr(sqrt(cov_a cov_b))``, with the square
    root handled as fadtk handles it (see the module docstring).

    Args:
        mu_a, mu_b: [D] means.
        cov_a, cov_b: [D, D] covariances.
        eps: added to both diagonals when the square root is not finite.

    Returns:
        The distance (squared embedding units), >= 0 up to rounding.

    Raises:
        ValueError: mismatched shapes, or a square root with a large imaginary part.
    """
    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mu_a.size, mu_a.size):
        raise ValueError(f"statistics do not match: means {mu_a.shape} / {mu_b.shape}, "
                         f"covariances {cov_a.shape} / {cov_b.shape}")
    diff = mu_a - mu_b
    with warnings.catch_warnings():
        # fadtk calls sqrtm(disp=False): a singular product (fewer clips than dimensions) is expected
        # for small sets, which fad_warning reports in words; the checks below catch real failures.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():
            # A nearly singular product that sqrtm cannot take: pytorch-fid's and fadtk's remedy.
            logger.info("FAD: singular covariance product; adding %g to the diagonals", eps)
            offset = np.eye(cov_a.shape[0]) * eps
            covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FAD: the covariance square root has an imaginary component of "
                             f"{np.max(np.abs(covmean.imag)):.3g}; the embeddings are degenerate")
        covmean = covmean.real
    tr_covmean = float(np.trace(covmean))
    # fadtk's check: the trace of the square root is also the sum of the square roots of the
    # product's eigenvalues (real and >= 0 in exact arithmetic: the product is similar to a PSD matrix).
    tr_eig = float(np.sum(complex_sqrt(linalg.eigvals(cov_a @ cov_b))).real)
    if abs(tr_covmean - tr_eig) > 1e-3:
        logger.warning("FAD: high error in the matrix square root (sqrtm %.6g vs eigenvalues %.6g)", tr_covmean, tr_eig)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)


def frechet_distance(emb_a: Any, emb_b: Any) -> float:
    """FAD between two embedding sets.

    Args:
        emb_a: [N >= 2, D] embeddings (e.g. generated clips).
        emb_b: [M >= 2, D] embeddings (e.g. reference clips).

    Returns:
        The Fréchet distance of the Gaussians fitted to each set (symmetric in its arguments).
    """
    a, b = _pair(emb_a, emb_b)
    return frechet_distance_from_statistics(*embedding_statistics(a), *embedding_statistics(b))


# ----------------------------------------------------------------------------- KAD
def median_pairwise_distance(emb: Any) -> float:
    """Median Euclidean distance over the distinct pairs of rows of [N >= 2, D] embeddings.

    For an even number of pairs it is the lower of the two middle values (``torch.median``,
    which kadtk uses), not their mean.
    """
    e = as_embeddings(emb)
    if e.shape[0] < MIN_CLIPS:
        raise ValueError(f"a pairwise distance needs at least {MIN_CLIPS} embeddings; got {e.shape[0]}")
    d = np.sort(pdist(e))
    return float(d[(d.size - 1) // 2])


def kernel_audio_distance(emb_generated: Any, emb_reference: Any, bandwidth: float | None = None,
                          eps: float = 1e-8) -> float:
    """KAD: the unbiased MMD^2 between two sets with a Gaussian RBF kernel, times 100 (kadtk).

    Args:
        emb_generated: [N >= 2, D] embeddings of the evaluated clips.
        emb_reference: [M >= 2, D] embeddings of the reference clips.
        bandwidth: kernel bandwidth h in embedding units; None takes kadtk's heuristic, the
            median pairwise distance within ``emb_generated``.
        eps: kadtk's guard in ``gamma = 1 / (2 h^2 + eps)``.

    Returns:
        ``KAD_SCALE * (mean_{i != j} k(g_i, g_j) + mean_{i != j} k(r_i, r_j) - 2 mean k(g_i, r_j))``;
        0 in expectation for sets drawn from one distribution (may be slightly negative).
    """
    g, r = _pair(emb_generated, emb_reference)
    h = median_pairwise_distance(g) if bandwidth is None else float(bandwidth)
    if not (np.isfinite(h) and h >= 0):
        raise ValueError(f"KAD bandwidth must be a finite number >= 0; got {bandwidth}")
    gamma = 1.0 / (2.0 * h * h + eps)
    m, n = g.shape[0], r.shape[0]

    def within(x: np.ndarray) -> float:
        k = np.exp(-gamma * cdist(x, x, "sqeuclidean"))
        return float((k.sum() - np.trace(k)) / (x.shape[0] * (x.shape[0] - 1)))

    k_gr = float(np.exp(-gamma * cdist(g, r, "sqeuclidean")).sum() / (m * n))
    return KAD_SCALE * (within(g) + within(r) - 2.0 * k_gr)


# ----------------------------------------------------------------------------- results
def fad_warning(n_generated: int, n_reference: int, dim: int) -> str:
    """A sentence when either set is too small for a stable FAD, else ""."""
    n = min(n_generated, n_reference)
    if n >= max(FAD_WARN_CLIPS, dim + 1):
        return ""
    why = (f"fewer clips than the {dim} embedding dimensions + 1, so its covariance is singular"
           if n <= dim else f"fewer than {FAD_WARN_CLIPS} clips")
    return (f"FAD from {n_generated} generated / {n_reference} reference clips: {why}; the value is biased "
            "upward and unstable. Compare FADs only at equal n, and prefer KAD for small sets.")


def kad_warning(n_generated: int, n_reference: int) -> str:
    """A sentence when either set is small enough that KAD's spread is large, else ""."""
    if min(n_generated, n_reference) >= KAD_WARN_CLIPS:
        return ""
    return (f"KAD from {n_generated} generated / {n_reference} reference clips: unbiased, but with under "
            f"{KAD_WARN_CLIPS} clips per set its spread is large.")


def fad(generated: Any, reference: Any, embedding: str) -> DistanceResult:
    """FAD of generated against reference embeddings, with its sizes, label and warning."""
    g, r = _pair(generated, reference)
    return DistanceResult("FAD", frechet_distance(g, r), g.shape[0], r.shape[0], _label(embedding),
                          fad_warning(g.shape[0], r.shape[0], g.shape[1]))


def kad(generated: Any, reference: Any, embedding: str, bandwidth: float | None = None) -> DistanceResult:
    """KAD of generated against reference embeddings, with its sizes, label, warning and bandwidth."""
    g, r = _pair(generated, reference)
    h = median_pairwise_distance(g) if bandwidth is None else float(bandwidth)
    return DistanceResult("KAD", kernel_audio_distance(g, r, bandwidth=h), g.shape[0], r.shape[0],
                          _label(embedding), kad_warning(g.shape[0], r.shape[0]), h)


def _label(embedding: str) -> str:
    return EMBEDDINGS.get(embedding, embedding)


# ----------------------------------------------------------------------------- embeddings
def latent_vector(latent: Any) -> np.ndarray:
    """One vector per clip from a clip latent [B, C, T, ...]: the mean over time (axis 2), flattened.

    Time is the first axis after the channels in every recap backend (Stable Audio [C, T],
    AudioLDM [C, T, mel]); pooling it makes clips of any length comparable.

    Returns:
        [B, C * ...] float64.
    """
    if hasattr(latent, "detach"):
        latent = latent.detach().to("cpu").double().numpy()
    z = np.asarray(latent, dtype=np.float64)
    if z.ndim < 3:
        raise ValueError(f"a clip latent must be [B, C, T, ...]; got shape {z.shape}")
    return z.mean(axis=2).reshape(z.shape[0], -1)


def embed_clips(
    clips: Sequence[Any],
    sample_rate: int | Sequence[int],
    embedding: str,
    *,
    backend: Any | None = None,
    scorer: Any | None = None,
) -> np.ndarray:
    """Embeds clips for FAD / KAD, one vector per clip.

    Args:
        clips: N clips, each [C, T] or [T] float audio.
        sample_rate: Hz of all clips, or one rate per clip (each clip is resampled by the
            embedder itself, from its own rate, as stable-audio-metrics does).
        embedding: ``"clap"`` or ``"clap-paper"`` (audio embeddings of ``scorer``, a
            :class:`recap.metrics.clap.ClapScorer` loaded with the matching preset) or
            ``"vae-latent"`` (``backend.encode_audio``, mean-pooled over time, see
            :func:`latent_vector`).
        backend: the model whose autoencoder encodes the clips (``"vae-latent"``).
        scorer: the CLAP model (``"clap"``, ``"clap-paper"``).

    Returns:
        [N, D] float64 embeddings.

    Raises:
        ValueError: an unknown embedding, a missing model for it, or mismatched rates.
    """
    if embedding not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {embedding!r}; choose one of {', '.join(EMBEDDINGS)}")
    rates = [int(sample_rate)] * len(clips) if isinstance(sample_rate, (int, np.integer)) else [int(s) for s in sample_rate]
    if len(rates) != len(clips):
        raise ValueError(f"need one sample rate per clip; got {len(rates)} rates for {len(clips)} clips")
    rows = []
    if embedding == "vae-latent":
        if backend is None:
            raise ValueError("the vae-latent embedding needs the model (backend) whose autoencoder encodes the clips")
        for clip, sr in zip(clips, rates):
            rows.append(latent_vector(backend.encode_audio(np.atleast_2d(np.asarray(clip, dtype=np.float32)), sr))[0])
    else:
        if scorer is None:
            raise ValueError(f"the {embedding} embedding needs a loaded CLAP model")
        for clip, sr in zip(clips, rates):
            rows.append(np.asarray(scorer.embed_audio([clip], sr)[0], dtype=np.float64))
    if not rows:
        return np.zeros((0, 0))
    return np.stack(rows)
