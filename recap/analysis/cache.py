"""Caches of a run's analysis: tensors per key in one folder, the backend loaded only when needed."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from recap.generation.runs import RunManifest
from recap.paths import atomic_write_bytes, safe_name

logger = logging.getLogger(__name__)


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class TensorCache:
    """Tensors stored per key as safetensors files in one folder (written atomically)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.folder / f"{safe_name(key, max_len=120)}.safetensors"
        try:
            return load_file(str(path)) if path.is_file() else None
        except Exception as exc:  # a truncated or foreign file is recomputed, not fatal
            logger.warning("ignoring unreadable cache file %s (%s)", path.name, exc)
            return None

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        path = self.folder / f"{safe_name(key, max_len=120)}.safetensors"
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}))


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


class LazyBackend:
    """Loads the run's backend the first time something is not cached, not before."""

    def __init__(self, manifest: RunManifest, backend: Any | None) -> None:
        self.name = backend.name if backend is not None else str(manifest.model.get("name"))
        self.loaded = backend

    def get(self) -> Any:
        if self.loaded is None:
            from recap.backends.loading import load_backend
            from recap.config import settings

            s = settings()
            logger.info("loading backend %s to encode clips", self.name)
            self.loaded = load_backend(self.name, device=s.device, dtype=s.dtype)
        return self.loaded
