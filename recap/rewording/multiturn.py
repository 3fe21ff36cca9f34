"""Multi-turn recaptioning: extract a prompt's parts, let the user edit them, fuse them.

After "Resonating Visuals" (chapter 4): extractive prompts first pull out what a description is
made of, then a fusion prompt writes new prompts from those parts. Each stage's output can be
shown and corrected before the next, which is why the stages are two calls::

    parts = extract_parts("rain on a tin roof", config)          # stage 1
    parts = dataclasses.replace(parts, setting="a cave")         # the user's edit
    result = fuse_parts(parts, config)                           # stage 2 -> RecaptionResult

For a sound prompt the parts are its source, action, setting, perspective (distance and point
of listening) and texture (timbre).

Without an LLM the parts are typed by hand and :func:`fuse_offline` composes them into a prompt
and rewords that prompt with the offline synonym rewriter, so the parts-then-fuse workflow (and
its record of what was changed) works on a machine with no endpoint.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import TYPE_CHECKING

from recap.rewording import llm
from recap.errors import BadInput
from recap.rewording.llm import LLMError
from recap.variants import TIER_OF_DISTANCE
from recap.rewording.base import (
    PART_NAMES,
    PromptParts,
    FLAG_SALVAGED,
    RULES,
    RecaptionConfig,
    RecaptionResult,
    Rewording,
    ask_for_list,
    call_options,
    check_prompt,
    check_rewordings,
    llm_endpoint,
    resolved_config,
)

if TYPE_CHECKING:
    from recap.backends.base import AudioBackend
    from recap.config import Settings


EXTRACT_SYSTEM_PROMPT = (
    "Break the user's sound description into its parts. Answer only with JSON with these keys: "
    '"source" (what makes the sound), "action" (what it does), "setting" (where, the acoustic '
    'space), "perspective" (distance and point of listening: close-up, distant, indoors...), '
    '"texture" (timbre, texture, loudness, rhythm). Use a short phrase for each, and an empty '
    "string for a part the description does not give. Add nothing that it does not imply."
)
FUSE_SYSTEM_PROMPT = (
    "You write prompts for a text-to-audio model. The user gives the parts of a sound "
    "description: source, action, setting, perspective, texture. Fuse them into one short, "
    "natural description per prompt; leave out empty parts and invent nothing else. {distance} " + RULES
)
_FUSE_DISTANCE = {
    "light": "Stay close to the words of the parts.",
    "strong": "Use your own words for most of it.",
    "custom": "{instruction}",
}
_PARTS_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "prompt_parts",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {k: {"type": "string"} for k in PART_NAMES},
            "required": list(PART_NAMES),
            "additionalProperties": False,
        },
    },
}


def default_fuse_prompt(distance: str, custom_instruction: str | None = None) -> str:
    """The fusion stage's default system prompt for a distance ("light", "strong", "custom")."""
    if distance not in _FUSE_DISTANCE:
        raise BadInput(f"distance must be one of {tuple(_FUSE_DISTANCE)}; got {str(distance)[:40]!r}")
    hint = _FUSE_DISTANCE[distance].replace("{instruction}", (custom_instruction or "").strip())
    return FUSE_SYSTEM_PROMPT.replace("{distance}", hint)


def extract_parts(prompt: str, config: RecaptionConfig | None = None, *, api_key: str | None = None,
                  settings: Settings | None = None, visitor: bool = False,
                  stop: threading.Event | None = None) -> PromptParts:
    """Stage 1: asks the LLM for the prompt's parts (source, action, setting, perspective,
    texture). Edit the returned fields (``dataclasses.replace``) before fusing.

    Args:
        prompt: The baseline prompt.
        config: Endpoint, model, timeouts; ``config.extract_prompt`` replaces the default
            :data:`EXTRACT_SYSTEM_PROMPT`.
        api_key, settings, visitor, stop: As for :func:`recap.rewording.recaption.recaption`.

    Raises:
        BadInput: bad prompt or config, or an endpoint the server's policy refuses.
        LLMError: the call failed, or the answer named none of the parts.
        Cancelled: ``stop`` was set.
    """
    prompt = check_prompt(prompt)
    config = config or RecaptionConfig()
    config.validate()
    endpoint = llm_endpoint(config, api_key, settings=settings, visitor=visitor)
    system = config.extract_prompt or EXTRACT_SYSTEM_PROMPT
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    fmt = _PARTS_SCHEMA if config.use_json_schema else None
    answer, record = llm.chat(endpoint, messages, call_options(config), response_format=fmt, stage="extract",
                              stop=stop)
    try:
        found = llm.parse_fields_answer(answer, PART_NAMES)
    except LLMError as e:
        e.exchange = [record]
        raise
    return PromptParts(prompt=prompt, **found, extracted=dict(found), system_prompt=system, exchange=[record])


def fuse_parts(
    parts: PromptParts,
    config: RecaptionConfig | None = None,
    backend: AudioBackend | None = None,
    *,
    api_key: str | None = None,
    settings: Settings | None = None,
    visitor: bool = False,
    stop: threading.Event | None = None,
) -> RecaptionResult:
    """Stage 2: fuses (possibly edited) parts into ``config.n`` rewordings.

    Args:
        parts: From :func:`extract_parts`, possibly edited.
        config: As for :func:`recap.rewording.recaption.recaption`; ``config.system_prompt`` replaces
            :func:`default_fuse_prompt`.
        backend: Scores text cosine and token limits, as in ``recaption``.
        api_key, settings, visitor, stop: As for :func:`recap.rewording.recaption.recaption`.

    Returns:
        A result with method "multi-turn"; its ``exchange`` holds both stages and ``parts``
        shows what was extracted and what the user changed.

    Raises:
        BadInput: bad config or parts, every part is empty, or an endpoint the server refuses.
        LLMError: the call failed.
        Cancelled: ``stop`` was set.
    """
    config = config or RecaptionConfig()
    config.validate()
    parts.check()
    described = parts.describe()
    if not described:
        raise BadInput("every part is empty; there is nothing to fuse")
    t0 = time.monotonic()
    endpoint = llm_endpoint(config, api_key, settings=settings, visitor=visitor)
    system = config.system_prompt or default_fuse_prompt(config.distance, config.custom_instruction)
    parsed, record = ask_for_list(endpoint, config, system, f"{described}\n\nWrite {config.n} prompts.", "fuse",
                                  stop)
    tier = TIER_OF_DISTANCE[config.distance]
    flags = [FLAG_SALVAGED] if parsed.salvaged else []
    variants = [Rewording(t, "multi-turn", config.distance, tier, flags=list(flags)) for t in parsed.items]
    config = dataclasses.replace(resolved_config(config, endpoint), method="multi-turn")
    kept, dropped = check_rewordings(parts.prompt, variants, config, backend)
    return RecaptionResult(
        parts.prompt,
        kept,
        "multi-turn",
        config,
        exchange=[*parts.exchange, record],
        dropped=dropped,
        system_prompt=system,
        parts=parts,
        elapsed_s=round(time.monotonic() - t0, 3),
    )


def compose_parts(parts: PromptParts) -> str:
    """The parts as one prompt in a fixed order: what sounds and what it does, then where, how
    near and what it sounds like ("rain falling, in a cave, close, hollow"); empty parts left out."""
    head = " ".join(p.strip() for p in (parts.source, parts.action) if p and p.strip())
    tail = [p.strip() for p in (parts.setting, parts.perspective, parts.texture) if p and p.strip()]
    return ", ".join([head, *tail] if head else tail)


def fuse_offline(parts: PromptParts, config: RecaptionConfig | None = None, backend: AudioBackend | None = None,
                 vocabulary: AudioBackend | None = None) -> RecaptionResult:
    """Stage 2 without an LLM: the parts composed into a prompt (:func:`compose_parts`), then
    ``config.n - 1`` synonym rewordings of it, all as method "multi-turn" of ``config.distance``.

    Args:
        parts: Typed by hand (``parts.prompt`` is the baseline they reword) or from stage 1.
        backend: Scores text cosine and token limits, as in ``recaption``.
        vocabulary: A closed-vocabulary model: synonyms keep to the words it reads.

    Raises:
        BadInput: bad config or parts, or every part is empty.
        WordNetMissingError: the synonym rewriter has no WordNet.
    """
    from recap.rewording.synonyms import synonym_variants

    config = config or RecaptionConfig()
    config.validate()
    parts.check()
    if config.distance not in ("light", "strong"):
        raise BadInput(f"distance {config.distance!r} needs an LLM; offline fusion rewords 'light' or 'strong'")
    fused = compose_parts(parts)
    if not fused:
        raise BadInput("every part is empty: type at least the source (e.g. 'rain') before fusing")
    t0 = time.monotonic()
    reader = backend if backend is not None else vocabulary
    known = None if reader is None else (lambda word: not reader.unknown_words(word))
    tier = TIER_OF_DISTANCE[config.distance]
    made = synonym_variants(fused, config.n - 1, config.distance, config.seed, known=known) if config.n > 1 else []
    variants = [Rewording(fused, "multi-turn", config.distance, tier),
                *[Rewording(v.text, "multi-turn", config.distance, tier,
                            changes=[f"{c.original} -> {c.replacement}" for c in v.changes]) for v in made]]
    config = dataclasses.replace(config, method="multi-turn", model=None, base_url=None)
    kept, dropped = check_rewordings(parts.prompt, variants, config, backend)
    return RecaptionResult(parts.prompt, kept, "multi-turn", config, exchange=list(parts.exchange), dropped=dropped,
                           parts=parts, elapsed_s=round(time.monotonic() - t0, 3))
