"""Checkpoints of Textual Inversion training: the tensors of a step and the curve up to it.

A checkpoint is ``checkpoint.safetensors`` (vectors, initial vectors, optimiser moments and the
random generator's state, with the step's info as metadata, one atomic write) and
``history.json``, the curve (:class:`StepRecord` per step), written first so that it may run
ahead of the tensors after a crash but never behind: a resume cuts it at the checkpoint's step,
so the curve continues across stop and resume, here and in the app.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from recap.config import settings
from recap.errors import RecapError
from recap.paths import atomic_write_bytes, atomic_write_json, json_bytes, safe_name

HISTORY_FILE = "history.json"


class TrainingDiverged(RecapError, RuntimeError):
    """The loss or the vectors stopped being finite; nothing was saved from that point on."""


@dataclass(frozen=True)
class StepRecord:
    """One optimiser step as the training curve keeps it (``history.json`` of a checkpoint).

    Attributes:
        step: 1-based step number.
        loss: The step's training loss.
        norm: Mean L2 norm of the token's vectors after the step; None for steps restored from
            a checkpoint written before histories were kept (only their losses are known).
        cos_to_init: Mean cosine between the vectors and their initial values; None likewise.
        seconds: Wall-clock seconds of the step (batch, forward, backward, update; not its
            checkpoint or preview); None likewise.
    """

    step: int
    loss: float
    norm: float | None = None
    cos_to_init: float | None = None
    seconds: float | None = None


def default_checkpoint_dir(placeholder: str) -> Path:
    return settings().tokens_dir / ".checkpoints" / safe_name(placeholder, fallback="token")


def save_history(path: Path, history: Sequence[StepRecord]) -> None:
    """Writes ``history`` as ``path/history.json`` atomically (a temporary file, then ``os.replace``).

    A reader, or a crash at any moment, sees the previous whole file or the new whole file.
    """
    data = {"format": "recap.ti-history/1", "steps": [asdict(r) for r in history]}
    atomic_write_bytes(Path(path) / HISTORY_FILE, json_bytes(data, indent=None))


def read_history(path: Path) -> list[StepRecord]:
    """The records in ``path/history.json``; [] when there is none or it cannot be read.

    Only whole, well-formed records are returned (a damaged file reads as no history, and the
    caller falls back on the checkpoint's losses).
    """
    try:
        data = json.loads((Path(path) / HISTORY_FILE).read_text())
        out = []
        for r in data["steps"]:
            optional = [None if r.get(k) is None else float(r[k]) for k in ("norm", "cos_to_init", "seconds")]
            out.append(StepRecord(int(r["step"]), float(r["loss"]), *optional))
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def history_to(path: Path, step: int, losses: Sequence[float]) -> list[StepRecord]:
    # history.json is written before the checkpoint's tensors, so it may run ahead of them (a crash
    # between the two) but never behind: cut at the checkpoint's step. A history that does not hold
    # every step up to it (a checkpoint from before histories were kept) is rebuilt from the losses.
    records = [r for r in read_history(path) if r.step <= step]
    if [r.step for r in records] == list(range(1, step + 1)):
        return records
    return [StepRecord(i, float(loss)) for i, loss in enumerate(losses[:step], 1)]


def checkpoint_history(checkpoint_dir: Path) -> list[StepRecord]:
    """The steps 1..N of the checkpoint in ``checkpoint_dir`` (its step N), as a resume continues
    them; [] when there is no checkpoint."""
    info = checkpoint_info(Path(checkpoint_dir))
    if info is None:
        return []
    return history_to(Path(checkpoint_dir), int(info["step"]), info.get("losses") or [])


def save_checkpoint(path: Path, vectors, init, optimizer, generator, step, losses, meta,
                     history: Sequence[StepRecord]) -> None:
    if not torch.isfinite(vectors.detach()).all():  # a resumable NaN token is still a NaN token
        raise TrainingDiverged(f"training reached non-finite vectors at step {step}; no checkpoint was written")
    save_history(path, history)  # first: the history may run ahead of the tensors, never behind
    state = optimizer.state.get(vectors, {})
    tensors = {"vectors": vectors.detach().cpu(), "init": init, "rng": generator.get_state()}
    for k in ("exp_avg", "exp_avg_sq"):
        if k in state:
            tensors[f"opt.{k}"] = state[k].detach().cpu()
    info = {"step": step, "losses": losses, "opt_step": float(state["step"]) if "step" in state else 0.0, **meta}
    # Tensors and the step they belong to live in one file written atomically, so a crash can never
    # pair new vectors with an old step; checkpoint.json is a readable copy of the same info.
    atomic_write_bytes(path / "checkpoint.safetensors", save(tensors, metadata={"info": json.dumps(info, default=str)}))
    atomic_write_json(path / "checkpoint.json", info)


def checkpoint_info(path: Path) -> dict[str, Any] | None:
    # The info stored with the tensors (checkpoint.json is only a readable copy of it).
    file = path / "checkpoint.safetensors"
    if not file.is_file():
        return None
    with safe_open(str(file), framework="pt") as f:
        return json.loads(f.metadata()["info"])


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    info = checkpoint_info(path)
    if info is None:
        return None
    tensors = load_file(str(path / "checkpoint.safetensors"))
    if not torch.isfinite(tensors["vectors"]).all():
        raise TrainingDiverged(f"the checkpoint in {path} holds non-finite vectors; train again instead")
    return tensors, info
