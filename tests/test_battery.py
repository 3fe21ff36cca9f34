"""The editability battery: templates, one grid per token, scores with and without CLAP, and the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from recap.audio_io import Clip, write_wav
from recap.tokens.battery import (
    DEFAULT_TEMPLATES,
    BatteryConfig,
    battery_variants,
    load_templates,
    per_template,
    run_battery,
    save_battery,
    score_battery,
)
from recap.generation.grid import GenerationConfig
from recap.tokens.files import LearnedToken, save_token
from recap.generation.runs import load_run

TEMPLATES = ["a {} playing in a jazz club", "a {} recorded on an old tape"]
SEEDS = [0, 1]


def tone(hz: float, sr: int = 16_000, name: str = "oud.wav") -> Clip:
    t = np.arange(sr) / sr
    return Clip((0.4 * np.sin(2 * np.pi * hz * t))[None].astype(np.float32), sr, name)


def make_token(backend, init_word: str | None = "guitar") -> LearnedToken:
    vectors = torch.randn(1, backend.embedding_dim, generator=torch.Generator().manual_seed(0))
    return LearnedToken("<oud>", vectors, meta={"model_id": backend.model_id, "model_name": backend.name,
                                                "init_word": init_word})


@pytest.fixture(scope="module")
def battery(tiny):
    token = make_token(tiny)
    config = BatteryConfig(templates=TEMPLATES, with_class_prompts=True)
    result = run_battery(tiny, token, GenerationConfig(seconds=1.0, steps=2, guidance=1.0, seeds=SEEDS), config)
    return token, config, result


def test_shipped_templates_put_the_token_in_twenty_contexts():
    templates = load_templates()
    assert len(templates) == 20 and len(set(templates)) == 20
    assert templates[:2] == ["a {} playing in a jazz club", "a {} recorded on an old tape"]
    assert all(t.count("{}") == 1 for t in templates)
    assert load_templates(DEFAULT_TEMPLATES) == templates


def test_template_files_are_checked(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("# my battery\n\na {} in a cave\n  the {} at night  \n")
    assert load_templates(good) == ["a {} in a cave", "the {} at night"]
    bad = tmp_path / "bad.txt"
    bad.write_text("a {} in a cave\na dog barking\n")
    with pytest.raises(ValueError, match=r"template 2 \('a dog barking'\) has no \{\}"):
        load_templates(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_templates(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no battery templates"):
        load_templates(tmp_path / "empty.txt")


def test_variants_fill_the_token_and_the_class_word():
    variants = battery_variants(["a {} {{odd}} here"], "<oud>", "guitar", with_class_prompts=True)
    assert [(v.label, v.prompt, v.method) for v in variants] == [
        ("edit-01", "a <oud> {{odd}} here", "token"), ("class-01", "a guitar {{odd}} here", "manual")]
    with pytest.raises(ValueError, match="need a class word"):
        battery_variants(TEMPLATES, "<oud>", None, with_class_prompts=True)


def test_battery_writes_one_clip_per_template_and_seed(battery, tiny, tmp_path):
    token, config, result = battery
    # one grid: every template and class prompt in as few denoising calls as the batch allows
    assert result.denoising_calls == 1 and len(result.clips) == 2 * len(TEMPLATES) * len(SEEDS)
    manifest = save_battery(result, tiny, token, config, tmp_path)
    run = load_run(manifest.path)
    assert run.kind == "edit-battery" and run.tokens[0]["placeholder"] == "<oud>"
    prompts = {v["label"]: (v["prompt"], v["method"]) for v in run.variants}
    for i, template in enumerate(TEMPLATES, 1):
        assert prompts[f"edit-{i:02d}"] == (template.replace("{}", "<oud>"), "token")
        assert prompts[f"class-{i:02d}"] == (template.replace("{}", "guitar"), "manual")
        for seed in SEEDS:
            assert run.audio_path(run.clip(f"edit-{i:02d}", seed)).is_file()
    assert sorted((c.variant, c.seed) for c in run.clips) == sorted((lb, s) for lb in prompts for s in SEEDS)
    assert run.extra["battery"]["templates"] == TEMPLATES and run.extra["battery"]["class_word"] == "guitar"


def test_scores_without_clap_say_so(battery, tiny, tmp_path):
    token, config, result = battery
    scores = score_battery(result, tiny, token, config, references=[tone(300)], clap_missing="not cached here")
    assert any(n == "CLAP scores skipped: not cached here." for n in scores.notes)
    assert all(r["clap_t"] is None and r["clap_a"] is None for r in scores.clips)
    assert all(-1 <= r["latent_cosine"] <= 1 for r in scores.clips)
    assert scores.summary["latent_cosine"] is not None and scores.summary["clap_t"] is None
    manifest = save_battery(result, tiny, token, config, tmp_path, scores, references=[tone(300)])
    with open(manifest.path / "battery.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.clips) and rows[0]["text"] == "a guitar playing in a jazz club"
    assert manifest.extra["battery"]["references"][0]["file"] == "reference/target-01.wav"
    assert (manifest.path / "reference" / "target-01.wav").is_file()


def test_clap_scores_with_the_class_word_and_references(battery, tiny):
    import test_clap  # the tiny CLAP built offline

    from recap.metrics.clap import ClapScorer, clap_t

    token, config, result = battery
    scorer = ClapScorer(*test_clap.tiny_clap(), name="tiny-clap")
    refs = [tone(300), tone(320, name="oud2.wav")]
    scores = score_battery(result, tiny, token, config, references=refs, clap=scorer)
    assert scores.clap_model == "tiny-clap" and not any("CLAP" in n for n in scores.notes)
    assert scores.clap_preprocessing == "recap"  # numbers compare only under the same preprocessing
    row = scores.clips[0]
    # CLAP-T reads the template with the class word, not the token CLAP cannot know
    assert row["prompt"] == "a <oud> playing in a jazz club" and row["text"] == "a guitar playing in a jazz club"
    clip = result.clip(row["label"], row["seed"])
    expected = clap_t(scorer.embed_audio([clip.audio], tiny.sample_rate), scorer.embed_text([row["text"]]))[0]
    assert row["clap_t"] == pytest.approx(expected, abs=1e-5)
    assert all(v is not None for v in scores.summary.values())
    table = per_template(scores)
    assert len(table) == len(TEMPLATES) and table[0]["clap_t_class"] is not None
    json.dumps(scores.to_json())  # stored as JSON


def test_scores_need_the_battery_that_made_the_clips(battery, tiny):
    token, _, result = battery
    with pytest.raises(ValueError, match="'edit-02' is not one of this battery's 1 templates"):
        score_battery(result, tiny, token, BatteryConfig(templates=TEMPLATES[:1]))


def test_token_without_init_word_skips_clap_t(battery, tiny):
    import test_clap

    from recap.metrics.clap import ClapScorer

    _, config, result = battery
    token = make_token(tiny, init_word=None)
    scorer = ClapScorer(*test_clap.tiny_clap(), name="tiny-clap")
    scores = score_battery(result, tiny, token, BatteryConfig(templates=TEMPLATES), clap=scorer)
    assert any("CLAP-T skipped" in n for n in scores.notes)
    assert all(r["clap_t"] is None for r in scores.clips)


def test_cli_battery(tiny, tmp_path, capsys):
    from recap.cli import main

    token_file = save_token(make_token(tiny), tmp_path / "tokens")
    templates = tmp_path / "templates.txt"
    templates.write_text("# two of mine\n" + "\n".join(TEMPLATES) + "\n")
    ref = tone(300)
    write_wav(tmp_path / "oud.wav", ref.audio, ref.sample_rate)
    code = main(["edit-battery", "--token", str(token_file), "--templates", str(templates), "--seeds", "0", "1",
                 "--seconds", "1", "--steps", "2", "--references", str(tmp_path / "oud.wav"),
                 "--out", str(tmp_path / "runs"), "--clap-model", "recap-tests/no-such-clap"])
    out = capsys.readouterr().out
    assert code == 0
    run = load_run(next((tmp_path / "runs").iterdir()))
    assert run.model["name"] == "tiny" and len(run.clips) == 4
    assert [v["prompt"] for v in run.variants] == [t.replace("{}", "<oud>") for t in TEMPLATES]
    assert "a <oud> recorded on an old tape" in out and "latent cos->token" in out
    assert "CLAP scores skipped" in out and "no-such-clap" in out
