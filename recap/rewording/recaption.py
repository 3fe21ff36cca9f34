"""Rewordings ("recaptions") of a prompt, by an LLM or by the offline synonym rewriter.

The thesis reworded each baseline prompt in two batches of growing distance: batch 1 swaps a
few words for synonyms, batch 2 rewords most of it (sections 4.2-4.3, Table 4.1). Here the
distance is ``light`` (tier 1, the thesis's batch 1), ``strong`` (tier 2) or ``custom`` (the
user's instruction, tier 3); :mod:`recap.variants` defines the tiers. The LLM path asks any OpenAI-compatible endpoint; the synonym path needs no API and
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
import threading
import time
from typing import TYPE_CHECKING

from recap.errors import BadInput
from recap.rewording.base import (
    FLAG_SALVAGED,
    RecaptionConfig,
    RecaptionResult,
    Rewording,
    ask_for_list,
    check_prompt,
    check_rewordings,
    default_system_prompt,
    llm_configured,
    llm_endpoint,
    resolved_config,
)
from recap.rewording.multiturn import extract_parts, fuse_parts
from recap.rewording.synonyms import synonym_variants
from recap.variants import TIER_OF_DISTANCE

if TYPE_CHECKING:
    from recap.backends.base import AudioBackend
    from recap.config import Settings

logger = logging.getLogger(__name__)


def recaption(
    prompt: str,
    config: RecaptionConfig | None = None,
    backend: AudioBackend | None = None,
    *,
    api_key: str | None = None,
    settings: Settings | None = None,
    visitor: bool = False,
    stop: threading.Event | None = None,
    vocabulary: AudioBackend | None = None,
) -> RecaptionResult:
    """Rewords ``prompt`` ``config.n`` times at ``config.distance``.

    Args:
        prompt: The baseline prompt.
        config: How to reword; defaults to 3 light rewordings by the automatic method.
        backend: When given, each variant gets its text-embedding cosine to the baseline and
            is flagged when it is over the backend's token limit.
        api_key: A key for this call (used for the call only, never kept); without one the
            server's key is used, and only with the server's endpoint (:func:`llm_endpoint`).
        settings: The server's settings; None reads the environment.
        visitor: The call comes from a visitor of the web app (:func:`llm_endpoint`).
        stop: Set it to abandon the LLM call at once.
        vocabulary: A model whose tokenizer says which words it can read, when ``backend`` is not
            given (the web app rewords without running the text encoder); the synonym rewriter
            then proposes only those words.

    Returns:
        The result; its ``variants`` may be fewer than ``n`` when repeats were dropped.

    Raises:
        BadInput: bad prompt or config, or an endpoint the server's policy refuses.
        LLMError: the LLM call failed (``reason`` says why; no key in any message).
        Cancelled: ``stop`` was set.
        WordNetMissingError: the synonym rewriter has no WordNet (message says what to install).
    """
    # 1. Check inputs and choose the method
    prompt = check_prompt(prompt)
    config = config or RecaptionConfig()
    config.validate()
    method = config.method
    if method == "auto":
        method = "llm" if llm_configured(config, api_key, settings) else "synonym"
        if method == "synonym":
            logger.info("no LLM endpoint configured; using the offline synonym rewriter")
            if config.distance == "custom":
                raise BadInput("distance 'custom' needs an LLM endpoint; none is configured")
    t0 = time.monotonic()

    # 2. Make the rewordings
    tier = TIER_OF_DISTANCE[config.distance]
    if method == "synonym":
        # a model that reads some words as <unk> gets only words it can read
        reader = backend if backend is not None else vocabulary
        known = None if reader is None else (lambda word: not reader.unknown_words(word))
        made = synonym_variants(prompt, config.n, config.distance, config.seed, known=known)
        variants = [
            Rewording(
                v.text,
                "synonym",
                config.distance,
                tier,
                changes=[f"{c.original} -> {c.replacement}" for c in v.changes],
            )
            for v in made
        ]
        config = dataclasses.replace(config, method="synonym")  # what ran, not "auto"
        result = RecaptionResult(prompt, variants, "synonym", config)
    elif method == "multi-turn":
        access = {"api_key": api_key, "settings": settings, "visitor": visitor, "stop": stop}
        return fuse_parts(extract_parts(prompt, config, **access), config, backend, **access)
    else:
        endpoint = llm_endpoint(config, api_key, settings=settings, visitor=visitor)
        system = config.system_prompt or default_system_prompt(config.distance, config.custom_instruction)
        user = f"Sound description: {prompt}\nWrite {config.n} rewordings."
        parsed, record = ask_for_list(endpoint, config, system, user, "reword", stop)
        flags = [FLAG_SALVAGED] if parsed.salvaged else []
        variants = [Rewording(t, "llm", config.distance, tier, flags=list(flags)) for t in parsed.items]
        config = dataclasses.replace(resolved_config(config, endpoint), method="llm")
        result = RecaptionResult(prompt, variants, "llm", config, exchange=[record], system_prompt=system)

    # 3. Guards and distances
    result.variants, result.dropped = check_rewordings(prompt, result.variants, config, backend)
    result.elapsed_s = round(time.monotonic() - t0, 3)
    return result
