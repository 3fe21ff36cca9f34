"""A run carries what made it: the token files it used travel in its folder and its zip, with
their hashes, and its analysis still reads them after the originals are gone."""

from __future__ import annotations

import json
import zipfile

import torch

from recap.analysis.scoring import AnalysisConfig, analyze_run
from recap.generation.grid import GenerationConfig, generate_grid, save_run
from recap.paths import sha256_file
from recap.tokens.files import LearnedToken, load_token, save_token
from recap.variants import Variant


def test_a_run_keeps_its_tokens(tiny, tmp_path):
    original = save_token(LearnedToken("<my-bell>", torch.randn(2, tiny.embedding_dim) * 0.3,
                                       {"model_id": tiny.model_id, "steps_done": 7}), tmp_path / "tokens")
    token = load_token(tiny, original)
    variants = [Variant("baseline", "a bell", "baseline", 0), Variant("ti", "a recording of <my-bell>", "token", 5)]
    result = generate_grid(tiny, variants, GenerationConfig(seconds=0.5, steps=2, seeds=[0, 1]),
                           tokens={token.placeholder: token.vectors})
    manifest = save_run(result, tiny, tmp_path / "runs", token_info=[token.summary()])
    saved = json.loads((manifest.path / "manifest.json").read_text())["tokens"]
    assert len(saved) == 1 and saved[0]["file"] == "tokens/my-bell.safetensors"
    copy = manifest.path / saved[0]["file"]
    assert saved[0]["sha256"] == sha256_file(copy) == sha256_file(original)
    assert saved[0]["model_id"] == tiny.model_id and saved[0]["steps"] == 7 and saved[0]["n_vectors"] == 2

    with_file = analyze_run(manifest.path, tiny, AnalysisConfig(reconstruction=False))
    original.unlink()
    original.with_suffix(".json").unlink()
    (manifest.path / "analysis.json").unlink(missing_ok=True)
    without_original = analyze_run(manifest.path, tiny, AnalysisConfig(reconstruction=False))
    # the copy, not plain text: the same text cosine, and no note that the token is missing
    assert [t["cosine"] for t in without_original.text] == [t["cosine"] for t in with_file.text]
    assert not any("not found" in n for n in without_original.notes)

    from recap.ui.runview import run_view, zip_run

    archive = zip_run(run_view(manifest, without_original), tmp_path / "zips", 0, 511)
    with zipfile.ZipFile(archive) as zf:
        assert f"{manifest.run_id}/tokens/my-bell.safetensors" in zf.namelist()


def test_a_rewording_edited_by_hand_becomes_manual():
    from recap.rewording.base import RecaptionConfig, mark_edited
    from recap.rewording.recaption import recaption
    from recap.ui.prompt import mark_edited_rows, result_rows
    from recap.variants import TIER_MANUAL

    result = recaption("a dog barking in the distance", RecaptionConfig(n=2, method="synonym", distance="light"))
    record = result.to_dict()
    variants = result.to_variants()
    assert [v.method for v in variants[1:]] == ["synonym", "synonym"]
    edited = [variants[0], variants[1], Variant(variants[2].label, variants[2].prompt + " at night",
                                                variants[2].method, variants[2].tier)]
    marked = mark_edited(edited, record)
    assert [(v.method, v.tier) for v in marked] == [("baseline", 0), ("synonym", 1), ("manual", TIER_MANUAL)]
    # the prompt table says the same before anything is generated
    rows = result_rows(result)
    rows[2][3] += " at night"
    assert [r[1:3] for r in mark_edited_rows(rows, record)] == [["baseline", 0], ["synonym", 1], ["manual", TIER_MANUAL]]
    assert mark_edited(variants, None) == variants  # no record: nothing to compare with
