"""What a listening study asks: its config, its items made from run folders, the raters' orders.

Items are built from run folders (pairs of clips with the same seed for A/B, single clips for
ratings). The listening copies are loudness-matched, written under opaque names into the study
folder (never served: each rater is handed a fresh copy of a copy, :func:`rater_copy`); the runs'
own audio is only read. Every field of a config is bounded (:mod:`recap.limits`) in
:meth:`StudyConfig.validate`, which the web app, its API and the CLI all pass through. Storage
lives in :mod:`recap.study.store`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recap.errors import BadInput
from recap.limits import LIMITS, finite, text, whole

log = logging.getLogger(__name__)

AB_ANSWERS = ("A", "B", "None", "Cannot decide")
ABX_ANSWERS = ("X is A", "X is B")
KINDS = ("ab", "rating", "mushra", "abx")
CHECK_CONDITION = "attention check"
# A side of a pair: "label" or "run_id/label" (labels and run ids are file-name safe, no ":" or "/").
SIDE_RE = re.compile(r"^(?:([A-Za-z0-9._-]+)/)?([A-Za-z0-9._-]+)$")
# pyloudnorm gates in 400 ms blocks; shorter clips are looped to be measured.
_MIN_LOUDNESS_SECONDS = 0.5
# Listening copies never peak above this after the loudness gain.
_MAX_PEAK = 0.99
# Bounds of a config's texts and lists, beside the shared ones in recap.limits.
MAX_TITLE_CHARS = 200
MAX_QUESTIONS = 20
MAX_QUESTION_CHARS = 500
MAX_SPEC_CHARS = 200  # one pair "X:Y" or one rated variant
# The reference clip is played beside every item; a minute is far more than any use needs.
MAX_REFERENCE_SECONDS = 60.0
MAX_REFERENCE_BYTES = LIMITS.upload_mb * 2**20
# MUSHRA conditions besides the hidden reference and the anchors (BS.1534 asks for at most 12 in all).
MAX_MUSHRA_CONDITIONS = 9
MAX_COMPLETION_CODE_CHARS = 64
MAX_URL_CHARS = 2000
_COMPLETION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class StudyError(BadInput):
    """A study request that cannot be served, with a message meant for the user."""


class IncompleteAnswer(StudyError):
    """An answer the rater has not finished (a clip not played to the end, a score or choice not
    given): the page says so beside the answer and keeps what the rater set."""


@dataclass(frozen=True)
class Scale:
    """A 1-5 rating scale; ``anchors[i]`` names the value ``i + 1``."""

    key: str
    question: str
    anchors: tuple[str, str, str, str, str]


SCALES: dict[str, Scale] = {
    # OVL / REL as in DreamAudio (IV-C.5), which takes them from AudioLDM's subjective tests.
    "OVL": Scale("OVL", "How would you rate the overall quality of this audio sample?",
                 ("Bad", "Poor", "Fair", "Good", "Excellent")),
    "REL": Scale("REL", "How well does this audio match the prompt (or the reference clip)?",
                 ("Not at all", "Slightly", "Somewhat", "Mostly", "Completely")),
}


@dataclass
class StudyConfig:
    """What a study asks and of which clips; saved in the study's answer key
    (``study_keys/<code>.json``, outside every served folder) and in ``study.sqlite``.

    Attributes:
        kind: "ab" (preference between two clips), "rating" (1-5 scales on one clip), "mushra"
            (0-100 per condition beside a labelled reference, a hidden reference and low-pass
            anchors; :mod:`recap.study.mushra`) or "abx" (is X clip A or clip B; :mod:`recap.study.abx`).
        name: Title shown to raters.
        questions: A/B question texts; every pair is asked every question.
        pairs: A/B and ABX pairs "X:Y". A side is a variant label (the pair is then made inside every run
            that has both labels) or "run_id/label" (to pair clips across runs). Clips pair by seed.
        items: Rating items, same side syntax; empty means every variant of every run.
        scales: Rating scales, keys of :data:`SCALES`.
        reference: Audio file played with every item (e.g. a learned token's training clip).
        prompt: Text shown to raters; None shows the run's baseline prompt (the intent every
            variant rewords, and free of learned-token names that would give TI away).
        hide_prompt: Show no prompt at all.
        repeats: Items shown a second time to each rater (consistency checks).
        checks: Obvious-answer items: a clip against loudness-matched noise (A/B), or noise that
            should be rated low (ratings). Only meaningful with a real model's audio.
        max_failed_checks: Raters failing more attention checks are left out of the summaries.
        target_lufs: Integrated loudness (EBU R128, LUFS) of the listening copies.
        seed: Picks the clips used in checks; drawn at creation when None.
        conditions: MUSHRA: the variant labels rated beside the reference.
        reference_variant: MUSHRA: the variant label that is the reference (and hidden reference).
        must_play: Refuse an answer until every clip of the trial was played to the end (checked
            by the store from the play events it logged, not by the page).
        completion_code: Shown to a rater who finished (Prolific / MTurk completion codes).
        redirect_url: An http(s) address the finished rater is sent on to.

    MUSHRA and ABX studies make no obvious-answer checks (``checks`` is not used): MUSHRA's
    hidden reference and anchors check the raters, and ABX answers are right or wrong.
    """

    kind: str
    name: str = ""
    questions: list[str] = field(default_factory=lambda: ["Which better matches the prompt?"])
    pairs: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    scales: list[str] = field(default_factory=lambda: ["OVL", "REL"])
    reference: str | None = None
    prompt: str | None = None
    hide_prompt: bool = False
    repeats: int = 1
    checks: int = 1
    max_failed_checks: int = 0
    target_lufs: float = -23.0
    seed: int | None = None
    conditions: list[str] = field(default_factory=list)
    reference_variant: str | None = None
    must_play: bool = False
    completion_code: str | None = None
    redirect_url: str | None = None

    def validate(self) -> None:
        """Checks every field against its bound and normalises numbers sent as whole floats.

        Raises:
            StudyError: naming the first bad field (nothing has been written yet).
        """
        try:
            self._check()
        except StudyError:
            raise
        except BadInput as exc:  # the shared checks' and the audio reader's sentences, as study errors
            raise StudyError(str(exc)) from None

    def _check(self) -> None:
        if self.kind not in KINDS:
            raise StudyError(f"study type must be 'ab' or 'rating' (or 'mushra', 'abx'), got {_short(self.kind)}")
        self.name = text("the title", self.name, MAX_TITLE_CHARS, allow_newlines=False).strip()
        self.questions = _texts("an A/B question", "A/B questions", self.questions, MAX_QUESTIONS,
                                MAX_QUESTION_CHARS)
        # A pair or a rated spec makes at least one item, so the item bound also bounds these lists.
        self.pairs = _texts("a pair", "pairs", self.pairs, LIMITS.study_items, MAX_SPEC_CHARS)
        self.items = _texts("a rated variant", "rated variants", self.items, LIMITS.study_items, MAX_SPEC_CHARS)
        self.scales = _texts("a rating scale", "rating scales", self.scales, len(SCALES), 16)
        self.conditions = _texts("a MUSHRA condition", "MUSHRA conditions", self.conditions,
                                 MAX_MUSHRA_CONDITIONS, MAX_SPEC_CHARS)
        if self.kind == "mushra":
            self._check_mushra()
        elif self.conditions or self.reference_variant is not None:
            raise StudyError("conditions and a reference variant belong to MUSHRA studies only")
        if self.kind == "abx" and not self.pairs:
            raise StudyError("an ABX study needs at least one pair such as 'baseline:reword-1a'")
        for flag in ("must_play", "hide_prompt"):
            if not isinstance(getattr(self, flag), bool):
                raise StudyError(f"{flag} must be true or false, got {_short(getattr(self, flag))}")
        self._check_finish()
        if self.kind == "ab":
            if not self.pairs:
                raise StudyError("an A/B study needs at least one pair such as 'baseline:reword-1a'")
            if not self.questions or not all(q.strip() for q in self.questions):
                raise StudyError("an A/B study needs non-empty question texts")
        bad = [s for s in self.scales if s not in SCALES]
        if self.kind == "rating" and (bad or not self.scales or len(set(self.scales)) != len(self.scales)):
            raise StudyError(f"unknown, repeated or missing rating scales {bad or self.scales!r}; "
                             f"known: {list(SCALES)}")
        if self.prompt is not None:
            self.prompt = text("the prompt shown", self.prompt, LIMITS.text_chars)
        self.repeats = whole("repeated items", self.repeats, 0, LIMITS.study_repeats)
        self.checks = whole("obvious-answer checks", self.checks, 0, LIMITS.study_checks)
        self.max_failed_checks = whole("failed checks allowed", self.max_failed_checks, 0,
                                       LIMITS.study_checks + LIMITS.study_repeats)
        self.target_lufs = finite("target loudness (LUFS)", self.target_lufs, -70.0, -5.0)
        if self.seed is not None:
            self.seed = whole("seed", self.seed, 0, 2**32 - 1)
        if self.reference is not None:
            self.reference = str(Path(text("reference clip", self.reference, 4096, allow_newlines=False)))
            check_reference(Path(self.reference))


    def _check_mushra(self) -> None:
        if self.reference is not None:
            raise StudyError("a MUSHRA study's reference is one of the run's variants (reference_variant), "
                             "not an uploaded clip")
        ref = text("the reference variant", self.reference_variant or "", MAX_SPEC_CHARS,
                   allow_newlines=False).strip()
        if not ref:
            raise StudyError("a MUSHRA study needs a reference variant such as 'baseline'")
        conditions = [c.strip() for c in self.conditions if c.strip()]
        if not conditions:
            raise StudyError("a MUSHRA study needs at least one condition besides the reference")
        bad = [c for c in [ref, *conditions] if not SIDE_RE.match(c) or "/" in c]
        if bad:
            raise StudyError(f"MUSHRA conditions and reference are variant labels; {bad[0]!r} is not one")
        if ref in conditions or len(set(conditions)) != len(conditions):
            raise StudyError("each MUSHRA condition must appear once and differ from the reference "
                             "(the reference is rated as the hidden reference anyway)")
        self.reference_variant, self.conditions = ref, conditions

    def _check_finish(self) -> None:
        if self.completion_code is not None:
            code = text("the completion code", self.completion_code, MAX_COMPLETION_CODE_CHARS,
                        allow_newlines=False).strip()
            if code and not _COMPLETION_RE.match(code):
                raise StudyError("a completion code is 1-64 letters, digits, '_' or '-'")
            self.completion_code = code or None
        if self.redirect_url is not None:
            self.redirect_url = check_url(self.redirect_url)


def check_url(value: Any) -> str | None:
    """An experimenter's redirect address: an absolute http(s) URL with a host, or None if empty.

    Raises:
        StudyError: anything else (javascript:, data:, a relative path, spaces, credentials).
    """
    from urllib.parse import urlsplit

    url = text("the redirect URL", value, MAX_URL_CHARS, allow_newlines=False).strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise StudyError(f"the redirect URL {_short(url)} is not a URL") from None
    if (parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url)
            or "@" in parts.netloc or any(ord(c) < 33 or ord(c) > 126 or c in "<>\"'`\\" for c in url)):
        raise StudyError(f"the redirect URL must be an http:// or https:// address with a host, got {_short(url)}")
    return url


def check_reference(path: Path) -> None:
    """Refuses a reference clip that is missing, too big, too long or not readable audio."""
    from recap.audio_io import load_audio  # librosa: only creating a study needs it

    if not path.is_file():
        raise StudyError(f"reference clip {path.name!r} is not a file")
    if path.stat().st_size > MAX_REFERENCE_BYTES:
        raise StudyError(f"reference clip {path.name!r} is {path.stat().st_size / 2**20:.0f} MB; "
                         f"the limit is {MAX_REFERENCE_BYTES // 2**20} MB")
    load_audio(path, max_seconds=MAX_REFERENCE_SECONDS)  # the length is read from the header first


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _texts(one: str, many: str, values: Any, max_count: int, max_chars: int) -> list[str]:
    """``values`` as a list of at most ``max_count`` one-line texts of at most ``max_chars``
    (``one`` and ``many`` name an element and the list in the sentences)."""
    if not isinstance(values, (list, tuple)):
        raise StudyError(f"the {many} must be a list of texts, got {type(values).__name__}")
    if len(values) > max_count:
        raise StudyError(f"{len(values):,} {many} are too many; at most {max_count:,} are accepted")
    out = []
    for value in values:
        if not isinstance(value, str):
            raise StudyError(f"{one} must be text, got {type(value).__name__}")
        out.append(text(one, value, max_chars, allow_newlines=False))
    return out


@dataclass(frozen=True)
class StudyItem:
    """One thing a rater judges. Sides here are the real ones; raters may see them swapped.

    ``condition`` groups items in results ("baseline:reword-1a" for A/B, "reword-1a" for ratings);
    ``name_a``/``name_b`` are the sides' names in the condition; ``label_*`` the exact clips
    ("run/label@seedK"); ``clip_*`` the listening copies, relative to the study folder.
    """

    item_id: int
    role: str  # "test" | "check"
    question: str
    condition: str
    name_a: str
    label_a: str
    clip_a: str
    prompt: str
    name_b: str | None = None
    label_b: str | None = None
    clip_b: str | None = None
    expected: str | None = None  # check items: "a" (A/B: side a must win) or "low" (every scale <= 2)


@dataclass(frozen=True)
class Trial:
    """Position ``slot`` of a rater's sequence: which item, which showing (0/1), sides swapped."""

    slot: int
    item_id: int
    repeat: int
    swapped: bool


def plan_trials(items: Sequence[StudyItem], seed: int, repeats: int) -> list[Trial]:
    """A rater's sequence: items shuffled, ``repeats`` test items shown again later, sides drawn.

    Uses ``random.Random`` (its shuffle is stable across Python versions). The shown order and
    sides are also stored with every answer, so no analysis depends on re-running this.
    """
    rng = random.Random(seed)
    order = [(item.item_id, 0) for item in items]
    rng.shuffle(order)
    tests = sorted(i.item_id for i in items if i.role == "test")
    for item_id in rng.sample(tests, min(repeats, len(tests))):
        first = order.index((item_id, 0))
        # At least one other item in between when possible, so the repeat is not noticed at once.
        order.insert(rng.randint(min(first + 2, len(order)), len(order)), (item_id, 1))
    two_sided = {i.item_id for i in items if i.clip_b is not None}
    return [Trial(slot, item_id, rep, item_id in two_sided and rng.random() < 0.5)
            for slot, (item_id, rep) in enumerate(order)]


def loudness_match(audio: np.ndarray, sample_rate: int, target_lufs: float) -> tuple[np.ndarray, float]:
    """Scales ``audio`` [C, T] to ``target_lufs`` integrated loudness (ITU-R BS.1770, pyloudnorm).

    Returns:
        The scaled float32 audio, and the measured input loudness in LUFS (-inf for silence,
        which is returned unchanged). If the gain would clip, the peak is held at 0.99 instead
        (that copy is then quieter than the target; logged).
    """
    import pyloudnorm  # here, not at the top: scipy.signal is slow to import and only creation needs it

    probe = audio
    min_len = int(_MIN_LOUDNESS_SECONDS * sample_rate)
    if probe.shape[1] < min_len:
        probe = np.tile(probe, (1, -(-min_len // max(1, probe.shape[1]))))
    lufs = float(pyloudnorm.Meter(sample_rate).integrated_loudness(probe.T.astype(np.float64)))
    if not math.isfinite(lufs):
        return audio.astype(np.float32), lufs
    gain = 10.0 ** ((target_lufs - lufs) / 20.0)
    peak = float(np.abs(audio).max()) * gain
    if peak > _MAX_PEAK:
        log.warning("matching %.1f LUFS would clip (peak %.2f); holding the peak at %.2f",
                    target_lufs, peak, _MAX_PEAK)
        gain *= _MAX_PEAK / peak
    return (audio * gain).astype(np.float32), lufs


@dataclass(frozen=True)
class RunClips:
    """The parts of a run folder a study uses."""

    run_id: str
    prompts: dict[str, str]  # variant label -> prompt
    baseline_prompt: str | None
    clips: dict[tuple[str, int], Path]  # (variant label, seed) -> wav


def read_run(folder: Path) -> RunClips:
    """Reads what a study needs from a run folder's manifest."""
    # Imported here: recap.generation.runs brings torch, which raters' and reports' code paths never need.
    from recap.generation.runs import load_run

    try:
        run = load_run(folder)
        prompts = {v["label"]: v["prompt"] for v in run.variants}
        baseline = next((v["prompt"] for v in run.variants
                         if v.get("method") == "baseline" or v["label"] == "baseline"), None)
        clips = {(c.variant, int(c.seed)): run.audio_path(c) for c in run.clips}
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise StudyError(f"{folder}: not a readable run ({type(exc).__name__}: {exc})") from exc
    return RunClips(run.run_id, prompts, baseline, clips)


def _resolve(spec: str, runs: Sequence[RunClips]) -> list[tuple[RunClips, str]]:
    """Every (run, label) a side spec names."""
    match = SIDE_RE.match(spec.strip())
    if not match:
        raise StudyError(f"{spec!r} is not a variant label or 'run_id/label'")
    run_id, label = match.groups()
    found = [(r, label) for r in runs if label in r.prompts and (run_id is None or r.run_id == run_id)]
    if not found:
        where = f"run {run_id!r}" if run_id else "the chosen runs"
        raise StudyError(f"no variant {label!r} in {where}; have: {sorted({k for r in runs for k in r.prompts})}")
    return found


class _Copies:
    """The study's listening copies: one per source clip, under an opaque name.

    Names are reserved first (:meth:`name`) and the files written later (:meth:`write`), so a
    study that turns out too big is refused before anything reaches the disk.
    """

    def __init__(self, folder: Path, target_lufs: float) -> None:
        self.folder, self.target = folder, target_lufs
        self.names: dict[str, str] = {}  # source -> copy, relative to folder
        self.shapes: dict[str, tuple[tuple[int, ...], int]] = {}  # copy -> (audio shape, sample rate)
        self.log: list[dict] = []

    def name(self, source: str) -> str:
        # Opaque names: a file name seen anywhere must not tell which clip is which.
        return self.names.setdefault(source, f"audio/{secrets.token_hex(6)}.wav")

    def write(self, source: str, audio: np.ndarray | None = None, sample_rate: int = 0, match: bool = True) -> str:
        """Writes the copy of ``source`` (read from the file unless ``audio`` is given) once;
        loudness-matched unless ``match`` is False (``audio`` is then written as it is)."""
        from recap.audio_io import write_wav  # librosa: only creating a study needs it

        rel = self.name(source)
        if rel in self.shapes:
            return rel
        if audio is None:
            audio, sample_rate = self.read(source)
        if match:
            matched, lufs = loudness_match(audio, sample_rate, self.target)
        else:
            matched, lufs = np.clip(audio, -_MAX_PEAK, _MAX_PEAK).astype(np.float32), None
        write_wav(self.folder / rel, matched, sample_rate, subtype="PCM_16")  # plays in every browser
        self.shapes[rel] = (audio.shape, sample_rate)
        self.log.append({"copy": rel, "source": source, "input_lufs": lufs,
                         "target_lufs": self.target if match else None})
        return rel

    @staticmethod
    def read(source: str) -> tuple[np.ndarray, int]:
        from recap.audio_io import load_audio

        clip = load_audio(source, max_seconds=None, allow_silent=True)
        return clip.audio, clip.sample_rate


def _pair_combos(pair: str, runs: Sequence[RunClips]) -> tuple[str, str, list[tuple[tuple[RunClips, str], ...]]]:
    """The two sides of an A/B pair spec and the (run, label) combinations it pairs."""
    left, sep, right = (s.strip() for s in pair.partition(":"))
    if not sep or not left or not right:
        raise StudyError(f"pair {pair!r} must look like 'baseline:reword-1a'")
    if left == right:
        raise StudyError(f"pair {pair!r} compares a variant with itself")
    if "/" in left or "/" in right:
        lefts, rights = _resolve(left, runs), _resolve(right, runs)
        if len(lefts) > 1 or len(rights) > 1:
            raise StudyError(f"pair {pair!r}: a label is in several runs; write 'run_id/label'")
        return left, right, [(lefts[0], rights[0])]
    _resolve(left, runs)  # a clear error for an unknown label
    _resolve(right, runs)
    combos = [((r, left), (r, right)) for r in runs if left in r.prompts and right in r.prompts]
    if not combos:
        raise StudyError(f"pair {pair!r}: no run has both variants; write 'run_id/label' to pair across runs")
    return left, right, combos


def build_items(
    config: StudyConfig, run_dirs: Sequence[Path], folder: Path
) -> tuple[list[StudyItem], str | None, list[dict]]:
    """Resolves a config's pairs or items against run folders and writes the listening copies.

    Args:
        config: A validated config with ``seed`` set.
        run_dirs: Run folders (each with manifest.json).
        folder: The study folder to write ``audio/`` into.

    Returns:
        The items (test items first, then checks), the reference copy's relative path (or None),
        and one record per listening copy (source, measured input loudness).

    Raises:
        StudyError: an unknown label or pair, no clips, or more than ``LIMITS.study_items``
            items in all (refused before any file is written).
    """
    runs = [read_run(d) for d in run_dirs]
    if not runs:
        raise StudyError("a study needs at least one run")
    copies = _Copies(folder, config.target_lufs)
    items: list[StudyItem] = []
    sources: list[str] = []  # test clips, in the order their copies are written
    room = LIMITS.study_items - config.checks

    def shown_prompt(run: RunClips, label: str) -> str:
        return config.prompt or run.baseline_prompt or run.prompts[label]

    def clip(run: RunClips, label: str, seed: int) -> str:
        source = str(run.clips[label, seed])
        sources.append(source)
        return copies.name(source)

    def add(question: str, condition: str, sides: list[tuple[str, RunClips, str]], seed: int) -> None:
        if len(items) >= room:  # counted while planning: a huge spec never builds its whole list
            raise StudyError(f"this study would have more than {LIMITS.study_items} items (attention checks "
                             "included); choose fewer pairs, variants, questions, runs or checks")
        (na, ra, la), *rest = sides
        b = {}
        if rest:
            nb, rb, lb = rest[0]
            b = {"name_b": nb, "label_b": f"{rb.run_id}/{lb}@seed{seed}", "clip_b": clip(rb, lb, seed)}
        items.append(StudyItem(len(items), "test", question, condition, na, f"{ra.run_id}/{la}@seed{seed}",
                               clip(ra, la, seed), shown_prompt(ra, la), **b))

    # 1. Plan the test items (names only: nothing is written until the study is known to fit)
    if config.kind == "ab":
        for pair in config.pairs:
            left, right, combos = _pair_combos(pair, runs)
            before = len(items)
            for (ra, la), (rb, lb) in combos:
                seeds = sorted({s for (v, s) in ra.clips if v == la} & {s for (v, s) in rb.clips if v == lb})
                for seed in seeds:
                    for question in config.questions:
                        add(question.strip(), f"{left}:{right}", [(left, ra, la), (right, rb, lb)], seed)
            if len(items) == before:
                raise StudyError(f"pair {pair!r}: the two sides have no seed in common")
    else:
        specs = config.items or sorted({label for r in runs for label in r.prompts})
        for spec in specs:
            for run, label in _resolve(spec, runs):
                for seed in sorted(s for (v, s) in run.clips if v == label):
                    add("", spec.strip(), [(spec.strip(), run, label)], seed)
        if not items:
            raise StudyError("the chosen runs have no clips to rate")
    # 2. The listening copies of the test clips
    for source in sources:
        copies.write(source)
    # 3. Attention checks: an obvious answer, on noise matched in length and loudness to a real clip
    rng = random.Random(config.seed)
    tests = list(items)
    for k in range(config.checks):
        base = rng.choice(tests)
        shape, sr = copies.shapes[base.clip_a]
        noise = np.random.default_rng([config.seed, k]).standard_normal(shape).astype(np.float32) * 0.1
        noise_rel = copies.write(f"noise-{k}", noise, sr)
        if config.kind == "ab":
            items.append(StudyItem(len(items), "check", base.question, CHECK_CONDITION, "clip", base.label_a,
                                   base.clip_a, base.prompt, "noise", "noise", noise_rel, expected="a"))
        else:
            items.append(StudyItem(len(items), "check", "", CHECK_CONDITION, "noise", "noise", noise_rel,
                                   base.prompt, expected="low"))
    # 4. The reference clip, matched like the rest
    reference = copies.write(str(Path(config.reference).resolve())) if config.reference else None
    return items, reference, copies.log


def rater_copy(source: Path, folder: Path) -> Path:
    """A copy of a listening copy for one rater's page, under a random name, with unique bytes.

    Gradio caches every file it hands to a browser in a folder named by the hash of the file's
    bytes, so byte-identical copies would share a URL across raters and across items (and so
    tell a rater that two items play the same clip). A chunk of random bytes after the audio,
    which players skip as they skip any chunk they do not know (RIFF "JUNK"), makes every copy's
    bytes, hence its URL, its own. The audio itself is untouched.

    Raises:
        StudyError: ``source`` is not a RIFF/WAVE file (every listening copy is one).
    """
    data = bytearray(Path(source).read_bytes())
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise StudyError(f"{Path(source).name} is not a WAV listening copy")
    if len(data) % 2:
        data += b"\0"  # RIFF chunks start on even offsets
    data += b"JUNK" + struct.pack("<I", 16) + secrets.token_bytes(16)
    data[4:8] = struct.pack("<I", len(data) - 8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{secrets.token_hex(16)}.wav"
    path.write_bytes(bytes(data))
    return path
