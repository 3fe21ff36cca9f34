"""Side-by-side grids, run folders and `recap generate` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from recap.generation.grid import GenerationConfig, Variant, generate_grid, make_variants, save_run
from recap.generation.runs import list_runs, load_run

PROMPTS = ["rain on a tin roof", "light rain on a metal roof", "a dog barking", "thunder far away"]


def test_batched_grid_equals_clips_made_alone(any_tiny):
    variants = make_variants(PROMPTS[0], PROMPTS[1:3])
    cfg = GenerationConfig(seconds=1.0, steps=3, guidance=3.0, seeds=[0, 1])
    batched = generate_grid(any_tiny, variants, cfg)
    assert batched.denoising_calls == 1 and batched.batch_sizes == [6]
    alone = generate_grid(any_tiny, variants, GenerationConfig(seconds=1.0, steps=3, guidance=3.0, seeds=[0, 1], max_batch=1))
    assert alone.denoising_calls == 6
    for c in batched.clips:
        ref = alone.clip(c.variant.label, c.seed)
        np.testing.assert_allclose(c.audio, ref.audio, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(c.initial, ref.initial, rtol=0, atol=0)


def test_every_variant_of_a_seed_starts_from_the_same_noise(tiny):
    variants = make_variants(PROMPTS[0], PROMPTS[1:])
    res = generate_grid(tiny, variants, GenerationConfig(seconds=1.0, steps=2, seeds=[3, 4], max_batch=3))
    for seed in (3, 4):
        first = res.clip("baseline", seed).initial
        for v in variants[1:]:
            torch.testing.assert_close(res.clip(v.label, seed).initial, first, rtol=0, atol=0)
    assert not torch.equal(res.clip("baseline", 3).initial, res.clip("baseline", 4).initial)


def test_bad_grids_are_refused(tiny):
    cfg = GenerationConfig(seconds=1.0, steps=2)
    with pytest.raises(ValueError, match="empty prompt"):
        generate_grid(tiny, [Variant("baseline", "  ")], cfg)
    with pytest.raises(ValueError, match="limit is 1000"):
        generate_grid(tiny, [Variant("baseline", "x" * 1001)], cfg)
    with pytest.raises(ValueError, match="file-name safe"):
        generate_grid(tiny, [Variant("../etc", "rain")], cfg)
    with pytest.raises(ValueError, match="used twice"):
        generate_grid(tiny, [Variant("a", "rain"), Variant("a", "wind")], cfg)
    with pytest.raises(ValueError, match="seconds must be in"):
        generate_grid(tiny, [Variant("a", "rain")], GenerationConfig(seconds=60, steps=2))
    with pytest.raises(ValueError, match="seeds repeat"):
        generate_grid(tiny, [Variant("a", "rain")], GenerationConfig(seconds=1, steps=2, seeds=[1, 1]))


def test_stop_event_cancels(tiny):
    import threading

    from recap.errors import Cancelled

    stop = threading.Event()
    seen = []

    def progress(done, total, msg):
        seen.append(done)
        stop.set()

    with pytest.raises(Cancelled):
        generate_grid(tiny, make_variants("rain", []), GenerationConfig(seconds=1.0, steps=5), progress=progress, stop=stop)
    assert len(seen) == 1


def test_save_run_writes_complete_folder(tiny, tmp_path):
    variants = make_variants(PROMPTS[0], PROMPTS[1:2], method="synonym")
    res = generate_grid(tiny, variants, GenerationConfig(seconds=1.0, steps=2, seeds=[0, 1]))
    manifest = save_run(res, tiny, tmp_path / "runs")
    again = load_run(manifest.path)
    assert again.run_id == manifest.run_id and again.model["random_weights"] is True
    assert again.config["steps"] == 2 and again.config["guidance"] == tiny.defaults.guidance
    assert [v["method"] for v in again.variants] == ["baseline", "synonym"]
    assert len(again.clips) == 4
    for rec in again.clips:
        assert again.audio_path(rec).is_file()
        lat = load_file(str(manifest.path / rec.latents))
        torch.testing.assert_close(lat["initial"], res.clip(rec.variant, rec.seed).initial)
    assert list_runs(tmp_path / "runs")[0].run_id == manifest.run_id


def test_cli_generate_end_to_end(tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "recap", "generate", "--model", "tiny", "--prompt", PROMPTS[0],
         "--variant", PROMPTS[1], "--variant", PROMPTS[2], "--seeds", "0", "1", "--seconds", "1.5",
         "--steps", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights" in proc.stderr
    assert "6 clips in 1 denoising call" in proc.stdout
    (run_dir,) = out.iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["name"] == "tiny" and manifest["seeds"] == [0, 1]
    assert manifest["config"]["seconds"] == 1.5 and manifest["config"]["steps"] == 3
    assert [v["prompt"] for v in manifest["variants"]] == PROMPTS[:3]
    assert {"torch", "diffusers", "transformers"} <= set(manifest["versions"])
    wavs = sorted(p.name for p in (run_dir / "audio").iterdir())
    assert wavs == sorted(f"{v}__seed{s}.wav" for v in ("baseline", "variant-1", "variant-2") for s in (0, 1))


def test_cli_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "recap", "generate", "--model", "tiny", "--prompt", "", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 2 and "error: variant 'baseline' has an empty prompt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_out_of_memory_halves_the_batch_and_finishes(tiny, monkeypatch):
    """A grid that fits one clip at a time never ends in an out-of-memory crash."""
    real = tiny.generate
    calls = []

    def limited(prompts, seeds, *args, **kwargs):
        calls.append(len(prompts))
        if len(prompts) > 2:  # what the allocator raises when a batch does not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(prompts, seeds, *args, **kwargs)

    monkeypatch.setattr(tiny, "generate", limited)
    variants = make_variants(PROMPTS[0], PROMPTS[1:3])
    res = generate_grid(tiny, variants, GenerationConfig(seconds=1.0, steps=2, seeds=[0, 1]))
    assert calls[:2] == [6, 3] and max(res.batch_sizes) <= 2 and sum(res.batch_sizes) == 6
    monkeypatch.undo()
    ref = generate_grid(tiny, variants, GenerationConfig(seconds=1.0, steps=2, seeds=[0, 1]))
    for c in res.clips:
        np.testing.assert_allclose(c.audio, ref.clip(c.variant.label, c.seed).audio, rtol=1e-4, atol=1e-5)


def test_fast_preview_denoises_only_the_requested_length(tiny):
    cfg = GenerationConfig(seconds=1.0, steps=2, seeds=[0], fast_preview=True)
    res = generate_grid(tiny, make_variants("rain", []), cfg)
    full = generate_grid(tiny, make_variants("rain", []), GenerationConfig(seconds=1.0, steps=2, seeds=[0]))
    clip, ref = res.clips[0], full.clips[0]
    assert clip.audio.shape == ref.audio.shape == (tiny.channels, 16_000)
    assert clip.initial.shape[-1] < ref.initial.shape[-1] == tiny.window_frames
    # the preview starts from the leading frames of the same seed's full-window noise
    torch.testing.assert_close(clip.initial, ref.initial[..., : clip.initial.shape[-1]], rtol=0, atol=0)


def test_cli_without_model_falls_back_to_the_offline_model(tmp_path):
    """No token, no cache, no network: the default model cannot load, so the toy model is used, said plainly."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "RECAP_HOME": str(tmp_path / "home")}
    env.pop("HF_TOKEN", None)
    env.pop("RECAP_MODEL", None)
    proc = subprocess.run([sys.executable, "-m", "recap", "generate", "--prompt", "a low hum", "--seeds", "0", "--steps", "2"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "stable-audio-open-1.0 is not in the local Hugging Face cache" in proc.stderr
    assert "using the offline model `toy`" in proc.stderr and "TOY WORLD" in proc.stderr
    (run_dir,) = (tmp_path / "home" / "runs").iterdir()
    assert json.loads((run_dir / "manifest.json").read_text())["model"]["name"] == "toy"
