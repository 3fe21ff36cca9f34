"""Run folders: where every generated clip lives with the settings that made it.

```
runs/<run-id>/manifest.json
runs/<run-id>/audio/<label>__seed<k>.wav
runs/<run-id>/latents/<label>__seed<k>.safetensors   {"initial": ..., "final": ...}
```
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from recap.paths import inside

FORMAT = "recap.run/1"


@dataclass
class ClipRecord:
    """One clip of a run: a (variant, seed) cell of the grid."""

    variant: str
    seed: int
    audio: str
    latents: str | None = None
    sha256: str = ""
    seconds: float = 0.0


@dataclass
class RunManifest:
    """Everything needed to read, analyse and repeat a run."""

    run_id: str
    kind: str
    created: str
    model: dict[str, Any]
    config: dict[str, Any]
    variants: list[dict[str, Any]]
    seeds: list[int]
    clips: list[ClipRecord]
    tokens: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    device: str = ""
    timings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return d

    def variant(self, label: str) -> dict[str, Any]:
        for v in self.variants:
            if v["label"] == label:
                return v
        raise KeyError(f"run {self.run_id} has no variant {label!r}")

    def clip(self, variant: str, seed: int) -> ClipRecord:
        for c in self.clips:
            if c.variant == variant and c.seed == seed:
                return c
        raise KeyError(f"run {self.run_id} has no clip {variant!r} seed {seed}")

    def audio_path(self, clip: ClipRecord) -> Path:
        assert self.path is not None
        return inside(self.path, clip.audio)

    def load_latents(self, clip: ClipRecord) -> dict[str, torch.Tensor]:
        assert self.path is not None and clip.latents
        return load_file(str(inside(self.path, clip.latents)))


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable by time, unique without coordination, safe as a folder name, and unguessable
    (64 random bits): the web server serves a run's files to whoever has its id."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(8)}"


def clip_stem(label: str, seed: int) -> str:
    return f"{label}__seed{seed}"


def versions() -> dict[str, str]:
    import diffusers
    import transformers

    import recap

    return {
        "recap": recap.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def load_run(run_dir: str | Path) -> RunManifest:
    """Reads ``run_dir/manifest.json``; raises ValueError for a folder that is not a run."""
    run_dir = Path(run_dir)
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run folder (no manifest.json)")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {data.get('format')!r}")
    data["clips"] = [ClipRecord(**c) for c in data["clips"]]
    return RunManifest(**data, path=run_dir)


def list_runs(runs_dir: Path) -> list[RunManifest]:
    """Runs under ``runs_dir``, newest first; unreadable folders are skipped."""
    out = []
    if runs_dir.is_dir():
        for d in sorted(runs_dir.iterdir(), reverse=True):
            try:
                out.append(load_run(d))
            except (ValueError, OSError, json.JSONDecodeError, TypeError):
                continue
    return out
