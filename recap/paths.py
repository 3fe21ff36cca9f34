"""Turning user-supplied names into safe file names, and writing files atomically."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
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


def replace_dir(staged: Path, target: Path) -> None:
    """Puts the complete folder ``staged`` in ``target``'s place; the old folder goes only once the new one is there."""
    if not staged.is_dir():
        raise FileNotFoundError(f"{staged} is not a folder; {target} is left as it was")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.replace(old)
    staged.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def finite_only(obj: Any) -> Any:
    """``obj`` with every float that is not finite replaced by None (JSON has no NaN or inf).

    Tuples become lists and mappings get string keys, as ``json.dumps`` would make them.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): finite_only(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_only(v) for v in obj]
    return obj


def json_bytes(obj: Any, indent: int | None = 2) -> bytes:
    """Strict JSON for ``obj`` (``allow_nan=False``; non-finite numbers stored as null), one line feed at the end.

    Paths and other objects that are not JSON types are written as their ``str``, as
    :func:`atomic_write_json` writes them.
    """
    text = json.dumps(finite_only(obj), indent=indent, allow_nan=False, default=_jsonable)
    return (text + "\n").encode()


def _jsonable(obj: Any) -> Any:
    # numpy scalars and 0-d tensors arrive here: keep numbers numbers (and finite), the rest as text
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return finite_only(obj.item())
        except (TypeError, ValueError):
            pass
    return str(obj)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Writes :func:`json_bytes` of ``obj`` atomically (readers see the old file or the whole new one)."""
    atomic_write_bytes(Path(path), json_bytes(obj))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
