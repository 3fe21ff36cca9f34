"""The experiment config (TOML) and the prompt file it selects from.

An experiment is described by one TOML file (``assets/experiment.example.toml`` shows every
key) and read into :class:`ExperimentConfig`; relative paths in it are taken from the file's
folder. Prompt files are CSV with the columns ``id, prompt, category, complexity``, the shape
of the thesis's prompt set (section 4.2).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import random
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recap.generation import MAX_PROMPT_CHARS
from recap.paths import atomic_write_bytes, safe_name
from recap.recaption import DISTANCES, RecaptionConfig

PAIR_METRICS = ("text_cosine", "cosine", "l2", "l2_raw", "mse")
METRICS = PAIR_METRICS + ("reconstruction",)
COMPLEXITIES = ("low", "medium", "high")
PROMPT_COLUMNS = ("id", "prompt", "category", "complexity")
DEFAULT_TEMPLATE = "{prompt}, in the style of {token}"
# Fields that do not change what a unit holds (titles, summaries, memory use): a resumed run may
# change them. Every other field must match the experiment folder's config.
MAY_CHANGE_ON_RESUME = ("name", "confidence", "n_boot", "base_dir", "max_batch")


@dataclass
class PromptSelection:
    """Which prompts of a prompt file an experiment uses.

    Attributes:
        file: CSV with columns id, prompt, category, complexity (relative to the config file).
        categories: Keep only these categories (empty = all).
        complexities: Keep only these complexities: low / medium / high (empty = all).
        ids: Keep only these prompt ids (empty = all).
        n: Then sample this many at random (None = all that passed the filters).
        sample_seed: Seed of that sample; the same seed always picks the same prompts.
    """

    file: str = "prompts.csv"
    categories: list[str] = field(default_factory=list)
    complexities: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    n: int | None = None
    sample_seed: int = 0


@dataclass
class TokenPlan:
    """Learned tokens to test, written into the baseline and every rewording by templates.

    Attributes:
        files: Token files (``.safetensors``), relative to the config file.
        templates: Prompt templates with ``{prompt}`` and ``{token}``; one variant per
            (token, template, baseline or rewording), as the thesis's TI batches.
    """

    files: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE])


@dataclass
class ExperimentConfig:
    """One experiment; saved as ``config.json`` next to its results.

    Attributes:
        name: A title for the tables.
        model: Backend name; None uses ``RECAP_MODEL`` (else Stable Audio Open).
        prompts: Which prompts.
        seeds_per_prompt: Clips per prompt and variant; seeds ``first_seed ...``, same for every prompt.
        first_seed: The first seed.
        seconds: Clip length in seconds (None = the model's default).
        steps: Denoising steps (None = the model's default).
        guidance: Classifier-free guidance scale (None = the model's default).
        negative_prompt: Text to steer away from (None = the model's default).
        max_batch: Most clips per denoising call (None = automatic, halving on out-of-memory).
        fast_preview: Denoise only the requested length (Stable Audio; faster, fidelity not guaranteed).
        distances: Rewording batches: "light" (batch 1), "strong" (batch 2), "custom" (batch 3).
        recaption: How to reword (n per batch, method, LLM settings); its ``distance`` is set per batch.
        tokens: Learned tokens to test with prompt templates.
        metrics: Scores to compute: text_cosine, cosine, l2, l2_raw, mse, reconstruction.
        save_audio: Keep each clip as WAV (scores never need it: they use the float audio in memory).
        wav_subtype: "PCM_16" (half the disk of "FLOAT"; hundreds of prompts add up) or "FLOAT".
        confidence: Coverage of the bootstrap interval of each mean.
        n_boot: Bootstrap resamples.
        base_dir: Folder relative paths are resolved against (the config file's).
    """

    name: str = "experiment"
    model: str | None = None
    prompts: PromptSelection = field(default_factory=PromptSelection)
    seeds_per_prompt: int = 2
    first_seed: int = 0
    seconds: float | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    max_batch: int | None = None
    fast_preview: bool = False
    distances: list[str] = field(default_factory=lambda: ["light", "strong"])
    recaption: RecaptionConfig = field(default_factory=lambda: RecaptionConfig(n=2))
    tokens: TokenPlan = field(default_factory=TokenPlan)
    metrics: list[str] = field(default_factory=lambda: list(PAIR_METRICS))
    save_audio: bool = True
    wav_subtype: str = "PCM_16"
    confidence: float = 0.95
    n_boot: int = 2000
    base_dir: str = "."

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds_per_prompt))

    def path(self, relative: str) -> Path:
        """A path of the config resolved against ``base_dir``."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @classmethod
    def from_toml(cls, path: str | Path) -> ExperimentConfig:
        """Reads a TOML experiment file; relative paths in it are taken from its folder."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no experiment config at {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc})") from exc
        return cls.from_dict(data, base_dir=str(path.resolve().parent))

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | None = None) -> ExperimentConfig:
        """Builds and validates a config from TOML-shaped data; unknown keys are errors (typos must not pass)."""
        data = dict(data)
        prompts = _build(PromptSelection, data.pop("prompts", {}), "[prompts]")
        tokens = _build(TokenPlan, data.pop("tokens", {}), "[tokens]")
        rc = dict(data.pop("recaption", {}))
        distances = rc.pop("distances", ["light", "strong"])
        if "distance" in rc:
            raise ValueError("[recaption] takes `distances` (a list: light = batch 1, strong = batch 2), not `distance`")
        rc.setdefault("n", 2)
        recaption = _build(RecaptionConfig, rc, "[recaption]")
        if base_dir is not None:
            data["base_dir"] = base_dir
        top = _build(cls, data, "the experiment config", skip=("prompts", "tokens", "recaption", "distances"))
        config = dataclasses.replace(top, prompts=prompts, tokens=tokens, recaption=recaption, distances=distances)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """TOML-shaped data (``from_dict(to_dict())`` gives the same config)."""
        d = asdict(self)
        rc = d.pop("recaption")
        rc.pop("distance")
        d["recaption"] = {"distances": d.pop("distances"), **rc}
        return d

    def validate(self) -> None:
        """Raises ValueError naming the first bad value."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        def is_int(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        def is_num(x: Any) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool)

        def strings(name: str, x: Any) -> None:
            need(isinstance(x, list) and all(isinstance(v, str) for v in x),
                 f"{name} must be a list of strings (e.g. [\"a\", \"b\"]); got {x!r}")

        sel = self.prompts
        for name, value in (("[prompts] file", [sel.file]), ("[prompts] categories", sel.categories),
                            ("[prompts] complexities", sel.complexities), ("[prompts] ids", sel.ids),
                            ("[recaption] distances", self.distances), ("[tokens] files", self.tokens.files),
                            ("[tokens] templates", self.tokens.templates), ("metrics", self.metrics)):
            strings(name, value)
        need(isinstance(self.name, str) and bool(self.name.strip()), f"name must be a non-empty string; got {self.name!r}")
        need(self.model is None or (isinstance(self.model, str) and bool(self.model)), f"model must be a name; got {self.model!r}")
        need(is_int(self.seeds_per_prompt) and 1 <= self.seeds_per_prompt <= 1000,
             f"seeds_per_prompt must be an integer 1..1000; got {self.seeds_per_prompt!r}")
        need(is_int(self.first_seed) and self.first_seed >= 0, f"first_seed must be an integer >= 0; got {self.first_seed!r}")
        need(self.seconds is None or (is_num(self.seconds) and self.seconds > 0), f"seconds must be > 0; got {self.seconds!r}")
        need(self.steps is None or (is_int(self.steps) and self.steps >= 1), f"steps must be an integer >= 1; got {self.steps!r}")
        need(self.guidance is None or is_num(self.guidance), f"guidance must be a number; got {self.guidance!r}")
        need(self.max_batch is None or (is_int(self.max_batch) and self.max_batch >= 1),
             f"max_batch must be an integer >= 1; got {self.max_batch!r}")
        need(all(d in DISTANCES for d in self.distances) and len(set(self.distances)) == len(self.distances),
             f"distances must be distinct values of {DISTANCES}; got {self.distances!r}")
        for d in self.distances:
            dataclasses.replace(self.recaption, distance=d).validate()
        need(bool(self.distances) or bool(self.tokens.files),
             "nothing to compare with the baseline: give rewording distances or token files")
        for t in self.tokens.templates:
            try:
                ok = "{prompt}" in t and "{token}" in t and bool(t.format(prompt="p", token="t"))
            except (KeyError, IndexError, ValueError):
                ok = False
            need(ok, f"token template {t!r} must contain {{prompt}} and {{token}} and no other {{fields}}")
        need(bool(self.metrics) and all(m in METRICS for m in self.metrics),
             f"metrics must be a non-empty list of {METRICS}; got {self.metrics!r}")
        need(self.wav_subtype in ("PCM_16", "FLOAT"), f"wav_subtype must be PCM_16 or FLOAT; got {self.wav_subtype!r}")
        need(is_num(self.confidence) and 0 < self.confidence < 1, f"confidence must be in (0, 1); got {self.confidence!r}")
        need(is_int(self.n_boot) and self.n_boot >= 1, f"n_boot must be an integer >= 1; got {self.n_boot!r}")
        need(sel.n is None or (is_int(sel.n) and sel.n >= 1), f"[prompts] n must be an integer >= 1; got {sel.n!r}")
        need(all(c in COMPLEXITIES for c in sel.complexities),
             f"[prompts] complexities must be among {COMPLEXITIES}; got {sel.complexities!r}")
        need(is_int(sel.sample_seed), f"[prompts] sample_seed must be an integer; got {sel.sample_seed!r}")
        need(isinstance(self.save_audio, bool) and isinstance(self.fast_preview, bool),
             f"save_audio and fast_preview must be true or false; got {self.save_audio!r}, {self.fast_preview!r}")


def _build(cls: type, table: Any, where: str, skip: Sequence[str] = ()) -> Any:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table; got {table!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names - set(skip))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return cls(**{k: v for k, v in table.items() if k not in skip})


# ---------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptRow:
    """One prompt of a prompt file."""

    id: str
    prompt: str
    category: str
    complexity: str


def load_prompts(path: str | Path) -> list[PromptRow]:
    """Reads a prompt CSV (columns id, prompt, category, complexity; more columns are ignored).

    Raises:
        ValueError: missing columns, empty or repeated ids, ids that are not file-name safe,
            empty or over-long prompts, unknown complexities.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in PROMPT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; need {', '.join(PROMPT_COLUMNS)}")
        rows = [PromptRow(*((r[c] or "").strip() for c in PROMPT_COLUMNS)) for r in reader]
    seen: set[str] = set()
    for line, r in enumerate(rows, 2):
        # Ids name folders: refuse, rather than rewrite, anything that is not already a safe name.
        if not r.id or safe_name(r.id) != r.id:
            raise ValueError(f"{path} line {line}: id {r.id!r} must be a non-empty file-name-safe name (letters, digits, . _ -)")
        if r.id in seen:
            raise ValueError(f"{path} line {line}: id {r.id!r} is used twice")
        seen.add(r.id)
        if not r.prompt or len(r.prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"{path} line {line}: prompt {r.id!r} is empty or over {MAX_PROMPT_CHARS} characters")
        if r.complexity not in COMPLEXITIES:
            raise ValueError(f"{path} line {line}: complexity {r.complexity!r} is not one of {COMPLEXITIES}")
        if not r.category:
            raise ValueError(f"{path} line {line}: prompt {r.id!r} has no category")
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def select_prompts(rows: Sequence[PromptRow], selection: PromptSelection) -> list[PromptRow]:
    """Applies the filters, then the seeded sample; keeps the file's order.

    Raises:
        ValueError: a filter names a category or id the file does not have, or nothing is left.
    """
    for name, wanted, have in (("category", selection.categories, {r.category for r in rows}),
                               ("id", selection.ids, {r.id for r in rows})):
        unknown = [w for w in wanted if w not in have]
        if unknown:
            raise ValueError(f"no prompt has {name} {', '.join(map(repr, unknown))}")
    out = [r for r in rows if (not selection.categories or r.category in selection.categories)
           and (not selection.complexities or r.complexity in selection.complexities)
           and (not selection.ids or r.id in selection.ids)]
    if not out:
        raise ValueError("the prompt filters leave no prompt")
    if selection.n is not None and selection.n < len(out):
        keep = set(random.Random(selection.sample_seed).sample(range(len(out)), selection.n))
        out = [r for i, r in enumerate(out) if i in keep]
    return out


def write_prompts(path: Path, rows: Sequence[PromptRow]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PROMPT_COLUMNS)
    w.writerows([r.id, r.prompt, r.category, r.complexity] for r in rows)
    atomic_write_bytes(path, buf.getvalue().encode())
