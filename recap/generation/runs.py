"""Run folders: where every generated clip lives with the settings that made it.

```
runs/<run-id>/manifest.json
runs/<run-id>/audio/<label>__seed<k>.wav
runs/<run-id>/latents/<label>__seed<k>.safetensors   {"initial": ..., "final": ...}
```

A manifest is read as untrusted input: a folder whose manifest is missing, not JSON, of the
wrong shape or naming a file outside its folder is not a run (:class:`BadInput`), and listings
skip it with a log line, so one broken folder never breaks the list another visitor sees.
Everything recap writes as JSON goes through :func:`recap.paths.json_bytes`: strict JSON, where a value
that is not a finite number (a NaN score) is stored as null.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import platform
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recap.errors import BadInput
from recap.paths import inside, safe_name

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FORMAT = "recap.run/1"
# A manifest is a few kB per clip; anything near this is not one of ours (and is not read whole).
MAX_MANIFEST_BYTES = 32 * 1024 * 1024


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

    def token_file(self, info: dict[str, Any]) -> Path | None:
        """The file of a token the run used (``tokens`` entry), or None when it is not on disk.

        Runs keep a copy in their own ``tokens/`` folder (a relative path); older runs name the
        file where it was loaded from.
        """
        name = info.get("file")
        if not isinstance(name, str) or not name:
            return None
        path = Path(name) if Path(name).is_absolute() else inside(self.path, name)
        return path if path.is_file() else None

    def audio_path(self, clip: ClipRecord) -> Path:
        assert self.path is not None
        return inside(self.path, clip.audio)

    def load_latents(self, clip: ClipRecord) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file  # torch is loaded with the first model, not at the app's start

        assert self.path is not None and clip.latents
        return load_file(str(inside(self.path, clip.latents)))


# ----------------------------------------------------------------------------- strict JSON
def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(path: Path, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Parses a JSON file strictly (NaN / Infinity refused), refusing files over ``max_bytes`` unread.

    Raises:
        BadInput: too large, not UTF-8 or not strict JSON (the message names the file).
        OSError: it cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise BadInput(f"{path.name} is {size:,} bytes; a recap file is at most {max_bytes:,}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"{path} is not valid JSON ({str(exc)[:120]})") from None


# ----------------------------------------------------------------------------- names and versions
def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable by time, unique without coordination, safe as a folder name, and unguessable
    (64 random bits): the web server serves a run's files to whoever has its id."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(8)}"


def clip_stem(label: str, seed: int) -> str:
    return f"{label}__seed{seed}"


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    import recap

    return {
        "recap": recap.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


# ----------------------------------------------------------------------------- reading
def _need(ok: bool, where: Path, message: str) -> None:
    if not ok:
        raise BadInput(f"{where}: {message}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_name(x: Any) -> bool:
    return isinstance(x, str) and bool(x) and safe_name(x, max_len=120) == x


def _check_manifest(data: Any, run_dir: Path) -> RunManifest:
    """The manifest in ``data`` after checking every field a reader relies on (BadInput otherwise)."""
    where = run_dir / "manifest.json"
    _need(isinstance(data, dict), where, "not a JSON object")
    _need(data.get("format") == FORMAT, where, f"unknown format {str(data.get('format'))[:40]!r}")
    known = {f.name for f in fields(RunManifest)} - {"path"}
    unknown = sorted(str(k)[:40] for k in set(data) - known)
    _need(not unknown, where, f"unknown field(s) {', '.join(unknown)}")
    missing = sorted(k for k in ("run_id", "kind", "created", "model", "config", "variants", "seeds", "clips")
                     if k not in data)
    _need(not missing, where, f"missing field(s) {', '.join(missing)}")
    _need(_is_name(data["run_id"]), where, "run_id is not a folder-safe name")
    for key in ("kind", "created"):
        _need(isinstance(data[key], str) and len(data[key]) <= 64, where, f"{key} is not a short text")
    for key in ("model", "config", "versions", "timings", "extra"):
        _need(isinstance(data.get(key, {}), dict), where, f"{key} is not an object")
    model = data["model"]
    _need(isinstance(model.get("name"), str) and 0 < len(model["name"]) <= 200, where, "model.name is not a name")
    _need(_is_int(model.get("sample_rate", 1)) and model.get("sample_rate", 1) > 0, where,
          "model.sample_rate is not a positive whole number")
    _need(isinstance(model.get("random_weights", False), bool), where, "model.random_weights is not true/false")
    _need(isinstance(data.get("device", ""), str), where, "device is not text")
    _need(all(_is_number(v) or isinstance(v, list) for v in data.get("timings", {}).values()), where,
          "timings hold something that is not a number")
    variants = data["variants"]
    _need(isinstance(variants, list) and all(isinstance(v, dict) for v in variants), where,
          "variants is not a list of objects")
    labels = []
    for v in variants:
        _need(_is_name(v.get("label")), where, "a variant label is not a folder-safe name")
        _need(isinstance(v.get("prompt"), str), where, f"variant {v['label']!r} has no prompt text")
        # manifests written before the rename call the tier "batch"
        _need(isinstance(v.get("method", ""), str) and _is_int(v.get("tier", v.get("batch", 0))), where,
              f"variant {v['label']!r} has a bad method or tier")
        labels.append(v["label"])
    _need(len(set(labels)) == len(labels), where, "variant labels repeat")
    seeds = data["seeds"]
    _need(isinstance(seeds, list) and all(_is_int(s) and s >= 0 for s in seeds), where,
          "seeds is not a list of whole numbers >= 0")
    _need(isinstance(data.get("tokens", []), list) and all(isinstance(t, dict) for t in data.get("tokens", [])),
          where, "tokens is not a list of objects")
    clips_in = data["clips"]
    _need(isinstance(clips_in, list) and all(isinstance(c, dict) for c in clips_in), where,
          "clips is not a list of objects")
    clip_fields = {f.name for f in fields(ClipRecord)}
    clips = []
    for c in clips_in:
        _need(set(c) <= clip_fields, where, "a clip has unknown fields")
        _need(c.get("variant") in labels, where, "a clip names a variant the run does not have")
        _need(_is_int(c.get("seed")) and c["seed"] >= 0, where, "a clip's seed is not a whole number >= 0")
        for key in ("audio", "latents"):
            rel = c.get(key)
            if key == "latents" and rel is None:
                continue
            _need(isinstance(rel, str) and bool(rel), where, f"a clip's {key} is not a file name")
            try:
                inside(run_dir, rel)  # a path leading out of the run is refused here, before anyone reads it
            except ValueError:
                raise BadInput(f"{where}: a clip's {key} points outside the run folder") from None
        _need(isinstance(c.get("sha256", ""), str) and _is_number(c.get("seconds", 0.0)), where,
              "a clip's sha256 or seconds has the wrong type")
        clips.append(ClipRecord(**c))
    return RunManifest(**{k: v for k, v in data.items() if k != "clips"}, clips=clips, path=run_dir)


def load_run(run_dir: str | Path) -> RunManifest:
    """Reads and checks ``run_dir/manifest.json``.

    Raises:
        BadInput: (a ValueError) the folder is not a run: no manifest, not strict JSON, a field
            missing or of the wrong type, or a clip path outside the folder. The message says which.
    """
    run_dir = Path(run_dir)
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise BadInput(f"{run_dir} is not a run folder (no manifest.json)")
    try:
        data = read_json(path)
    except OSError as exc:
        raise BadInput(f"{path} cannot be read ({exc.strerror or exc})") from None
    return _check_manifest(data, run_dir)


def _readable(run_dir: Path) -> RunManifest | None:
    """The run in ``run_dir``, or None (logged) when it is not one: a listing never fails on a folder."""
    try:
        if run_dir.is_symlink():  # a run is a real folder under runs/; a link could lead anywhere
            raise BadInput(f"{run_dir} is a symbolic link")
        return load_run(run_dir)
    except (ValueError, OSError) as exc:
        log.warning("skipping %s: %s", run_dir.name, exc)
    except Exception:  # a bug must not take the whole list down; it is logged with its traceback
        log.exception("skipping %s: unexpected error while reading it", run_dir.name)
    return None


def list_runs(runs_dir: Path, *, only: Iterable[str] | None = None, limit: int | None = None) -> list[RunManifest]:
    """Runs under ``runs_dir``, newest first (run ids sort by time); folders that are not runs are
    skipped and logged.

    Args:
        runs_dir: The runs folder.
        only: Read just these run ids (e.g. the runs of one browser session); others are not opened.
        limit: At most this many runs (the newest).
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    if only is not None:
        names = sorted({safe_name(str(r)) for r in only if _is_name(str(r))}, reverse=True)
        candidates = [runs_dir / n for n in names]
    else:
        candidates = sorted((d for d in runs_dir.iterdir() if d.is_dir()), reverse=True)
    out = []
    for d in candidates:
        if limit is not None and len(out) >= limit:
            break
        if d.is_dir() and (run := _readable(d)) is not None:
            out.append(run)
    return out
