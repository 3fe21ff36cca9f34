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
import math
import random
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recap.errors import BadInput
from recap.generation.grid import MAX_BATCH, MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_SECONDS, MAX_SEED, check_prompt
from recap.limits import LIMITS
from recap.paths import atomic_write_bytes, safe_name
from recap.rewording.base import RecaptionConfig
from recap.variants import DISTANCES

PAIR_METRICS = ("text_cosine", "cosine", "l2", "l2_raw", "mse")
METRICS = PAIR_METRICS + ("reconstruction",)
COMPLEXITIES = ("low", "medium", "high")
PROMPT_COLUMNS = ("id", "prompt", "category", "complexity")
DEFAULT_TEMPLATE = "{prompt}, in the style of {token}"
# Fields that do not change what a unit holds (titles, summaries, memory use): a resumed run may
# change them. Every other field must match the experiment folder's config.
MAY_CHANGE_ON_RESUME = ("name", "confidence", "n_boot", "base_dir", "max_batch")
# Bounds of one experiment: generous for a thesis-sized study, finite for a config from anywhere.
MAX_PROMPTS = 5000
MAX_UNITS = 200_000  # prompts × variants × seeds: clips generated, scored and written
MAX_TOKEN_FILES = 16
MAX_TEMPLATES = 16
MAX_N_BOOT = 100_000


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

    @property
    def max_variants(self) -> int:
        """Most variants one prompt can have: the baseline and ``n`` rewordings per distance, each
        also in every (token, template) form."""
        forms = 1 + len(self.tokens.files) * len(self.tokens.templates)
        n = self.recaption.n if isinstance(self.recaption.n, int) else 0
        return (1 + n * len(self.distances)) * forms

    def check_size(self, n_prompts: int) -> None:
        """Refuses an experiment over :data:`MAX_PROMPTS` prompts or :data:`MAX_UNITS` units."""
        if n_prompts > MAX_PROMPTS:
            raise BadInput(f"the selection holds {n_prompts:,} prompts; an experiment takes at most {MAX_PROMPTS:,} "
                           "(use [prompts] n, categories or ids)")
        units = n_prompts * self.max_variants * self.seeds_per_prompt
        if units > MAX_UNITS:
            raise BadInput(f"{n_prompts:,} prompts × up to {self.max_variants} variants × {self.seeds_per_prompt} seeds "
                           f"= {units:,} units; an experiment makes at most {MAX_UNITS:,}")

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
        """Raises :class:`BadInput` (a ValueError) naming the first bad value."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise BadInput(message)

        def is_int(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        def is_num(x: Any) -> bool:  # TOML reads nan and inf: they are not numbers here
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        def strings(name: str, x: Any) -> None:
            need(isinstance(x, list) and all(isinstance(v, str) for v in x),
                 f"{name} must be a list of strings (e.g. [\"a\", \"b\"]); got {x!r}")

        sel = self.prompts
        for name, value in (("[prompts] file", [sel.file]), ("[prompts] categories", sel.categories),
                            ("[prompts] complexities", sel.complexities), ("[prompts] ids", sel.ids),
                            ("[recaption] distances", self.distances), ("[tokens] files", self.tokens.files),
                            ("[tokens] templates", self.tokens.templates), ("metrics", self.metrics)):
            strings(name, value)
        need(isinstance(self.name, str) and bool(self.name.strip()) and len(self.name) <= 200,
             f"name must be a non-empty string of at most 200 characters; got {str(self.name)[:40]!r}")
        need(self.model is None or (isinstance(self.model, str) and 0 < len(self.model) <= 200),
             f"model must be a name; got {str(self.model)[:40]!r}")
        need(is_int(self.seeds_per_prompt) and 1 <= self.seeds_per_prompt <= LIMITS.seeds,
             f"seeds_per_prompt must be an integer 1..{LIMITS.seeds}; got {self.seeds_per_prompt!r}")
        need(is_int(self.first_seed) and 0 <= self.first_seed <= MAX_SEED - self.seeds_per_prompt + 1,
             f"first_seed must be an integer from 0 to {MAX_SEED - self.seeds_per_prompt + 1}; got {self.first_seed!r}")
        need(self.seconds is None or (is_num(self.seconds) and 0 < self.seconds <= MAX_SECONDS),
             f"seconds must be in (0, {MAX_SECONDS:g}]; got {self.seconds!r}")
        need(self.steps is None or (is_int(self.steps) and 1 <= self.steps <= LIMITS.steps),
             f"steps must be an integer 1..{LIMITS.steps}; got {self.steps!r}")
        need(self.guidance is None or (is_num(self.guidance) and 0 <= self.guidance <= MAX_GUIDANCE),
             f"guidance must be a number from 0 to {MAX_GUIDANCE:g}; got {self.guidance!r}")
        need(self.max_batch is None or (is_int(self.max_batch) and 1 <= self.max_batch <= MAX_BATCH),
             f"max_batch must be an integer 1..{MAX_BATCH}; got {self.max_batch!r}")
        check_prompt("negative_prompt", self.negative_prompt, allow_empty=True)
        need(len(self.tokens.files) <= MAX_TOKEN_FILES and len(self.tokens.templates) <= MAX_TEMPLATES,
             f"[tokens] takes at most {MAX_TOKEN_FILES} files and {MAX_TEMPLATES} templates")
        need(len(sel.ids) <= MAX_PROMPTS and len(sel.categories) <= MAX_PROMPTS,
             f"[prompts] ids and categories take at most {MAX_PROMPTS:,} entries")
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
        need(is_int(self.n_boot) and 1 <= self.n_boot <= MAX_N_BOOT,
             f"n_boot must be an integer 1..{MAX_N_BOOT:,}; got {self.n_boot!r}")
        need(sel.n is None or (is_int(sel.n) and 1 <= sel.n <= MAX_PROMPTS),
             f"[prompts] n must be an integer 1..{MAX_PROMPTS:,}; got {sel.n!r}")
        need(all(c in COMPLEXITIES for c in sel.complexities),
             f"[prompts] complexities must be among {COMPLEXITIES}; got {sel.complexities!r}")
        need(is_int(sel.sample_seed), f"[prompts] sample_seed must be an integer; got {sel.sample_seed!r}")
        need(isinstance(self.save_audio, bool) and isinstance(self.fast_preview, bool),
             f"save_audio and fast_preview must be true or false; got {self.save_audio!r}, {self.fast_preview!r}")
        need(self.max_variants <= LIMITS.variants,
             f"one prompt could have {self.max_variants} variants (the baseline and [recaption] n = {self.recaption.n} "
             f"per distance, in {1 + len(self.tokens.files) * len(self.tokens.templates)} token forms); "
             f"the limit is {LIMITS.variants}")
        if sel.n is not None:
            self.check_size(sel.n)


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
