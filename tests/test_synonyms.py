"""The offline synonym rewriter: deterministic, content words only, strong > light."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recap.rewording.synonyms import CLOSED_CLASS_WORDS, is_word, synonym_variants, tokenize
from recap.rewording.wordnet import DEBIAN_WORDNET_DIR, WordNetMissingError, load_wordnet, wordnet_available

pytestmark = pytest.mark.skipif(not wordnet_available(), reason="WordNet not installed: apt-get install wordnet-base")

PROMPTS = [
    "Purring cat sleeping on a windowsill during rain.",
    "Distant ambulance siren approaching.",
    "Heavy rain on a tin roof with distant thunder",
    "Two dogs barking loudly in a small room",
    "A calm ocean wave sound",
    "Footsteps on gravel at night",
    "Children laughing in a park",
    "Wind howling through an old wooden house",
]


def _fixed_tokens(text: str) -> list[str]:
    """Tokens the rewriter must keep: stop-words, numbers, learned tokens, punctuation."""
    return [t.lower() for t in tokenize(text) if t.strip() and (not is_word(t) or t.lower() in CLOSED_CLASS_WORDS)]


def _is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(x == y for y in it) for x in needle)


def test_same_seed_gives_same_variants_and_another_seed_differs():
    for prompt in PROMPTS:
        for distance in ("light", "strong"):
            assert synonym_variants(prompt, 3, distance, seed=7) == synonym_variants(prompt, 3, distance, seed=7)
    runs = {tuple(v.text for p in PROMPTS for v in synonym_variants(p, 3, "strong", seed=s)) for s in range(3)}
    assert len(runs) > 1


def test_variants_differ_from_baseline_and_each_other():
    for prompt in PROMPTS:
        variants = synonym_variants(prompt, 3, "light", seed=0)
        assert variants, prompt
        texts = [v.text.lower() for v in variants]
        assert prompt.lower() not in texts
        assert len(set(texts)) == len(texts)


@pytest.mark.parametrize("distance", ["light", "strong"])
def test_only_content_words_change(distance):
    prompts = PROMPTS + [
        "3 dogs barking twice in 2 rooms at 10:30",
        "a recording of a <my-bell> ringing three times",
        "the sound of S* under a bridge",
    ]
    for prompt in prompts:
        tokens = tokenize(prompt)
        for v in synonym_variants(prompt, 3, distance, seed=1):
            # Every stop-word, number and learned token survives, in order.
            assert _is_subsequence(_fixed_tokens(prompt), [t.lower() for t in tokenize(v.text)]), (prompt, v.text)
            assert "<my-bell>" not in prompt or "<my-bell>" in v.text
            assert "S*" not in prompt or "S*" in v.text
            # The reported changes are content words, and are the whole difference.
            rebuilt = list(tokens)
            for c in v.changes:
                assert tokens[c.index] == c.original
                assert is_word(c.original) and c.original.lower() not in CLOSED_CLASS_WORDS
                assert c.original.lower() != c.replacement.lower()
                rebuilt[c.index] = c.replacement
            assert "".join(rebuilt) == v.text


def test_strong_changes_more_words_than_light():
    def mean_changes(prompt: str, distance: str) -> float:
        variants = synonym_variants(prompt, 3, distance, seed=0)
        return sum(len(v.changes) for v in variants) / len(variants)

    light = [mean_changes(p, "light") for p in PROMPTS]
    strong = [mean_changes(p, "strong") for p in PROMPTS]
    assert all(s >= lt for s, lt in zip(strong, light))
    assert sum(strong) > 1.5 * sum(light)


def test_prompt_of_only_stop_words_gives_nothing():
    assert synonym_variants("it is in the of", 3, "strong") == []


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="custom"):
        synonym_variants("rain", 1, "custom")
    with pytest.raises(ValueError, match="n must"):
        synonym_variants("rain", 0)
    with pytest.raises(ValueError, match="prompt"):
        synonym_variants("   ")


def test_missing_wordnet_says_what_to_install(tmp_path):
    with pytest.raises(WordNetMissingError) as info:
        load_wordnet(str(tmp_path))
    assert "apt-get install wordnet-base" in str(info.value)
    assert "nltk.download('wordnet')" in str(info.value)


@pytest.mark.skipif(not (DEBIAN_WORDNET_DIR / "data.noun").is_file(), reason="Debian wordnet-base not installed")
def test_debian_package_is_read_in_place_with_shipped_lexnames():
    # The package has no lexnames; the reader gets recap's copy and the lexicographer files
    # it names are right (thunder's commonest sense is an event, cat's an animal).
    wn = load_wordnet(str(DEBIAN_WORDNET_DIR))
    assert wn.synsets("thunder", "n")[0].lexname() == "noun.event"
    assert wn.synsets("cat", "n")[0].lexname() == "noun.animal"
    assert wn.synsets("rain", "v")[0].lexname() == "verb.weather"


@pytest.mark.skipif(not (DEBIAN_WORDNET_DIR / "data.noun").is_file(), reason="Debian wordnet-base not installed")
def test_an_nltk_downloaded_wordnet_is_used(tmp_path, monkeypatch):
    # The layout nltk.download("wordnet") makes: <data>/corpora/wordnet/ with lexnames in it.
    import shutil

    import nltk

    from recap.rewording import wordnet

    corpus = tmp_path / "corpora" / "wordnet"
    corpus.mkdir(parents=True)
    for f in DEBIAN_WORDNET_DIR.iterdir():
        if f.is_file() and f.name.split(".")[0] in ("data", "index", "noun", "verb", "adj", "adv", "cntlist"):
            shutil.copyfile(f, corpus / f.name)
    shutil.copyfile(wordnet.LEXNAMES_ASSET, corpus / "lexnames")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    wordnet._open_cached.cache_clear()
    try:
        wn = load_wordnet()
        assert str(corpus) in str(wn.root)
        assert synonym_variants("Heavy rain on a tin roof", 2, "light", seed=3)
    finally:
        wordnet._open_cached.cache_clear()  # later tests reopen the system copy


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_tokenize_keeps_every_character(text):
    assert "".join(tokenize(text)) == text
