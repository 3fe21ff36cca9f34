"""MUSHRA's low-pass anchors (ITU-R BS.1534-3, 5.1): the reference, low-passed at 3.5 kHz and 7 kHz.

BS.1534 asks for a low anchor (3.5 kHz) and recommends a mid anchor (7 kHz), made from the
reference by the tool rather than chosen by the experimenter. Here the filter is a Butterworth
low-pass applied forwards and backwards (``sosfiltfilt``): zero phase, so an anchor stays
aligned with the reference sample for sample (raters switch between them at the same position),
and the squared magnitude doubles the slope (order 8 -> 16 poles, ~96 dB per octave).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (condition name, cutoff in Hz), low anchor first.
ANCHORS: tuple[tuple[str, float], ...] = (("anchor 3.5 kHz", 3500.0), ("anchor 7 kHz", 7000.0))
HIDDEN_REFERENCE = "hidden reference"
FILTER_ORDER = 8


@dataclass(frozen=True)
class AnchorPlan:
    """Which anchors a sample rate allows, and a sentence for each one it does not."""

    anchors: tuple[tuple[str, float], ...]
    skipped: tuple[str, ...]


def plan_anchors(sample_rate: int) -> AnchorPlan:
    """The anchors that fit below ``sample_rate``'s Nyquist frequency.

    An anchor whose cutoff is at or above Nyquist would be the reference itself, which would
    make it a second hidden reference; it is skipped, and the sentence says why.
    """
    nyquist = sample_rate / 2.0
    keep, skipped = [], []
    for name, cutoff in ANCHORS:
        if cutoff < nyquist:
            keep.append((name, cutoff))
        else:
            skipped.append(f"{name} skipped: the clips' sample rate ({sample_rate} Hz) has its Nyquist "
                           f"frequency ({nyquist:.0f} Hz) at or below the anchor's cutoff ({cutoff:.0f} Hz)")
    return AnchorPlan(tuple(keep), tuple(skipped))


def lowpass(audio: np.ndarray, sample_rate: int, cutoff_hz: float, order: int = FILTER_ORDER) -> np.ndarray:
    """``audio`` [C, T] low-passed at ``cutoff_hz`` with a zero-phase Butterworth filter.

    Raises:
        ValueError: ``cutoff_hz`` is not strictly between 0 and Nyquist.
    """
    from scipy import signal  # slow to import; only creating a MUSHRA study needs it

    if not 0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f"cutoff {cutoff_hz} Hz must lie between 0 and Nyquist ({sample_rate / 2} Hz)")
    sos = signal.butter(order, cutoff_hz, btype="lowpass", fs=sample_rate, output="sos")
    x = np.asarray(audio, dtype=np.float64)
    # filtfilt pads by reflection; very short clips get a shorter pad rather than an error
    padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)
    return signal.sosfiltfilt(sos, x, axis=-1, padlen=max(0, padlen)).astype(np.float32)
