"""The layout of an experiment folder: what each file is called and how a finished one is read.

The runner writes these files and the report reads them; both import this module, never each
other's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recap.generation.runs import read_json
from recap.paths import atomic_write_bytes, safe_name
from recap.variants import Variant, tier_of

FORMAT = "recap.experiment.runner/1"
UNIT_FORMAT = "recap.experiment.runner-unit/1"
RECAPTION_FORMAT = "recap.experiment.runner-recaptions/1"


def plan_variants(baseline: str, rewordings: Sequence[dict[str, Any]], placeholders: Sequence[str],
                  templates: Sequence[str]) -> list[Variant]:
    """Baseline, its rewordings, then each (token, template) applied to all of those.

    Args:
        rewordings: ``{"label", "prompt", "method", "tier"}`` per rewording (the recaption cache).
        placeholders: Learned-token placeholders, in config order.

    Returns:
        Variants; a token variant is labelled ``tok<i>t<j>-<source label>`` and keeps the tier of
        its source prompt, with method "token" (the thesis's TI batches 0, 1, 2).
    """
    base = [Variant("baseline", baseline, "baseline", 0)] + [
        Variant(r["label"], r["prompt"], r["method"], tier_of(r)) for r in rewordings]
    out = list(base)
    for i, placeholder in enumerate(placeholders, 1):
        for j, template in enumerate(templates, 1):
            for v in base:
                text = template.format(prompt=v.prompt.rstrip().rstrip("."), token=placeholder)
                out.append(Variant(f"tok{i}t{j}-{v.label}", text, "token", v.tier))
    return out


def unit_stem(label: str, seed: int) -> str:
    return f"{label}__seed{seed}"


def unit_dir(out_dir: Path, prompt_id: str) -> Path:
    return Path(out_dir) / "units" / safe_name(prompt_id, max_len=120)


def read_unit(out_dir: Path, prompt_id: str, label: str, seed: int) -> dict[str, Any] | None:
    """The unit's record, or None when it is not finished (missing, partial or foreign file)."""
    path = unit_dir(out_dir, prompt_id) / f"{unit_stem(label, seed)}.json"
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == UNIT_FORMAT else None


def recaption_path(out_dir: Path, prompt_id: str) -> Path:
    return Path(out_dir) / "recaptions" / f"{safe_name(prompt_id, max_len=120)}.json"


def read_config_json(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / "config.json"
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an experiment config")
    return data


def write_if_changed(path: Path, data: bytes) -> None:
    """Writes ``data`` atomically unless the file already holds it: a report on a finished
    experiment touches nothing."""
    if not (path.is_file() and path.read_bytes() == data):
        atomic_write_bytes(path, data)
