"""What every way of rewording shares: its config, its result, the system prompts, the choice of
endpoint, asking an LLM for a list, and the checks every rewording passes.

:mod:`recap.rewording.recaption` dispatches to a method (LLM, synonyms, multi-turn);
:mod:`recap.rewording.multiturn` builds on this module, not on the dispatcher.

Every result carries its config, the system prompt used and the full LLM exchange, so a run can
be audited and repeated. Guards from the thesis: rewordings identical to the baseline or to each
other are dropped (it found exact repeats), names of real places, people or brands are flagged,
and prompts over the text encoder's token limit are flagged. The API key is never stored here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from recap.rewording import llm
from recap.errors import BadInput
from recap.limits import LIMITS, finite, text, whole
from recap.rewording.llm import CallOptions, Endpoint, LLMError, check_endpoint_url, same_endpoint
from recap.rewording.checks import named_entities, normalise_prompt, text_cosines, word_edit_distance
from recap.variants import DISTANCES, REWORDING_METHODS, TIER_MANUAL, Variant, tier_of

if TYPE_CHECKING:
    from recap.backends.base import AudioBackend
    from recap.config import Settings

logger = logging.getLogger(__name__)

PART_NAMES = ("source", "action", "setting", "perspective", "texture")
MAX_PART_CHARS = LIMITS.text_chars // 4  # a part is a phrase

FORMAT = "recap.rewording.recaption/1"
MAX_N = 20
MAX_SEED = 2**32 - 1
MAX_RETRIES = 10
MAX_MODEL_CHARS = 200

# Flags a rewording can carry. Those ending in ":" are followed by details.
FLAG_SAME_AS_BASELINE = "same-as-baseline"
FLAG_DUPLICATE = "duplicate"
FLAG_EXTRA = "extra"  # the model gave more than asked for
FLAG_NAMES = "names:"  # real places, people or brands, e.g. "names:Paris"
FLAG_TOO_LONG = "over-token-limit:"  # e.g. "over-token-limit:81>64"
FLAG_SALVAGED = "salvaged"  # read out of a broken (cut-off) JSON answer
# words the model's text encoder reads as <unk>, e.g. "unreadable:dog,barking" (a closed vocabulary)
FLAG_UNREADABLE = "unreadable:"

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
        distance: "light" (tier 1), "strong" (tier 2) or "custom" (tier 3, LLM only).
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
        """Raises :class:`BadInput` (a ValueError) naming the first bad value."""
        whole("n (rewordings per prompt)", self.n, 1, MAX_N)
        if self.distance not in DISTANCES:
            raise BadInput(f"distance must be one of {DISTANCES}; got {_shown(self.distance)}")
        text("custom_instruction", self.custom_instruction)
        if self.distance == "custom" and not (self.custom_instruction or "").strip():
            raise BadInput("distance 'custom' needs a custom_instruction")
        if self.method not in REWORDING_METHODS:
            raise BadInput(f"method must be one of {REWORDING_METHODS}; got {_shown(self.method)}")
        if self.method == "synonym" and self.distance == "custom":
            raise BadInput("the synonym rewriter knows only 'light' and 'strong'; 'custom' needs an LLM")
        text("system_prompt", self.system_prompt)
        text("extract_prompt", self.extract_prompt)
        text("model", self.model, MAX_MODEL_CHARS, allow_newlines=False)
        if self.base_url is not None:
            check_endpoint_url(self.base_url, "the LLM endpoint (base_url)")
        finite("timeout_s", self.timeout_s, 0, LIMITS.llm_total_s)
        if not self.timeout_s > 0:
            raise BadInput(f"timeout_s must be > 0; got {self.timeout_s}")
        whole("max_retries", self.max_retries, 0, MAX_RETRIES)
        finite("backoff_s", self.backoff_s, 0, 60)
        whole("seed", self.seed, 0, MAX_SEED)
        finite("temperature", self.temperature, 0, 2)
        for name in ("use_json_schema", "drop_duplicates"):
            if not isinstance(getattr(self, name), bool):
                raise BadInput(f"{name} must be true or false")


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


@dataclass
class Rewording:
    """One variant. ``method`` says what made it: "llm", "synonym" or "multi-turn"."""

    text: str
    method: str
    distance: str
    tier: int
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
        """File-safe labels: "baseline", then "reword-<tier><a, b, ...>" per variant."""
        counts: dict[int, int] = {}
        labels = ["baseline"]
        for v in self.variants:  # letters count within a tier, as recorded_texts reads them
            counts[v.tier] = counts.get(v.tier, 0) + 1
            labels.append(f"reword-{v.tier}{_letters(counts[v.tier] - 1)}")
        return labels

    def to_variants(self) -> list[Variant]:
        """The baseline and the rewordings as :class:`recap.variants.Variant` for a run."""
        out = [Variant("baseline", self.baseline, "baseline", 0)]
        for label, v in zip(self.labels()[1:], self.variants):
            out.append(Variant(label, v.text, v.method, v.tier))
        return out


def recorded_texts(record: Mapping[str, Any] | None) -> dict[str, str]:
    """label -> text of each rewording a recaption record (:meth:`RecaptionResult.to_dict`, or
    :func:`merge_records` of several tiers) made; letters count within each tier, as the labels do."""
    out: dict[str, str] = {}
    counts: dict[int, int] = {}
    for v in (record or {}).get("variants") or []:
        if isinstance(v, dict) and isinstance(v.get("text"), str):
            tier = tier_of(v)
            counts[tier] = counts.get(tier, 0) + 1
            out[f"reword-{tier}{_letters(counts[tier] - 1)}"] = v["text"]
    return out


def merge_records(old: Mapping[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """One record of the latest rewordings of each tier of the same baseline.

    The thesis compares light (tier 1) and strong (tier 2) rewordings in one grid, so a new
    rewording replaces only the earlier ones of its own tier; the earlier records stay under
    "earlier" for provenance. A different baseline starts afresh.
    """
    if not isinstance(old, Mapping) or old.get("baseline") != new.get("baseline"):
        return new
    tiers = {tier_of(v) for v in new.get("variants") or [] if isinstance(v, dict)}
    kept = [v for v in old.get("variants") or [] if isinstance(v, dict) and tier_of(v) not in tiers]
    if not kept:
        return new
    earlier = [*(old.get("earlier") or []), {k: v for k, v in old.items() if k != "earlier"}]
    return {**new, "variants": kept + list(new.get("variants") or []), "earlier": earlier}


def mark_edited(variants: Sequence[Variant], record: Mapping[str, Any] | None) -> list[Variant]:
    """``variants`` with every rewording whose text was changed by hand after ``record`` made it
    turned into a hand-written one (method "manual", tier :data:`TIER_MANUAL`): its method, tier
    and word edits no longer say how it was made."""
    made = recorded_texts(record)
    return [dataclasses.replace(v, method="manual", tier=TIER_MANUAL) if edited_by_hand(v.label, v.method, v.prompt, made)
            else v for v in variants]


def edited_by_hand(label: str, method: object, text: object, made: Mapping[str, str]) -> bool:
    """Whether the prompt ``label`` holds differs from the rewording ``made`` says it was."""
    return label in made and str(method) != "manual" and str(text or "").strip() != made[label].strip()


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

    The multi-turn stages have theirs in :mod:`recap.rewording.multiturn`.
    """
    templates = {"light": LIGHT_SYSTEM_PROMPT, "strong": STRONG_SYSTEM_PROMPT, "custom": CUSTOM_SYSTEM_PROMPT}
    if distance not in templates:
        raise BadInput(f"distance must be one of {DISTANCES}; got {_shown(distance)}")
    return templates[distance].replace("{instruction}", (custom_instruction or "").strip())


def llm_configured(config: RecaptionConfig | None = None, api_key: str | None = None,
                   settings: Settings | None = None) -> bool:
    """True when an endpoint or key is set (in the config, the call or the server's settings)."""
    return bool(api_key or (config and config.base_url) or _settings(settings).llm_configured)


def _settings(settings: Settings | None) -> Settings:
    from recap.config import settings as from_env

    return settings if settings is not None else from_env()


def llm_endpoint(config: RecaptionConfig, api_key: str | None = None, *, settings: Settings | None = None,
                 visitor: bool = False) -> Endpoint:
    """Where to call and with which key: the one place that decides where a key may go.

    The server's key (``settings.openai_api_key``) goes only to the server's endpoint
    (``settings.llm_base_url``, or api.openai.com when that is unset). An endpoint typed for the
    call (``config.base_url`` naming another one) gets only the key typed for the call, or none
    (a placeholder, for keyless local servers), never the server's.

    Args:
        config: Its ``base_url`` and ``model``; None / empty mean the server's.
        api_key: A key typed for this call; it goes to whichever endpoint is called.
        settings: The server's settings; None reads the environment.
        visitor: The call comes from a visitor of the web app, so the server's policies apply:
            a typed endpoint only with ``settings.visitor_endpoints``; on a public server, not
            one on an internal address, the server's URL never shown, and the server's key only
            with the server's model.

    Raises:
        LLMError: ``no-key`` when neither an endpoint nor a key is set anywhere.
        BadInput: an unusable endpoint URL, or one the server's policy refuses.
    """
    s = _settings(settings)
    model = config.model or s.llm_model
    typed = config.base_url and check_endpoint_url(config.base_url, "the LLM endpoint")
    if typed and not same_endpoint(typed, s.llm_base_url):
        if visitor:
            _check_visitor_endpoint(typed, s)
        return Endpoint(base_url=typed, model=model, api_key=api_key, trusted=False)
    key = api_key or s.openai_api_key
    if not s.llm_base_url and not key:
        raise LLMError(
            "no-key",
            "no LLM endpoint is configured: set OPENAI_API_KEY (for api.openai.com) or "
            "OPENAI_BASE_URL (for a local server such as Ollama or vLLM), or use the synonym rewriter",
        )
    if visitor and s.public and not api_key and s.openai_api_key and model != s.llm_model:
        # The owner pays for their key: strangers use it with the model the owner chose.
        raise BadInput(f"on this server the server's API key works only with model {s.llm_model!r}; "
                       f"type your own API key to use {model!r}")
    return Endpoint(base_url=s.llm_base_url or llm.OPENAI_URL, model=model, api_key=key, trusted=True,
                    url_hidden=visitor and s.public)


def _check_visitor_endpoint(url: str, s: Settings) -> None:
    """The server's policy on endpoints typed by a visitor (see :func:`llm_endpoint`)."""
    if not s.visitor_endpoints:
        raise BadInput("this server does not call LLM endpoints typed by visitors (its owner can allow it with "
                       "RECAP_VISITOR_ENDPOINTS=1); leave the endpoint empty to use the server's own")
    if not s.public:
        return
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        raise BadInput(f"the LLM endpoint's host {host!r} cannot be found") from None
    # A public server must not become a way into the network it runs in (cloud metadata, admin ports).
    # The name is looked up again when connecting: a host that changes its address in between is
    # not caught here (see the threat model in the README).
    if any(not ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
        raise BadInput(f"the LLM endpoint's host {host!r} is an internal address; this public server calls "
                       "only endpoints on the internet")


def resolved_config(config: RecaptionConfig, endpoint: Endpoint) -> RecaptionConfig:
    """The config with the model and URL really used, so the saved one repeats the run.

    The URL is saved without any credentials in it, and not at all when it is hidden (a public
    server's own endpoint): None then means "the server's".
    """
    url = None if endpoint.url_hidden or not endpoint.base_url else endpoint.shown_url
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
    endpoint: Endpoint, config: RecaptionConfig, system: str, user: str, stage: str,
    stop: threading.Event | None = None,
) -> tuple[llm.ParsedList, dict[str, Any]]:
    """Sends a system and a user message and reads a list of prompts from the answer.

    Raises:
        LLMError: the call failed or the answer holds no list (``exchange`` has the record).
    """
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    fmt = _LIST_SCHEMA if config.use_json_schema else None
    answer, record = llm.chat(endpoint, messages, call_options(config), response_format=fmt, stage=stage, stop=stop)
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
    backend, prompts over its token limit or with words its text encoder cannot read are
    flagged and every kept variant gets its text cosine to the baseline. Every kept variant gets its word edit distance.

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
            v.flags += model_flags(backend, v.text)
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


def model_flags(backend: AudioBackend, prompt: str, tokens: Any = None) -> list[str]:
    """What the model will not read of ``prompt``: tokens past its limit, words it reads as <unk>."""
    flags = []
    count = backend.count_tokens(prompt, tokens)
    if count > backend.max_prompt_tokens:
        flags.append(f"{FLAG_TOO_LONG}{count}>{backend.max_prompt_tokens}")
    unknown = backend.unknown_words(prompt, tokens)
    if unknown:
        flags.append(FLAG_UNREADABLE + ",".join(unknown))
    return flags


def check_prompt(prompt: str) -> str:
    """The prompt without surrounding blanks; :class:`BadInput` when it is empty, not a string,
    over ``LIMITS.text_chars`` or holds control characters."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInput(f"prompt must be a non-empty string; got {_shown(prompt)}")
    return text("prompt", prompt.strip())


@dataclass
class PromptParts:
    """The parts of a prompt (stage 1), editable before fusion.

    ``extracted`` keeps what the model first answered, so edits stay visible in the record.
    """

    prompt: str
    source: str = ""
    action: str = ""
    setting: str = ""
    perspective: str = ""
    texture: str = ""
    extracted: dict[str, str] = field(default_factory=dict)
    system_prompt: str = ""
    exchange: list[dict[str, Any]] = field(default_factory=list)

    def fields(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in PART_NAMES}

    def describe(self) -> str:
        """The parts as ``name: value`` lines (empty parts left out): the fusion stage's input."""
        return "\n".join(f"{k}: {v.strip()}" for k, v in self.fields().items() if v and v.strip())

    def edited(self) -> list[str]:
        """Names of the parts that differ from what was extracted."""
        return [k for k, v in self.fields().items() if self.extracted and v != self.extracted.get(k, "")]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"edited": self.edited()}

    def check(self) -> None:
        """Raises :class:`BadInput` naming a part that is not short text (parts come from a page)."""
        text("the prompt of the parts", self.prompt)
        for name, value in self.fields().items():
            text(f"part {name!r}", value, MAX_PART_CHARS)
