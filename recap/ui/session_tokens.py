"""Which of a session's learned tokens a model can use, said once for every tab.

A visitor's tokens live in their ``gr.State`` (placeholder -> ``LearnedToken``). A token fits a
model when its vectors have the width of the model's text embeddings and it was trained for that
model (or does not say which). The Prompt tab scores with the tokens that fit; Generate and
Transfer refuse a prompt that names a token made for another model, instead of reading the
placeholder as plain words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SessionTokens = Mapping[str, Any]  # placeholder -> LearnedToken


def usable_tokens(backend: Any, session: SessionTokens | None) -> dict[str, Any]:
    """placeholder -> vectors of the session's tokens that fit ``backend`` (width and model)."""
    out = {}
    for placeholder, token in (session or {}).items():
        model_id = token.meta.get("model_id")
        if token.vectors.shape[1] == backend.embedding_dim and (not model_id or model_id == backend.model_id):
            out[placeholder] = token.vectors
    return out


def check_token_use(prompts: Iterable[str], backend: Any, session: SessionTokens | None) -> None:
    """Raises ValueError when a prompt uses a session token made for another model."""
    prompts = list(prompts)
    usable = usable_tokens(backend, session)
    for placeholder, token in (session or {}).items():
        if placeholder not in usable and any(placeholder in p for p in prompts):
            raise ValueError(f"{placeholder} was trained for {token.meta.get('model_id') or 'another model'} "
                             f"(width {token.vectors.shape[1]}); {backend.name} cannot use it. Switch the model "
                             "or train the token for this one.")


def tokens_for_prompts(prompts: Iterable[str], backend: Any, session: SessionTokens | None
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The session's tokens that ``prompts`` use, for one generation call.

    Returns:
        (vectors, summaries): placeholder -> vectors to pass to the core as ``tokens=``, and each
        used token's ``summary()`` for the run's manifest, in the session's order.

    Raises:
        ValueError: a prompt uses a token made for another model (:func:`check_token_use`).
    """
    prompts = list(prompts)
    check_token_use(prompts, backend, session)
    used = {p: v for p, v in usable_tokens(backend, session).items() if any(p in text for text in prompts)}
    return used, [session[p].summary() for p in used]
