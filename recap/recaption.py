"""Rewordings ("recaptions") of a prompt, by an LLM or by the offline synonym rewriter.

The thesis reworded each baseline prompt in two batches of growing distance: batch 1 swaps a
few words for synonyms, batch 2 rewords most of it (sections 4.2-4.3, Table 4.1). Here the
distance is ``light`` (batch 1), ``strong`` (batch 2) or ``custom`` (the user's instruction,
batch 3). The LLM path asks any OpenAI-compatible endpoint; the synonym path needs no API and
is the default when no endpoint is configured. The multi-turn path (Resonating Visuals, ch. 4)
first extracts the prompt's parts, lets the user edit them, then fuses them into rewordings.

Every result carries its config, the system prompt used and the full LLM exchange, so a run can
be audited and repeated. Guards from the thesis: rewordings identical to the baseline or to each
other are dropped (it found exact repeats), names of real places, people or brands are flagged,
and prompts over the text encoder's token limit are flagged. The API key is never stored here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from recap import llm
from recap.llm import CallOptions, Endpoint, LLMError
from recap.prompt_checks import named_entities, normalise_prompt, text_cosines, word_edit_distance
from recap.synonyms import synonym_variants

if TYPE_CHECKING:
    from recap.backends import AudioBackend
    from recap.generation import Variant
    from recap.multiturn import PromptParts

logger = logging.getLogger(__name__)

FORMAT = "recap.recaption/1"
DISTANCES = ("light", "strong", "custom")
METHODS = ("auto", "llm", "synonym", "multi-turn")
BATCH_OF_DISTANCE = {"light": 1, "strong": 2, "custom": 3}
MAX_N = 20

# Flags a rewording can carry. Those ending in ":" are followed by details.
FLAG_SAME_AS_BASELINE = "same-as-baseline"
FLAG_DUPLICATE = "duplicate"
FLAG_EXTRA = "extra"  # the model gave more than asked for
FLAG_NAMES = "names:"  # real places, people or brands, e.g. "names:Paris"
FLAG_TOO_LONG = "over-token-limit:"  # e.g. "over-token-limit:81>64"
FLAG_SALVAGED = "salvaged"  # read out of a broken (cut-off) JSON answer

RULES = (
    "Keep the same sound: the same source, action and setting. Do not name real places, people, "
    "brands or works. Each rewording must differ from the original and from the others. Keep each "
    "under 30 words, as one short description, with no commentary. "
    'Answer only with JSON: {"rewordings": ["...", "..."]}'
)
LIGHT_SYSTEM_PROMPT = (
    "You reword prompts for a text-to-audio model. Change the user's sound description only a "
    "little: swap one to three words for synonyms and keep everything else, including the word "
    "order. " + RULES
)
STRONG_SYSTEM_PROMPT = (
    "You reword prompts for a text-to-audio model. Reword most of the user's sound description: "
    "replace most words with synonyms or other phrasing, and you may reorder it. " + RULES
)
CUSTOM_SYSTEM_PROMPT = (
    "You reword prompts for a text-to-audio model. Reword the user's sound description as "
    "follows: {instruction} " + RULES
)
_LIST_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "rewordings",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"rewordings": {"type": "array", "items": {"type": "string"}}},
            "required": ["rewordings"],
            "additionalProperties": False,
        },
    },
}


@dataclass
class RecaptionConfig:
    """How to reword. Saved with every result; it holds no secret.

    Attributes:
        n: Rewordings wanted per prompt (1..20).
        distance: "light" (batch 1), "strong" (batch 2) or "custom" (batch 3, LLM only).
        custom_instruction: What to do for "custom", e.g. "describe it as heard underwater".
        system_prompt: The system prompt to send; None uses the default for the distance
            (:func:`default_system_prompt`). For multi-turn it is the fusion stage's prompt.
        extract_prompt: Multi-turn extraction stage's system prompt; None uses the default.
        method: "auto" (LLM when an endpoint or key is configured, else synonyms), "llm",
            "synonym" or "multi-turn".
        model: Chat model; None uses ``RECAP_LLM_MODEL``.
        base_url: OpenAI-compatible endpoint; None uses ``OPENAI_BASE_URL`` (or api.openai.com).
        timeout_s: Seconds to wait for one answer.
        max_retries: Retries after 429 / 5xx / timeouts / lost connections.
        backoff_s: First wait between retries in seconds; doubles each time.
        seed: Seed sent to the LLM and used by the synonym rewriter.
        temperature: LLM sampling temperature (0..2).
        use_json_schema: Ask for structured output (falls back to plain text if refused).
        drop_duplicates: Drop rewordings equal to the baseline or to an earlier one (else only
            flag them).
    """

    n: int = 3
    distance: str = "light"
    custom_instruction: str | None = None
    system_prompt: str | None = None
    extract_prompt: str | None = None
    method: str = "auto"
    model: str | None = None
    base_url: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0
    seed: int = 0
    temperature: float = 0.9
    use_json_schema: bool = True
    drop_duplicates: bool = True

    def validate(self) -> None:
        """Raises ValueError naming the first bad value."""
        if not 1 <= self.n <= MAX_N:
            raise ValueError(f"n must be between 1 and {MAX_N}; got {self.n}")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}; got {self.distance!r}")
        if self.distance == "custom" and not (self.custom_instruction or "").strip():
            raise ValueError("distance 'custom' needs a custom_instruction")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        if self.method == "synonym" and self.distance == "custom":
            raise ValueError("the synonym rewriter knows only 'light' and 'strong'; 'custom' needs an LLM")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0; got {self.timeout_s}")
        if self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError(f"max_retries and backoff_s must be >= 0; got {self.max_retries}, {self.backoff_s}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be between 0 and 2; got {self.temperature}")


@dataclass
class Rewording:
    """One variant. ``method`` says what made it: "llm", "synonym" or "multi-turn"."""

    text: str
    method: str
    distance: str
    batch: int
    flags: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # synonym swaps, "old -> new"
    text_cosine: float | None = None  # vs the baseline, with the backend's text encoder
    word_edits: int | None = None  # word-level edit distance to the baseline


@dataclass
class RecaptionResult:
    """Rewordings of one baseline, with everything needed to audit and repeat them."""

    baseline: str
    variants: list[Rewording]
    method: str
    config: RecaptionConfig
    exchange: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[Rewording] = field(default_factory=list)
    system_prompt: str | None = None
    parts: PromptParts | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (no API key: none is ever held here)."""
        return {
            "format": FORMAT,
            "baseline": self.baseline,
            "method": self.method,
            "variants": [dataclasses.asdict(v) for v in self.variants],
            "dropped": [dataclasses.asdict(v) for v in self.dropped],
            "config": dataclasses.asdict(self.config),
            "system_prompt": self.system_prompt,
            "parts": self.parts.to_dict() if self.parts else None,
            "exchange": self.exchange,
            "created": self.created,
            "elapsed_s": self.elapsed_s,
        }

    def labels(self) -> list[str]:
        """File-safe labels: "baseline", then "reword-<batch><a, b, ...>" per variant."""
        return ["baseline"] + [f"reword-{v.batch}{_letters(i)}" for i, v in enumerate(self.variants)]

    def to_variants(self) -> list[Variant]:
        """The baseline and the rewordings as :class:`recap.generation.Variant` for a run."""
        from recap.generation import Variant

        out = [Variant("baseline", self.baseline, "baseline", 0)]
        for label, v in zip(self.labels()[1:], self.variants):
            out.append(Variant(label, v.text, v.method, v.batch))
        return out


def _letters(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return s


# --------------------------------------------------------------------------------------------
# Prompts and endpoint


def default_system_prompt(distance: str, custom_instruction: str | None = None) -> str:
    """The default rewording system prompt for a distance ("light", "strong" or "custom").

    The multi-turn stages have theirs in :mod:`recap.multiturn`.
    """
    templates = {"light": LIGHT_SYSTEM_PROMPT, "strong": STRONG_SYSTEM_PROMPT, "custom": CUSTOM_SYSTEM_PROMPT}
    if distance not in templates:
        raise ValueError(f"distance must be one of {DISTANCES}; got {distance!r}")
    return templates[distance].replace("{instruction}", (custom_instruction or "").strip())


def llm_configured(config: RecaptionConfig | None = None, api_key: str | None = None) -> bool:
    """True when an endpoint or key is set (in the config, the call or the environment)."""
    from recap.config import settings

    return bool(api_key or (config and config.base_url) or settings().llm_configured)


def llm_endpoint(config: RecaptionConfig, api_key: str | None = None) -> Endpoint:
    """Base URL, model and key from the config, the call and the environment, in that order.

    Raises:
        LLMError: ``no-key`` when neither an endpoint nor a key is set anywhere.
    """
    from recap.config import settings

    s = settings()
    base_url = config.base_url or s.llm_base_url
    key = api_key or s.openai_api_key
    if not base_url and not key:
        raise LLMError(
            "no-key",
            "no LLM endpoint is configured: set OPENAI_API_KEY (for api.openai.com) or "
            "OPENAI_BASE_URL (for a local server such as Ollama or vLLM), or use the synonym rewriter",
        )
    return Endpoint(base_url=base_url, model=config.model or s.llm_model, api_key=key)


def resolved_config(config: RecaptionConfig, endpoint: Endpoint) -> RecaptionConfig:
    """The config with the model and URL really used, so the saved one repeats the run.

    The URL is saved without any credentials in it.
    """
    url = endpoint.shown_url if endpoint.base_url else None
    return dataclasses.replace(config, model=endpoint.model, base_url=url)


def call_options(config: RecaptionConfig) -> CallOptions:
    """The per-call parameters of a config."""
    return CallOptions(
        temperature=config.temperature,
        seed=config.seed,
        timeout_s=config.timeout_s,
        max_retries=config.max_retries,
        backoff_s=config.backoff_s,
    )


def ask_for_list(
    endpoint: Endpoint, config: RecaptionConfig, system: str, user: str, stage: str
) -> tuple[llm.ParsedList, dict[str, Any]]:
    """Sends a system and a user message and reads a list of prompts from the answer.

    Raises:
        LLMError: the call failed or the answer holds no list (``exchange`` has the record).
    """
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    fmt = _LIST_SCHEMA if config.use_json_schema else None
    answer, record = llm.chat(endpoint, messages, call_options(config), response_format=fmt, stage=stage)
    try:
        return llm.parse_list_answer(answer), record
    except LLMError as e:
        e.exchange = [record]
        raise


# --------------------------------------------------------------------------------------------
# Guards and distances


def check_rewordings(
    baseline: str, variants: list[Rewording], config: RecaptionConfig, backend: AudioBackend | None = None
) -> tuple[list[Rewording], list[Rewording]]:
    """The thesis's guards, applied in place to ``variants``.

    Repeats of the baseline or of an earlier variant are dropped (or only flagged when
    ``config.drop_duplicates`` is off), variants past ``config.n`` are dropped as extra, names
    of real places, people or brands not already in the baseline are flagged, and, with a
    backend, prompts over its token limit are flagged and every kept variant gets its text
    cosine to the baseline. Every kept variant gets its word edit distance.

    Returns:
        (kept, dropped), each variant carrying its flags.
    """
    kept: list[Rewording] = []
    dropped: list[Rewording] = []
    seen = {normalise_prompt(baseline)}
    baseline_names = set(named_entities(baseline))
    for v in variants:
        key = normalise_prompt(v.text)
        if key == normalise_prompt(baseline):
            v.flags.append(FLAG_SAME_AS_BASELINE)
        elif key in seen:
            v.flags.append(FLAG_DUPLICATE)
        seen.add(key)
        if config.drop_duplicates and {FLAG_SAME_AS_BASELINE, FLAG_DUPLICATE} & set(v.flags):
            dropped.append(v)
            continue
        if len(kept) >= config.n:
            v.flags.append(FLAG_EXTRA)
            dropped.append(v)
            continue
        names = [w for w in named_entities(v.text) if w not in baseline_names]
        if names:
            v.flags.append(FLAG_NAMES + ",".join(dict.fromkeys(names)))
        if backend is not None:
            count = backend.count_tokens(v.text)
            if count > backend.max_prompt_tokens:
                v.flags.append(f"{FLAG_TOO_LONG}{count}>{backend.max_prompt_tokens}")
        v.word_edits = word_edit_distance(baseline, v.text)
        kept.append(v)
    if backend is not None:
        for v, c in zip(kept, text_cosines(backend, baseline, [v.text for v in kept])):
            v.text_cosine = c
    if dropped:
        logger.info("dropped %d rewording(s) of %r: %s", len(dropped), baseline, [v.flags for v in dropped])
    return kept, dropped


# --------------------------------------------------------------------------------------------
# Entry points


def check_prompt(prompt: str) -> str:
    """The prompt without surrounding blanks; ValueError when it is empty or not a string."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string; got {prompt!r}")
    return prompt.strip()


def recaption(
    prompt: str,
    config: RecaptionConfig | None = None,
    backend: AudioBackend | None = None,
    *,
    api_key: str | None = None,
) -> RecaptionResult:
    """Rewords ``prompt`` ``config.n`` times at ``config.distance``.

    Args:
        prompt: The baseline prompt.
        config: How to reword; defaults to 3 light rewordings by the automatic method.
        backend: When given, each variant gets its text-embedding cosine to the baseline and
            is flagged when it is over the backend's token limit.
        api_key: Overrides ``OPENAI_API_KEY``. Used for the call only, never kept.

    Returns:
        The result; its ``variants`` may be fewer than ``n`` when repeats were dropped.

    Raises:
        ValueError: bad prompt or config.
        LLMError: the LLM call failed (``reason`` says why; no key in any message).
        WordNetMissingError: the synonym rewriter has no WordNet (message says what to install).
    """
    # 1. Check inputs and choose the method
    prompt = check_prompt(prompt)
    config = config or RecaptionConfig()
    config.validate()
    method = config.method
    if method == "auto":
        method = "llm" if llm_configured(config, api_key) else "synonym"
        if method == "synonym":
            logger.info("no LLM endpoint configured; using the offline synonym rewriter")
            if config.distance == "custom":
                raise ValueError("distance 'custom' needs an LLM endpoint; none is configured")
    t0 = time.monotonic()

    # 2. Make the rewordings
    batch = BATCH_OF_DISTANCE[config.distance]
    if method == "synonym":
        made = synonym_variants(prompt, config.n, config.distance, config.seed)
        variants = [
            Rewording(
                v.text,
                "synonym",
                config.distance,
                batch,
                changes=[f"{c.original} -> {c.replacement}" for c in v.changes],
            )
            for v in made
        ]
        config = dataclasses.replace(config, method="synonym")  # what ran, not "auto"
        result = RecaptionResult(prompt, variants, "synonym", config)
    elif method == "multi-turn":
        from recap.multiturn import extract_parts, fuse_parts  # it builds on this module

        parts = extract_parts(prompt, config, api_key=api_key)
        return fuse_parts(parts, config, backend, api_key=api_key)
    else:
        endpoint = llm_endpoint(config, api_key)
        system = config.system_prompt or default_system_prompt(config.distance, config.custom_instruction)
        user = f"Sound description: {prompt}\nWrite {config.n} rewordings."
        parsed, record = ask_for_list(endpoint, config, system, user, "reword")
        flags = [FLAG_SALVAGED] if parsed.salvaged else []
        variants = [Rewording(t, "llm", config.distance, batch, flags=list(flags)) for t in parsed.items]
        config = dataclasses.replace(resolved_config(config, endpoint), method="llm")
        result = RecaptionResult(prompt, variants, "llm", config, exchange=[record], system_prompt=system)

    # 3. Guards and distances
    result.variants, result.dropped = check_rewordings(prompt, result.variants, config, backend)
    result.elapsed_s = round(time.monotonic() - t0, 3)
    return result
