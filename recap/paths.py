"""Turning user-supplied names into safe file names, and writing files atomically."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, *, max_len: int = 64, fallback: str = "item") -> str:
    """Maps any user string to a file-name component that cannot escape its folder.

    Keeps letters, digits, ``.``, ``_`` and ``-``; everything else becomes ``-``. Leading dots
    are stripped (no hidden files, no ``..``), the result is cut to ``max_len``.

    >>> safe_name("../../etc/passwd")
    'etc-passwd'
    >>> safe_name("<my-bell>")
    'my-bell'
    """
    cleaned = _UNSAFE.sub("-", name).strip("-.")
    cleaned = re.sub(r"-{2,}", "-", cleaned)[:max_len].strip("-.")
    return cleaned or fallback


def inside(root: Path, relative: str | Path) -> Path:
    """Resolves ``relative`` under ``root`` and refuses anything that lands outside it."""
    root = root.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"path {str(relative)!r} points outside {root}")
    return target


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
