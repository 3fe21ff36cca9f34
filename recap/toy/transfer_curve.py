"""Where style transfer's strength bends on the toy model: a world clip pushed towards a prompt.

The source and the target clips are rendered from the toy world (:mod:`recap.toy.world`), so the
measurement needs nothing but the shipped model; ``recap toy transfer-curve`` prints the table the
README quotes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recap.analysis.transfer_curves import similarity_curves
from recap.backends.base import AudioBackend
from recap.generation.transfer import TransferConfig, transfer
from recap.toy import world as W
from recap.toy.evaluation import world_clips

STRENGTHS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class CurveRow:
    """One strength: where it starts and how close its outputs are (clip latent cosine, mean over seeds)."""

    strength: float
    sigma: float
    steps_run: int
    to_source: float
    to_target: float


def transfer_curve(backend: AudioBackend, seeds: Sequence[int], strengths: Sequence[float] = STRENGTHS,
                   steps: int = 25, guidance: float = 4.0, source: W.SoundSpec = W.SoundSpec("hum", "low", "continuous"),
                   target: W.SoundSpec = W.SoundSpec("beep", "high", "repeating"), n_targets: int = 4,
                   data_seed: int = 2024) -> list[CurveRow]:
    """A ``source`` clip pushed towards the prompt of ``target`` at each strength.

    Args:
        seeds: Seeds of the sweep (each strength of a seed shares its noise).
        n_targets: Clips of ``target`` the "to target" cosine is averaged over.
        data_seed: Draws the source and target clips from the world.
    """
    clips = world_clips(source, 1, data_seed) + world_clips(target, n_targets, data_seed + 1)
    prompt = f"a {target.pitch} {target.rhythm} {target.source}"
    config = TransferConfig(strengths=list(strengths), seeds=list(seeds), seconds=W.CLIP_SAMPLES / W.SAMPLE_RATE,
                            steps=steps, guidance=guidance)
    result = transfer(backend, clips[0], prompt, config, references=clips[1:], limit=None)
    curves = similarity_curves(result, backend)
    return [CurveRow(p.strength, start.sigma, start.steps_run, p.source_cosine, p.target_cosine)
            for p, start in zip(curves.points, result.starts)]
