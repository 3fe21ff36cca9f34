"""Upper bounds on everything a user can ask for, and the checks that enforce them.

A public server takes values from strangers, so every number, list and text that reaches the
core has a bound here, checked in the core (the web app, its API and the CLI all pass through
the same check) with a sentence that names the value. The bounds are generous for research use
and small enough that one request cannot hold the GPU, the disk or the memory for everyone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from recap.errors import BadInput


@dataclass(frozen=True)
class Limits:
    """The bounds (one immutable instance, :data:`LIMITS`).

    Attributes:
        steps: Denoising steps of one generation or transfer.
        train_steps: Textual Inversion optimisation steps of one training call.
        vectors: Vectors of one learned token.
        seeds: Seeds of one grid.
        variants: Prompt rows of one grid.
        strengths: Strengths of one style-transfer sweep.
        study_checks: Attention-check items of one study.
        study_repeats: Repeated items of one study.
        study_items: Items of one study in all.
        llm_answer_bytes: Largest LLM answer body read; more is refused unread.
        llm_total_s: Longest an LLM request (all tries together) may take.
        upload_mb: Largest upload the web server accepts, per file and per request.
        body_mb: Largest body of any other request (an event's JSON is read into memory whole).
        disk_floor_mb: Uploads are refused while less than this is free on the upload disk.
        text_chars: Longest free text (prompt, instruction, question).
    """

    steps: int = 500
    train_steps: int = 5000
    vectors: int = 16
    seeds: int = 16
    variants: int = 64
    strengths: int = 16
    study_checks: int = 50
    study_repeats: int = 50
    study_items: int = 500
    llm_answer_bytes: int = 256 * 1024
    llm_total_s: float = 180.0
    upload_mb: int = 100
    body_mb: int = 16
    disk_floor_mb: int = 1024
    text_chars: int = 4000


LIMITS = Limits()


def whole(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or :class:`BadInput` naming ``name``.

    Floats are accepted only when whole (the browser's number fields send 3.0 for 3).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be a whole number from {low} to {high}, got {_shown(value)}") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise BadInput(f"{name} must be a whole number from {low} to {high}, got {_shown(value)}")
    return int(number)


def finite(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a finite float in [low, high], or :class:`BadInput` naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be a number from {low:g} to {high:g}, got {_shown(value)}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise BadInput(f"{name} must be a number from {low:g} to {high:g}, got {_shown(value)}")
    return number


def text(name: str, value: Any, max_chars: int = LIMITS.text_chars, *, allow_newlines: bool = True) -> str:
    """``value`` as a str of at most ``max_chars`` printable characters (tabs and, when allowed,
    line breaks pass), or :class:`BadInput` naming ``name``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInput(f"{name} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise BadInput(f"{name} is {len(value):,} characters long; at most {max_chars:,} are accepted")
    allowed = "\t\n\r" if allow_newlines else "\t"
    if any(not (c.isprintable() or c in allowed) for c in value):
        raise BadInput(f"{name} contains control characters")
    return value


def _shown(value: Any) -> str:
    """A short, safe rendering of a rejected value for an error message."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
