"""Checks and distances between a baseline prompt and its rewordings.

- :func:`named_entities`: names of real places, people or brands, which the thesis kept out of
  its prompts (section 4.2) and an LLM may still bring in;
- :func:`word_edit_distance`: a cheap word-level Levenshtein distance;
- :func:`text_cosines`: the thesis's text-prompt similarity (Table 5.2), the cosine between
  mean-pooled text-encoder embeddings of the backend's own encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recap.rewording.synonyms import CLOSED_CLASS_WORDS, is_word, tokenize
from recap.rewording.wordnet import WORDNET_LOCK, WordNetMissingError, load_wordnet

if TYPE_CHECKING:
    from recap.backends.base import AudioBackend


def normalise_prompt(text: str) -> str:
    """Lower-cased words, numbers and learned tokens joined by single spaces (no punctuation).

    Two prompts with the same normal form are the same prompt for the duplicate guard.
    """
    return " ".join(t.lower() for t in tokenize(text) if is_word(t) or t[:1].isdigit() or t.startswith("<"))


def named_entities(text: str) -> list[str]:
    """Words that look like names of real places, people or brands (a heuristic).

    A word WordNet knows is a name when none of its senses is a common word ("Paris",
    "Beethoven", "london" are names; "Siren", "Sun" are not). A word WordNet does not know is a
    name when it is capitalised inside a sentence ("Yamaha"). Short all-capital words (TV, DJ)
    are taken as abbreviations. Without WordNet, only capitalisation inside a sentence counts.
    """
    try:
        wn = load_wordnet()
    except WordNetMissingError:
        wn = None
    found: list[str] = []
    sentence_start = True
    with WORDNET_LOCK:
        for tok in tokenize(text):
            if _is_name(wn, tok, sentence_start):
                found.append(tok)
            if tok.strip() in (".", "!", "?"):
                sentence_start = True
            elif is_word(tok):
                sentence_start = False
    return found


def _is_name(wn: Any, tok: str, sentence_start: bool) -> bool:
    if not is_word(tok) or tok.lower() in CLOSED_CLASS_WORDS or (tok.isupper() and len(tok) <= 4):
        return False
    synsets = wn.synsets(tok) if wn is not None else []
    if synsets:
        # Known to WordNet: a name when no sense of it is a common (lower-case, non-instance) word.
        return not any(not s.instance_hypernyms() and any(lem.name().islower() for lem in s.lemmas()) for s in synsets)
    return tok[0].isupper() and not sentence_start


def word_edit_distance(a: str, b: str) -> int:
    """Levenshtein distance counted in words (case and punctuation ignored); symmetric."""
    wa, wb = normalise_prompt(a).split(), normalise_prompt(b).split()
    prev = list(range(len(wb) + 1))
    for i, x in enumerate(wa, 1):
        cur = [i]
        for j, y in enumerate(wb, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def text_cosines(backend: AudioBackend, baseline: str, texts: list[str]) -> list[float]:
    """Cosine between the baseline's and each text's mean-pooled text-encoder embedding.

    Args:
        backend: Its ``embed_text`` gives the [B, D] embeddings (one batch for all texts).
        baseline: The reference prompt.
        texts: The rewordings.

    Returns:
        One cosine in [-1, 1] per text, in order.
    """
    from recap.metrics.similarity import text_cosine_matrix

    if not texts:
        return []
    matrix = text_cosine_matrix(backend.embed_text([baseline, *texts]))
    return [float(c) for c in matrix[0, 1:]]


def text_cosine(backend: AudioBackend, a: str, b: str) -> float:
    """Text-embedding cosine of two prompts (1.0 for a prompt with itself)."""
    return text_cosines(backend, a, [b])[0]
