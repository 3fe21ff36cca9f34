"""Offline rewording with WordNet synonyms: the thesis's "basic rewording with synonymous terms".

Needs no API. Each content word (noun, verb, adjective, adverb) may be swapped for a WordNet
synonym of the same part of speech, re-inflected to the original's form. Stop-words, numbers,
learned tokens (``<my-bell>``, ``S*``) and capitalised names are never touched. ``light``
changes about a quarter of the content words, using the most common sense only; ``strong``
changes about three quarters and also draws on other senses, broader terms (hypernyms) and
similar adjectives. The same prompt, distance and seed always give the same variants.

WordNet is found and opened by :mod:`recap.rewording.wordnet`.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from recap.rewording.wordnet import WORDNET_LOCK, load_wordnet
from recap.variants import SYNONYM_DISTANCES

logger = logging.getLogger(__name__)

# Share of the replaceable words each distance changes (at least one / two words).
_SHARE = {"light": 0.25, "strong": 0.75}
_MIN_CHANGES = {"light": 1, "strong": 2}
# How many of the best-ranked synonyms a choice is drawn from: light stays with the common ones.
_TOP_K = {"light": 3, "strong": 8}
_TRIES_PER_VARIANT = 12

# Closed-class words: never content, never changed. Kept short and explicit on purpose (no
# tagger download): determiners, pronouns, prepositions, conjunctions, auxiliaries, modals,
# quantifiers, a few function adverbs, and number words.
CLOSED_CLASS_WORDS = frozenset(
    """a an the this that these those some any each every either neither no none all both half
    my your his her its our their mine yours hers ours theirs whose which what who whom whoever
    i me you he him she it we us they them myself yourself himself herself itself ourselves
    themselves one ones someone something anyone anything everyone everything nobody nothing
    of in on at by for with without from to into onto upon over under above below across
    through throughout between among amid amidst around about against along alongside behind
    beneath beside besides beyond during inside outside near past since till until toward
    towards via within off out up down per than like unlike as
    and or but nor so yet if then else when while whilst where whereas because although though
    unless whether after before once
    be is are was were been being am have has had having do does did doing done
    will would shall should can could may might must ought
    not n't very too also just only even still again ever never always often here there now
    more most less least much many few several such same other another own
    how why
    zero two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
    hundred thousand million billion first second third fourth fifth sixth seventh eighth
    ninth tenth twice thrice dozen times""".split()
)

# A learned token in angle brackets, an alphabetic word (inner ' or - allowed), a number, or
# any other single character; whitespace runs are kept so the text can be rebuilt exactly.
_TOKEN_RE = re.compile(r"<[^<>\s]+>|[A-Za-z]+(?:['’-][A-Za-z]+)*|\d[\d.,:/]*|\s+|.", re.S)
_WORD_RE = re.compile(r"[A-Za-z]+")
_SENTENCE_END = {".", "!", "?"}
_VOWELS = set("aeiou")


@dataclass(frozen=True)
class WordChange:
    """One swapped word: token position in the prompt, the original, its replacement, its POS."""

    index: int
    original: str
    replacement: str
    pos: str


@dataclass(frozen=True)
class SynonymVariant:
    """A reworded prompt and the words that were changed to make it."""

    text: str
    changes: tuple[WordChange, ...]


# --------------------------------------------------------------------------------------------
# Words: which can change, and to what


def tokenize(text: str) -> list[str]:
    """Splits text into word, number, learned-token, whitespace and punctuation tokens.

    ``"".join(tokenize(text)) == text`` always holds.
    """
    return _TOKEN_RE.findall(text)


def is_word(token: str) -> bool:
    """True for an alphabetic word token (not a number, learned token or punctuation)."""
    return bool(token) and token[0].isalpha() and not token.startswith("<")


def is_content_word(token: str) -> bool:
    """True for a word that may be changed: alphabetic, not a closed-class word."""
    return is_word(token) and token.lower() not in CLOSED_CLASS_WORDS


def _protected(tokens: list[str], i: int, sentence_start: bool) -> bool:
    tok = tokens[i]
    if not is_content_word(tok) or "-" in tok or "'" in tok or "’" in tok:
        return True
    if i + 1 < len(tokens) and tokens[i + 1] == "*":  # learned token written "S*"
        return True
    if len(tok) > 1 and tok.isupper():  # acronym
        return True
    # A capitalised word inside a sentence is a name; names stay as they are.
    return tok[0].isupper() and not sentence_start


def _pos_options(wn: Any, word: str) -> dict[str, tuple[str, int]]:
    """POS -> (lemma, how often that lemma is used in that POS) for every POS WordNet knows."""
    out: dict[str, tuple[str, int]] = {}
    for pos in ("n", "v", "a", "r"):
        lemma = wn.morphy(word, pos)
        if lemma is None:
            continue
        count = sum(lem.count() for s in wn.synsets(lemma, pos) for lem in s.lemmas() if lem.name().lower() == lemma)
        out[pos] = (lemma, count)
    return out


def _choose_pos(options: dict[str, tuple[str, int]], word: str, prev: str | None, next_opts: dict) -> str:
    """Picks the likely POS from WordNet's options and the neighbouring words (no tagger)."""
    prev_l = (prev or "").lower()
    if "r" in options and word.endswith("ly"):
        return "r"
    if "v" in options and prev_l == "to":
        return "v"
    if prev_l in {"a", "an", "the", "this", "that", "my", "your", "his", "her", "its", "our", "their"}:
        # After a determiner: an adjective when a noun follows, else a noun.
        if "a" in options and "n" in next_opts:
            return "a"
        if "n" in options:
            return "n"
    if "v" in options and word.endswith(("ing", "ed")):
        return "v"
    order = {"n": 0, "v": 1, "a": 2, "r": 3}
    return max(options, key=lambda p: (options[p][1], -order[p]))


def _candidates(wn: Any, lemma: str, pos: str, distance: str) -> list[str]:
    """Synonyms of ``lemma`` in ``pos``, most used first; broader for ``strong``.

    Senses are kept to the lexicographer file of the most common one (``noun.event`` for
    "thunder"), so a strong rewording stays with the sound and does not wander off into a rare
    unrelated sense (the heroin of "thunder" is ``noun.artifact``).
    """
    synsets = wn.synsets(lemma, pos)
    if not synsets:
        return []
    same_file = [s for s in synsets[:3] if s.lexname() == synsets[0].lexname()]
    if distance == "light":
        # The commonest sense; the next one of the same kind only when the first has no synonym.
        pools = [same_file[:1], same_file[1:2]]
    else:
        related = synsets[0].hypernyms() if pos in ("n", "v") else synsets[0].similar_tos()
        pools = [same_file + related]
    for pool in pools:
        scores: dict[str, int] = {}
        for s in pool:
            for lem in s.lemmas():
                name = lem.name()
                if name.lower() == lemma or not re.fullmatch(r"[a-z]+(?:_[a-z]+)?", name):
                    continue  # same word, proper noun, or odd spelling
                if "_" in name and name.rsplit("_", 1)[1] in CLOSED_CLASS_WORDS:
                    continue  # phrasal verbs ("impinge on") break the sentence around them
                scores[name] = max(scores.get(name, 0), lem.count() + 1)
        if scores:
            return sorted(scores, key=lambda n: (-scores[n], n))
    return []


def _irregular_bases(wn: Any) -> set[str]:
    # Verbs whose past forms are irregular: regular "-ed" rules would misspell them.
    exc = wn._exception_map.get("v", {})  # nltk keeps the *.exc files here
    return {base for bases in exc.values() for base in bases}


def _double_final(word: str) -> bool:
    return (
        len(word) in (3, 4)
        and word[-1] not in _VOWELS | {"w", "x", "y"}
        and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
    )


def _inflect_one(word: str, form: str) -> str:
    if form in ("plural", "3sg"):
        if word.endswith(("s", "x", "z", "ch", "sh")):
            return word + "es"
        if word.endswith("y") and word[-2:-1] not in _VOWELS:
            return word[:-1] + "ies"
        return word + "s"
    if form == "ing":
        if word.endswith("ie"):
            return word[:-2] + "ying"
        if word.endswith("e") and not word.endswith(("ee", "ye", "oe")):
            return word[:-1] + "ing"
        return word + word[-1] + "ing" if _double_final(word) else word + "ing"
    if form == "ed":
        if word.endswith("e"):
            return word + "d"
        if word.endswith("y") and word[-2:-1] not in _VOWELS:
            return word[:-1] + "ied"
        return word + word[-1] + "ed" if _double_final(word) else word + "ed"
    return word


def _form(word: str, lemma: str, pos: str) -> str | None:
    """The inflection that turns ``lemma`` into ``word``; None when it is irregular."""
    w = word.lower()
    if w == lemma:
        return "base"
    if pos == "n" and w.endswith("s"):
        return "plural"
    if pos == "v":
        for suffix, form in (("ing", "ing"), ("ed", "ed"), ("s", "3sg")):
            if w.endswith(suffix):
                return form
    return None


def _inflect(candidate: str, form: str, pos: str) -> str:
    parts = candidate.split("_")
    # Verbs inflect their head (first word: "make noise" -> "making noise"), nouns their last.
    at = 0 if pos == "v" else len(parts) - 1
    parts[at] = _inflect_one(parts[at], form)
    return " ".join(parts)


def _match_case(new: str, old: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


@dataclass(frozen=True)
class _Slot:
    index: int
    pos: str
    choices: tuple[str, ...]  # already inflected


def _slots(wn: Any, tokens: list[str], distance: str, known: Callable[[str], bool] | None = None) -> list[_Slot]:
    """Every word position that can change, with its inflected replacement choices (only those
    ``known`` accepts, when given)."""
    irregular = _irregular_bases(wn)
    # Learned tokens count as words here so that the word before one is its neighbour.
    word_idx = [i for i, t in enumerate(tokens) if is_word(t) or t.startswith("<") or t.strip() in _SENTENCE_END]
    opts_cache: dict[str, dict] = {}

    def options(tok: str) -> dict:
        key = tok.lower()
        if key not in opts_cache:
            opts_cache[key] = _pos_options(wn, key) if is_content_word(tok) else {}
        return opts_cache[key]

    slots = []
    sentence_start = True
    for k, i in enumerate(word_idx):
        tok = tokens[i]
        if tok.strip() in _SENTENCE_END:
            sentence_start = True
            continue
        starts, sentence_start = sentence_start, False
        if tok.startswith("<") or _protected(tokens, i, starts) or not options(tok):
            continue
        prev = tokens[word_idx[k - 1]] if k > 0 else None
        nxt = tokens[word_idx[k + 1]] if k + 1 < len(word_idx) else None
        pos = _choose_pos(options(tok), tok.lower(), prev, options(nxt) if nxt and is_word(nxt) else {})
        lemma = options(tok)[pos][0]
        form = _form(tok, lemma, pos)
        if form is None:
            continue
        choices = []
        for cand in _candidates(wn, lemma, pos, distance)[: _TOP_K[distance]]:
            if form == "ed" and cand.split("_")[0] in irregular:
                continue
            choice = _match_case(_inflect(cand, form, pos) if form != "base" else cand.replace("_", " "), tok)
            if known is None or known(choice):
                choices.append(choice)
        if choices:
            slots.append(_Slot(i, pos, tuple(choices)))
    return slots


def _n_changes(distance: str, available: int) -> int:
    want = max(_MIN_CHANGES[distance], round(_SHARE[distance] * available))
    return min(want, available)


def _rng(seed: int, distance: str, prompt: str) -> random.Random:
    # str hashes are salted per process; a digest keeps the choice the same on every run.
    digest = hashlib.sha256(f"{seed}\x1f{distance}\x1f{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _norm(text: str) -> str:
    return " ".join(_WORD_RE.findall(text.lower()))


def synonym_variants(
    prompt: str, n: int = 3, distance: str = "light", seed: int = 0, *, wordnet_root: str | None = None,
    known: Callable[[str], bool] | None = None,
) -> list[SynonymVariant]:
    """Rewords ``prompt`` ``n`` times by swapping content words for WordNet synonyms.

    Args:
        prompt: The baseline prompt.
        n: How many variants to make (>= 1). Fewer come back when the prompt has too few
            replaceable words to make ``n`` different ones.
        distance: ``"light"`` (about a quarter of the content words, common senses only) or
            ``"strong"`` (about three quarters, wider synonyms).
        seed: The same (prompt, n, distance, seed) always gives the same variants.
        wordnet_root: Folder with a WordNet database, else it is looked for (:func:`recap.rewording.wordnet.load_wordnet`).
        known: Accepts a replacement the model can read; a model with a closed vocabulary (the
            `toy` model) reads other words as <unk>, and a rewording into them changes nothing.

    Returns:
        Variants, each different from the baseline and from each other (compared on their
        lower-cased words).

    Raises:
        ValueError: on an empty prompt, ``n < 1`` or an unknown distance.
        WordNetMissingError: when WordNet is not installed.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string; got {prompt!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    if distance not in SYNONYM_DISTANCES:
        raise ValueError(f"distance must be one of {SYNONYM_DISTANCES} for the synonym rewriter; got {distance!r}")
    wn = load_wordnet(wordnet_root)
    tokens = tokenize(prompt)
    with WORDNET_LOCK:
        slots = _slots(wn, tokens, distance, known)
    if not slots:
        logger.warning("no word of %r has a WordNet synonym; nothing to reword", prompt)
        return []
    rng = _rng(seed, distance, prompt)
    seen = {_norm(prompt)}
    out: list[SynonymVariant] = []
    for _ in range(n * _TRIES_PER_VARIANT):
        if len(out) == n:
            break
        chosen = sorted(rng.sample(slots, _n_changes(distance, len(slots))), key=lambda s: s.index)
        new = list(tokens)
        changes = []
        for slot in chosen:
            new[slot.index] = rng.choice(slot.choices)
            changes.append(WordChange(slot.index, tokens[slot.index], new[slot.index], slot.pos))
        text = "".join(new)
        if _norm(text) not in seen:
            seen.add(_norm(text))
            out.append(SynonymVariant(text, tuple(changes)))
    if len(out) < n:
        logger.info("only %d different synonym variants of %r could be made (asked for %d)", len(out), prompt, n)
    return out
