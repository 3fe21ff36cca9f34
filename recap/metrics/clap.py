"""Optional CLAP scores (paper 001): CLAP-A (audio-audio) and CLAP-T (audio-text).

CLAP-A of a clip is the mean cosine between its CLAP audio embedding and those of the
reference clips; CLAP-T is the cosine between its audio embedding and the embedding of a
text. The weights (~600 MB) come from the Hugging Face Hub; when they cannot be loaded
:meth:`ClapScorer.from_pretrained` raises :class:`ClapUnavailable` with the reason, and the
analysis carries on without CLAP.

A CLAP number depends on the checkpoint *and* on how the audio is prepared, so every scorer
carries both (:attr:`ClapScorer.label`, :meth:`ClapScorer.describe`). Two presets
(:data:`CLAP_PRESETS`):

- ``recap`` (the default, unchanged): ``laion/clap-htsat-unfused``; mono, 48 kHz, cut into
  10 s windows whose embeddings are averaged by length. Not comparable to published scores.
- ``paper``: the setup of Stability AI's stable-audio-metrics (``src/clap_score.py``), which
  recent text-to-audio papers report: LAION-CLAP's fused HTSAT checkpoint
  (``laion/clap-htsat-fused``, the transformers port; stable-audio-metrics loads
  ``630k-audioset-fusion-best.pt``), audio mono at 48 kHz, peak-normalised to -1 dBFS,
  quantised to int16 and embedded whole (fusion for long clips, repeat-padding for short ones).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch

from recap.errors import ModelUnavailable

logger = logging.getLogger(__name__)

DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"
PAPER_CLAP_MODEL = "laion/clap-htsat-fused"
CLAP_SAMPLE_RATE = 48_000  # the rate every released CLAP checkpoint was trained on
# stable-audio-metrics peak-normalises every clip to this level (pyloudnorm.normalize.peak(x, -1.0)).
PAPER_PEAK_DB = -1.0

# How audio becomes CLAP input; the key is what scores record, the text says what it means.
PREPROCESSING = {
    "recap": "mono, resampled to 48 kHz, 10 s windows, length-weighted mean of the window embeddings",
    "stable-audio-metrics": "mono, resampled to 48 kHz, peak-normalised to -1 dBFS, quantised to int16, "
                            "whole clip (fusion / repeat-padding), as stable-audio-metrics' clap_score",
}


@dataclass(frozen=True)
class ClapPreset:
    """A CLAP checkpoint with the audio preparation its numbers assume.

    Attributes:
        model: Hub id or folder of the checkpoint.
        preprocessing: a key of :data:`PREPROCESSING`.
        description: what the preset is for, shown in help texts.
    """

    model: str
    preprocessing: str
    description: str


CLAP_PRESETS = {
    "recap": ClapPreset(DEFAULT_CLAP_MODEL, "recap",
                        "recap's own CLAP (unfused checkpoint, 10 s windows); not comparable to published scores"),
    "paper": ClapPreset(PAPER_CLAP_MODEL, "stable-audio-metrics",
                        "LAION-CLAP fused HTSAT with stable-audio-metrics' preprocessing, as papers report CLAP"),
}
# The default stays recap's own setup: earlier analyses and their cached metrics keep their meaning.
DEFAULT_CLAP_PRESET = "recap"


class ClapUnavailable(ModelUnavailable):
    """The CLAP model could not be loaded (no network, not cached, gated, or not a CLAP model)."""


def is_cached(name: str = DEFAULT_CLAP_MODEL) -> bool:
    """True when ``name`` is a local folder or its config is in the Hugging Face cache (no network)."""
    if Path(name).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an unparseable repo id or a broken cache: not usable either way
        return False


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected, normalised
    # embedding; older releases returned that tensor directly.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@contextmanager
def _fixed_numpy_seed(seed: int = 0) -> Iterator[None]:
    # The CLAP feature extractor draws its fusion crops and its "is_longer" pick from numpy's
    # global generator; a fixed draw gives a clip the same embedding every time. The caller's
    # generator state is restored afterwards.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _mono_float(audio: Any) -> np.ndarray:
    if hasattr(audio, "detach"):
        audio = audio.detach().to("cpu").float().numpy()
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)  # CLAP is mono (librosa.to_mono: the mean of the channels)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"audio must be [T] or [C, T] with T > 0; got shape {np.shape(audio)}")
    return x


def paper_waveform(audio: Any, sample_rate: int, target_sr: int = CLAP_SAMPLE_RATE) -> np.ndarray:
    """A clip prepared as stable-audio-metrics' ``clap_score`` prepares it.

    In order: mono (channel mean), resampled to ``target_sr`` (librosa, soxr_hq, as
    ``librosa.load(sr=48000, mono=True)``), peak-normalised to -1 dBFS
    (``pyloudnorm.normalize.peak(x, -1.0)``: gain = 10^(-1/20) / max|x|), then quantised to
    int16 and back (clip to [-1, 1], ``(x * 32767).astype(int16) / 32767``).

    Args:
        audio: [T] or [C, T] float samples.
        sample_rate: Hz of ``audio``.
        target_sr: Hz of the result (48 kHz for every released CLAP).

    Returns:
        [T'] float32 at ``target_sr`` with peak 10^(-1/20) ~ 0.891 (up to int16 rounding).

    Raises:
        ValueError: empty or all-silent audio (peak normalisation divides by the peak).
    """
    x = _mono_float(audio)
    if sample_rate != target_sr:
        x = librosa.resample(x, orig_sr=sample_rate, target_sr=target_sr).astype(np.float32)
    peak = float(np.max(np.abs(x)))
    if not np.isfinite(peak):
        raise ValueError("audio holds non-finite samples (NaN or infinite)")
    if peak == 0.0:
        raise ValueError("audio is silent: peak normalisation (stable-audio-metrics' CLAP preprocessing) is undefined")
    # float64, as pyloudnorm's numpy-float64 gain makes it there
    y = x.astype(np.float64) * (np.power(10.0, PAPER_PEAK_DB / 20.0) / peak)
    # int16 round trip as LAION-CLAP's README and stable-audio-metrics do it (truncation toward 0).
    q = (np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16)
    return (q / 32767.0).astype(np.float32)


class ClapScorer:
    """A CLAP model plus its processor, embedding audio and text into one space.

    Args:
        model: a ``transformers.ClapModel`` (eval mode is set here).
        processor: the matching ``transformers.ClapProcessor``.
        name: model id or path, recorded with the scores.
        device: where the model runs.
        preprocessing: how audio is prepared, a key of :data:`PREPROCESSING`: ``"recap"``
            (10 s windows, averaged) or ``"stable-audio-metrics"`` (the papers' CLAP score).
    """

    def __init__(self, model: Any, processor: Any, name: str = "", device: str | torch.device = "cpu",
                 preprocessing: str = "recap") -> None:
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"unknown CLAP preprocessing {preprocessing!r}; choose one of {', '.join(PREPROCESSING)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.name = name
        self.preprocessing = preprocessing
        fe = processor.feature_extractor
        self.sample_rate: int = int(fe.sampling_rate)
        # One CLAP window; longer clips are cut into windows instead of the extractor's random
        # crop, so the same clip always gets the same embedding.
        self.window: int = int(fe.nb_max_samples)
        # The extractor must shape its output for the model it feeds: 4 stacked mels for a
        # fusion model, 1 otherwise (an extractor saved with the other setting would crash).
        self._truncation = "fusion" if getattr(model.config.audio_config, "enable_fusion", False) else "rand_trunc"

    @property
    def label(self) -> str:
        """Checkpoint and preprocessing in one line, e.g. ``laion/clap-htsat-fused [stable-audio-metrics]``."""
        return f"{self.name or 'CLAP'} [{self.preprocessing}]"

    def describe(self) -> dict[str, str]:
        """What a stored CLAP number needs next to it: checkpoint, preprocessing key and meaning."""
        return {"model": self.name, "preprocessing": self.preprocessing,
                "preprocessing_detail": PREPROCESSING[self.preprocessing]}

    @classmethod
    def from_preset(
        cls,
        preset: str = DEFAULT_CLAP_PRESET,
        device: str | torch.device | None = None,
        local_files_only: bool = False,
        model: str | None = None,
    ) -> ClapScorer:
        """Loads a preset of :data:`CLAP_PRESETS` (``"recap"`` or ``"paper"``).

        Args:
            preset: preset name.
            device: torch device; default CUDA when available, else CPU.
            local_files_only: never touch the network.
            model: another checkpoint (Hub id or folder) with the preset's preprocessing, e.g.
                a local conversion of ``630k-audioset-fusion-best.pt``.

        Raises:
            ValueError: an unknown preset.
            ClapUnavailable: the weights cannot be loaded.
        """
        if preset not in CLAP_PRESETS:
            raise ValueError(f"unknown CLAP preset {preset!r}; choose one of {', '.join(CLAP_PRESETS)}")
        p = CLAP_PRESETS[preset]
        return cls.from_pretrained(model or p.model, device=device, local_files_only=local_files_only,
                                   preprocessing=p.preprocessing)

    @classmethod
    def from_pretrained(
        cls,
        name: str = DEFAULT_CLAP_MODEL,
        device: str | torch.device | None = None,
        local_files_only: bool = False,
        preprocessing: str = "recap",
    ) -> ClapScorer:
        """Loads ``ClapModel`` and ``ClapProcessor`` from the Hub or a local folder.

        Args:
            name: Hub id (``laion/clap-htsat-unfused``, ``laion/larger_clap_music``...) or a
                folder written by ``save_pretrained``.
            device: torch device; default CUDA when available, else CPU.
            local_files_only: never touch the network (use the local cache only).
            preprocessing: a key of :data:`PREPROCESSING` (see :class:`ClapScorer`).

        Raises:
            ClapUnavailable: with the reason, whenever the weights cannot be loaded.
        """
        from transformers import ClapModel, ClapProcessor

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"

        def load(local_only: bool) -> tuple[Any, Any]:
            return (ClapModel.from_pretrained(name, local_files_only=local_only),
                    ClapProcessor.from_pretrained(name, local_files_only=local_only))

        hint = "CLAP scores need its weights from the Hugging Face Hub (network access) or in the local cache."
        try:
            model, processor = load(True)  # a local folder or the Hub cache: no network
        except Exception as exc:
            # Offline, gated, missing and malformed checkpoints surface as OSError, ValueError,
            # HTTP or safetensors errors depending on where loading stops; to a user they all
            # mean the same: CLAP scores are not available right now.
            if local_files_only or Path(name).is_dir():
                raise ClapUnavailable(
                    f"CLAP model {name!r} could not be loaded ({type(exc).__name__}: {exc}). {hint}"
                ) from exc
            # Ask the Hub once, quickly, before from_pretrained: offline, its per-file retries take minutes.
            try:
                from huggingface_hub import HfApi

                HfApi().model_info(name, timeout=10)
                model, processor = load(False)
            except Exception as exc2:
                raise ClapUnavailable(
                    f"CLAP model {name!r} could not be loaded: it is not in the local cache and the Hub "
                    f"did not provide it ({type(exc2).__name__}: {exc2}). {hint}"
                ) from exc2
        logger.info("loaded CLAP model %s on %s", name, device)
        return cls(model, processor, name=name, device=device, preprocessing=preprocessing)

    def _windows(self, audio: Any, sample_rate: int) -> list[np.ndarray]:
        x = _mono_float(audio)
        if sample_rate != self.sample_rate:
            x = librosa.resample(x, orig_sr=sample_rate, target_sr=self.sample_rate).astype(np.float32)
        n = max(1, int(np.ceil(x.size / self.window)))
        return [x[i * self.window : (i + 1) * self.window] for i in range(n)]

    @torch.no_grad()
    def embed_audio(self, clips: Sequence[Any], sample_rate: int) -> torch.Tensor:
        """CLAP audio embeddings, prepared as :attr:`preprocessing` says.

        Args:
            clips: N clips, each [T] or [C, T] float in [-1, 1] (channels averaged).
            sample_rate: Hz of the clips; resampled to the model's 48 kHz.

        Returns:
            [N, D] float32 unit vectors on the CPU. With ``"recap"`` preprocessing a clip longer
            than one CLAP window gets the normalised, length-weighted mean of its windows'
            embeddings; with ``"stable-audio-metrics"`` each clip is embedded whole, alone.
        """
        out = []
        for clip in clips:
            if self.preprocessing == "stable-audio-metrics":
                windows = [paper_waveform(clip, sample_rate, self.sample_rate)]
                padding = "repeatpad"  # LAION-CLAP's get_audio_embedding_from_data fills short clips so
            else:
                windows = self._windows(clip, sample_rate)
                padding = None  # the extractor's own setting, as before
            with _fixed_numpy_seed():
                inputs = self.processor.feature_extractor(
                    windows, sampling_rate=self.sample_rate, truncation=self._truncation, padding=padding,
                    return_tensors="pt",
                )
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            emb = _features(self.model.get_audio_features(**inputs)).float()
            # Weighted by length so a short tail window counts for what it holds.
            weights = torch.tensor([len(w) for w in windows], dtype=emb.dtype, device=emb.device)
            mean = (emb * (weights / weights.sum())[:, None]).sum(dim=0)
            out.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
        if not out:
            return torch.zeros(0, 0)
        return torch.stack(out)

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """CLAP text embeddings: [N, D] float32 unit vectors on the CPU."""
        if not texts:
            return torch.zeros(0, 0)
        inputs = self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        emb = _features(self.model.get_text_features(**inputs)).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu()


def _unit_rows(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"embeddings must be [N, D]; got shape {a.shape}")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an embedding has zero norm")
    return a / norms


def clap_a(audio_emb: Any, reference_emb: Any) -> np.ndarray:
    """CLAP-A per clip: mean cosine between each clip and every reference clip.

    Args:
        audio_emb: [N, D] CLAP audio embeddings of the clips.
        reference_emb: [M, D] CLAP audio embeddings of the references (M >= 1).

    Returns:
        [N] float64 in [-1, 1].
    """
    a, r = _unit_rows(audio_emb), _unit_rows(reference_emb)
    if r.shape[0] == 0 or a.shape[1] != r.shape[1]:
        raise ValueError(f"need [N, D] clips and [M>=1, D] references; got {a.shape} and {r.shape}")
    return np.clip(a @ r.T, -1.0, 1.0).mean(axis=1)


def clap_t(audio_emb: Any, text_emb: Any) -> np.ndarray:
    """CLAP-T per clip: cosine between clip i's audio embedding and text i's embedding.

    Args:
        audio_emb: [N, D] CLAP audio embeddings.
        text_emb: [N, D] CLAP text embeddings, row i describing clip i.

    Returns:
        [N] float64 in [-1, 1].
    """
    a, t = _unit_rows(audio_emb), _unit_rows(text_emb)
    if a.shape != t.shape:
        raise ValueError(f"audio and text embeddings must pair up row by row; got {a.shape} and {t.shape}")
    return np.clip(np.sum(a * t, axis=1), -1.0, 1.0)


def score_clips(
    scorer: ClapScorer,
    clips: Sequence[tuple[Any, int]],
    texts: Sequence[str],
    references: Sequence[tuple[Any, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """CLAP-A against the references and CLAP-T against each clip's own text.

    Args:
        scorer: a loaded CLAP model.
        clips: N (audio [C, T] or [T], sample_rate) pairs.
        texts: N texts, text i describing clip i (usually its prompt).
        references: M >= 1 (audio, sample_rate) reference clips.

    Returns:
        (clap_a [N], clap_t [N]) float64 arrays.
    """
    if len(clips) != len(texts):
        raise ValueError(f"need one text per clip; got {len(clips)} clips and {len(texts)} texts")
    if not references:
        raise ValueError("CLAP-A needs at least one reference clip")
    if not clips:
        return np.zeros(0), np.zeros(0)
    audio_emb = torch.cat([scorer.embed_audio([a], sr) for a, sr in clips])
    ref_emb = torch.cat([scorer.embed_audio([a], sr) for a, sr in references])
    return clap_a(audio_emb, ref_emb), clap_t(audio_emb, scorer.embed_text(texts))
