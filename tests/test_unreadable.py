"""Words a model cannot read are flagged wherever a prompt is shown, scored or generated.

The `toy` model's word-level tokenizer reads every word outside its captions as <unk>: a
rewording into such words embeds like the original, and a newcomer would read text cosine 1.0
as "wording does not matter". These tests hold the flags, the vocabulary-aware synonym
rewriter and the refusal of placeholders whose token is not loaded to the real toy model.
"""

from __future__ import annotations

import json

import pytest

from recap.backends.registry import get_spec
from recap.errors import BadInput
from recap.generation.grid import GenerationConfig, generate_grid, save_run
from recap.rewording.base import FLAG_UNREADABLE, RecaptionConfig
from recap.rewording.recaption import recaption
from recap.variants import Variant


@pytest.fixture(scope="module")
def toy():
    from recap.backends.loading import load_backend

    return load_backend("toy", device="cpu")


def test_the_toy_reads_its_caption_words_and_nothing_else(toy):
    assert toy.unknown_words("a high repeating beep") == []
    assert toy.unknown_words("a dog barking on a tin roof") == ["dog", "barking", "on", "tin", "roof"]
    # the app offers only prompts the model can read
    assert all(toy.unknown_words(p) == [] for p in get_spec("toy").examples)
    assert get_spec("toy").closed_vocabulary and not get_spec("stabilityai/stable-audio-open-1.0").closed_vocabulary


def test_an_open_vocabulary_model_reads_ordinary_words(tiny):
    assert tiny.unknown_words("a dog barking on a tin roof") == []


def test_synonyms_for_a_closed_vocabulary_keep_to_its_words(toy):
    config = RecaptionConfig(n=3, method="synonym", distance="strong")
    free = recaption("a high repeating beep", config)  # no model: WordNet's words
    assert any(toy.unknown_words(v.text) for v in free.variants), "the control must propose words the toy cannot read"
    fitted = recaption("a high repeating beep", config, toy)
    assert fitted.variants, "at least one rewording within the toy's vocabulary exists"
    for v in fitted.variants:
        assert toy.unknown_words(v.text) == [] and not any(f.startswith(FLAG_UNREADABLE) for f in v.flags)


def test_rewordings_into_unreadable_words_are_flagged(toy):
    from recap.rewording.base import Rewording, check_rewordings

    kept, _ = check_rewordings("a high beep", [Rewording("a high bleep", "manual", "light", 4)],
                               RecaptionConfig(n=1, method="synonym"), toy)
    assert f"{FLAG_UNREADABLE}bleep" in kept[0].flags


def test_the_prompt_table_flags_and_recounts_edited_rows(toy):
    from recap.ui.prompt import score_rows

    rows = [["baseline", "baseline", 0, "a high beep", None, None, ""],
            ["reword-1a", "synonym", 1, "a high bleep", None, 0, ""]]
    scored = score_rows(toy, rows)
    assert scored[1][6] == f"{FLAG_UNREADABLE}bleep" and scored[1][5] == 1 and scored[0][6] == ""
    # why it matters: any two unreadable words are the same <unk> to the model
    from recap.rewording.checks import text_cosine

    assert text_cosine(toy, "a high bleep", "a high dog") == pytest.approx(1.0, abs=1e-6)
    assert text_cosine(toy, "a high beep", "a high hum") < 0.999


def test_generation_records_unreadable_words_and_refuses_missing_tokens(toy, tmp_path):
    config = GenerationConfig(seconds=0.25, steps=2, seeds=[0])
    variants = [Variant("baseline", "a high beep", "baseline", 0), Variant("v", "a high bleep", "manual", 4)]
    result = generate_grid(toy, variants, config)
    assert result.unreadable == {"v": ["bleep"]}
    manifest = save_run(result, toy, tmp_path)
    saved = json.loads((manifest.path / "manifest.json").read_text())["variants"]
    assert [v.get("unreadable") for v in saved] == [None, ["bleep"]]
    with pytest.raises(BadInput, match=r"<warble>.*not a loaded learned token"):
        generate_grid(toy, [Variant("baseline", "a recording of a <warble>", "baseline", 0)], config)


def test_the_app_rewords_and_prompts_within_the_toy_vocabulary(toy, tmp_path):
    from recap.config import Settings
    from recap.ui.context import AppContext
    from recap.ui.prompt import closed_vocabulary, example_prompt, reword

    ctx = AppContext.create(Settings(home=tmp_path, model="toy"))
    assert closed_vocabulary(ctx, "tiny") is None  # an open vocabulary: WordNet's words as they come
    vocabulary = closed_vocabulary(ctx, "toy")
    assert vocabulary is not None and toy.unknown_words(example_prompt("toy")) == []
    assert example_prompt("stabilityai/stable-audio-open-1.0") == "rain on a tin roof"
    args = (ctx.settings, [], "a high repeating beep", "synonym", "strong", "", 3, 0, "", "", "", "")
    rows, _, _ = reword(*args, vocabulary=vocabulary)
    assert len(rows) > 1 and all(toy.unknown_words(r[3]) == [] for r in rows)
    free, _, _ = reword(*args)  # the control: without the model's vocabulary WordNet proposes words it cannot read
    assert any(toy.unknown_words(r[3]) for r in free)
