"""Textual Inversion: only the new vectors learn, the loss falls, tokens save/load/resume exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from recap.audio_io import Clip, write_wav
from recap.backends.loading import load_backend
from recap.tokens.files import TokenFileError, load_token, nearest_words, read_token_file, save_token
from recap.tokens.training import (
    TIConfig,
    evaluation_loss,
    initial_vectors,
    load_clips,
    train_token,
    training_latents,
)

SR = 16_000


def beeps(n=3, seconds=1.0):
    """n clips of one synthetic sound: a pulsed tone around 600 Hz."""
    t = np.arange(int(SR * seconds)) / SR
    gate = (np.sin(2 * np.pi * 4 * t) > 0).astype(np.float32)
    return [Clip((0.5 * gate * np.sin(2 * np.pi * (600 + 40 * i) * t))[None].astype(np.float32), SR, f"beep{i}.wav")
            for i in range(n)]


def cfg(**kw):
    base = dict(placeholder="<beep>", init_word="beep", steps=6, seconds=1.0, batch_size=2, checkpoint_every=0)
    return TIConfig(**{**base, **kw})


def test_only_the_new_vectors_change(any_tiny, tmp_path):
    before = any_tiny.parameters_snapshot()
    vocab = len(any_tiny.tokenizer)
    token = train_token(any_tiny, beeps(), cfg(), checkpoint_dir=tmp_path)
    after = any_tiny.parameters_snapshot()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []  # every embedding row and every other weight is bit-identical
    assert len(any_tiny.tokenizer) == vocab
    init = initial_vectors(any_tiny, cfg(), torch.Generator().manual_seed(0))
    assert not torch.equal(token.vectors, init)  # ... while the token did learn
    assert token.vectors.shape == (1, any_tiny.embedding_dim)


def test_loss_goes_down_on_a_fixed_toy_set(any_tiny, tmp_path):
    clips = beeps()
    config = cfg(steps=40, learning_rate=0.1)
    token = train_token(any_tiny, clips, config, checkpoint_dir=tmp_path)
    # held-out noise/timesteps (seed 1234), un-augmented latents of the same clips
    latents = training_latents(any_tiny, load_clips(any_tiny, clips), TIConfig(random_crop=False), 1.0)
    init = {"<beep>": initial_vectors(any_tiny, config, torch.Generator())}
    before = evaluation_loss(any_tiny, latents, "a recording of a <beep>", init, seconds=1.0)
    after = evaluation_loss(any_tiny, latents, "a recording of a <beep>", token.as_tokens(), seconds=1.0)
    assert after < before * (1 - 1e-5), (before, after)
    assert len(token.meta["losses"]) == 40


def test_pull_toward_init_keeps_the_token_nearer_its_init_word(tiny, tmp_path):
    init = initial_vectors(tiny, cfg(), torch.Generator().manual_seed(0))
    free = train_token(tiny, beeps(), cfg(steps=20, learning_rate=0.1), checkpoint_dir=tmp_path / "a")
    pulled = train_token(tiny, beeps(), cfg(steps=20, learning_rate=0.1, init_weight=50.0), checkpoint_dir=tmp_path / "b")
    assert (pulled.vectors - init).norm() < 0.5 * (free.vectors - init).norm()
    assert pulled.meta["config"]["init_weight"] == 50.0
    with pytest.raises(ValueError, match="init_weight"):
        train_token(tiny, beeps(), cfg(init_weight=-1.0), checkpoint_dir=tmp_path / "c")


def test_save_load_in_fresh_backend_gives_same_embedding_and_audio(any_tiny, tmp_path):
    token = train_token(any_tiny, beeps(), cfg(n_vectors=2), checkpoint_dir=tmp_path / "ck")
    path = save_token(token, tmp_path / "tokens")
    assert path.name == "beep.safetensors" and path.with_suffix(".json").is_file()
    prompt = ["a recording of a <beep> in a cave"]
    emb = any_tiny.embed_text(prompt, tokens=token.as_tokens())
    audio = any_tiny.generate(prompt, [5], seconds=1.0, steps=2, tokens=token.as_tokens()).audio

    fresh = load_backend(any_tiny.name)
    loaded = load_token(fresh, path)
    assert loaded.placeholder == "<beep>" and loaded.meta["model_id"] == any_tiny.model_id
    torch.testing.assert_close(fresh.embed_text(prompt, tokens=loaded.as_tokens()), emb, rtol=0, atol=0)
    torch.testing.assert_close(fresh.generate(prompt, [5], seconds=1.0, steps=2, tokens=loaded.as_tokens()).audio, audio, rtol=0, atol=0)


def test_resume_after_stop_equals_uninterrupted(tiny, tmp_path):
    config = cfg(steps=10, checkpoint_every=3)
    full = train_token(tiny, beeps(), config, checkpoint_dir=tmp_path / "a")

    stop = threading.Event()

    def on_step(s):
        if s.step == 4:
            stop.set()

    partial = train_token(tiny, beeps(), config, on_step=on_step, stop=stop, checkpoint_dir=tmp_path / "b")
    assert partial.meta["steps_done"] == 4 and partial.meta["complete"] is False
    resumed = train_token(tiny, beeps(), config, checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.meta["steps_done"] == 10 and resumed.meta["complete"]
    torch.testing.assert_close(resumed.vectors, full.vectors, rtol=0, atol=0)
    assert resumed.meta["losses"] == full.meta["losses"]


def test_progress_reports_and_previews(tiny, tmp_path):
    steps, previews = [], []
    train_token(tiny, beeps(), cfg(steps=4, preview_every=2, preview_steps=2), on_step=steps.append, checkpoint_dir=tmp_path,
                on_preview=previews.append)
    assert [s.step for s in steps] == [1, 2, 3, 4]
    assert [p.step for p in previews] == [2, 4]
    assert previews[0].audio.shape == (tiny.channels, SR)
    assert 0.9 < steps[0].cos_to_init <= 1.0 and steps[0].norm > 0


def test_nonsense_is_refused(any_tiny, tmp_path):
    with pytest.raises(ValueError, match="no training clips"):
        train_token(any_tiny, [], cfg(), checkpoint_dir=tmp_path)
    silent = Clip(np.zeros((1, SR), np.float32), SR, "silence.wav")
    with pytest.raises(ValueError, match="silent"):
        train_token(any_tiny, [silent], cfg(), checkpoint_dir=tmp_path)
    short = Clip(np.ones((1, 100), np.float32) * 0.1, SR, "blip.wav")
    with pytest.raises(ValueError, match="too short"):
        train_token(any_tiny, [short], cfg(), checkpoint_dir=tmp_path)
    word = next(w for w in any_tiny.tokenizer.get_vocab() if w.isalpha() and len(w) > 2)
    with pytest.raises(ValueError, match="already in the vocabulary"):
        train_token(any_tiny, beeps(), cfg(placeholder=word), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="splits into"):
        train_token(any_tiny, beeps(), cfg(init_word="xylophonequartzwaltz"), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="nothing to resume"):
        train_token(any_tiny, beeps(), cfg(), checkpoint_dir=tmp_path / "empty", resume=True)


def test_pickles_and_foreign_tokens_are_refused(tiny, tiny_audioldm, tmp_path):
    pt = tmp_path / "evil.pt"
    torch.save({"<x>": torch.zeros(1, 16)}, pt)
    with pytest.raises(TokenFileError, match="pickled files"):
        load_token(tiny, pt)
    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(pt.read_bytes())
    with pytest.raises(TokenFileError, match="refused"):
        load_token(tiny, disguised)
    wide = tmp_path / "wide.safetensors"
    save_file({"<wide>": torch.zeros(1, 768)}, str(wide))
    with pytest.raises(TokenFileError, match="width 768"):
        load_token(tiny, wide)
    token = train_token(tiny, beeps(), cfg(steps=1), checkpoint_dir=tmp_path / "ck")
    path = save_token(token, tmp_path / "tok")
    with pytest.raises(TokenFileError, match="trained for recap/tiny-stable-audio"):
        load_token(tiny_audioldm, path)


def test_a1111_safetensors_import(tiny, tmp_path):
    path = tmp_path / "my-style.safetensors"
    vec = torch.randn(2, tiny.embedding_dim)
    save_file({"emb_params": vec}, str(path))
    token = load_token(tiny, path)
    assert token.placeholder == "<my-style>" and torch.equal(token.vectors, vec)


def test_nearest_words_finds_the_init_word(tiny):
    init = initial_vectors(tiny, cfg(init_word="rain"), torch.Generator())
    words = nearest_words(tiny, init, k=3)[0]
    assert words[0][0] == "rain" and words[0][1] == pytest.approx(1.0)


@pytest.mark.slow  # three CLI processes end to end: in the bounded slow step
def test_cli_train_stop_resume_and_generate(tmp_path):
    clips = []
    for clip in beeps():
        clips.append(str(write_wav(tmp_path / clip.source, clip.audio, SR)))
    env = {**os.environ, "RECAP_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "recap", "train-token", "--model", "tiny", "--clips", *clips, "--token", "<beep>",
           "--init-word", "beep", "--steps", "400", "--seconds", "1", "--batch-size", "1", "--checkpoint-every", "5"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until training has checkpointed, then stop it as a user would (Ctrl-C)
    ck = tmp_path / "home" / "tokens" / ".checkpoints" / "beep" / "checkpoint.json"
    for line in proc.stderr:
        if ck.is_file():
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Resume with --resume" in out
    # A stopped training writes no token file (it could replace a finished one); its progress is the checkpoint.
    assert not (tmp_path / "home" / "tokens" / "beep.safetensors").exists()
    stopped_at = json.loads(ck.read_text())["step"]
    assert 5 <= stopped_at < 400

    resumed = subprocess.run([*cmd[:cmd.index("400")], str(stopped_at + 2), *cmd[cmd.index("400") + 1:], "--resume"],
                             env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert "(complete)" in resumed.stdout
    assert read_token_file(tmp_path / "home" / "tokens" / "beep.safetensors").meta["steps_done"] == stopped_at + 2
    listing = subprocess.run([sys.executable, "-m", "recap", "tokens"], env=env, capture_output=True, text=True, timeout=60)
    assert "<beep>" in listing.stdout and "recap/tiny-stable-audio" in listing.stdout
    gen = subprocess.run([sys.executable, "-m", "recap", "generate", "--model", "tiny", "--prompt", "a beep",
                          "--variant", "a recording of a <beep>", "--token", str(tmp_path / "home" / "tokens" / "beep.safetensors"),
                          "--seeds", "0", "--seconds", "1", "--steps", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr
    run_dir = next((tmp_path / "home" / "runs").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["tokens"][0]["placeholder"] == "<beep>" and manifest["variants"][1]["method"] == "token"
    assert read_token_file(tmp_path / "home" / "tokens" / "beep.safetensors").meta["clip_names"] == ["beep0.wav", "beep1.wav", "beep2.wav"]


def test_lean_trainer_matches_the_diffusers_example_way(any_tiny, tmp_path):
    """Training one small parameter gives the vector the whole-matrix-and-restore recipe gives."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.ti_plain import train_plain

    config = cfg(steps=5, learning_rate=0.05)
    ours = train_token(any_tiny, beeps(), config, checkpoint_dir=tmp_path)
    latents = training_latents(any_tiny, load_clips(any_tiny, beeps()), config, 1.0)
    plain = train_plain(any_tiny, latents, config, 1.0)
    torch.testing.assert_close(ours.vectors, plain, rtol=1e-4, atol=1e-5)


def test_resume_reads_the_step_from_the_checkpoint_file_itself(tiny, tmp_path):
    """A crash between writing the tensors and the readable json cannot pair new vectors with an old step."""
    config = cfg(steps=6, checkpoint_every=3)
    full = train_token(tiny, beeps(), config, checkpoint_dir=tmp_path / "a")
    stop = threading.Event()
    train_token(tiny, beeps(), config, on_step=lambda s: stop.set() if s.step == 3 else None, stop=stop,
                checkpoint_dir=tmp_path / "b")
    info = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    (tmp_path / "b" / "checkpoint.json").write_text(json.dumps({**info, "step": 0, "losses": []}))  # stale copy
    resumed = train_token(tiny, beeps(), config, checkpoint_dir=tmp_path / "b", resume=True)
    torch.testing.assert_close(resumed.vectors, full.vectors, rtol=0, atol=0)
    assert resumed.meta["losses"] == full.meta["losses"]
