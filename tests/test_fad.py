"""FAD and KAD (recap.metrics.fad) on embeddings with known distances, and `recap fad` on a tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from recap.audio_io import load_audio, write_wav
from recap.cli import main
from recap.generation.grid import GenerationConfig, Variant, generate_grid, save_run
from recap.generation.runs import load_run
from recap.metrics.clap import ClapScorer
from recap.metrics.fad import (EMBEDDINGS, KAD_SCALE, embed_clips, fad, frechet_distance,
                               frechet_distance_from_statistics, kad, kernel_audio_distance, latent_vector,
                               median_pairwise_distance)
from recap.tokens.files import LearnedToken, save_token
from test_clap import tiny_fused_clap

D = 8


def gaussian(n: int, seed: int, mean: float | np.ndarray = 0.0, scale: float = 1.0) -> np.ndarray:
    return mean + scale * np.random.default_rng(seed).standard_normal((n, D))


# ----------------------------------------------------------------------------- FAD
def test_fad_of_gaussians_matches_the_closed_form():
    mu = np.linspace(-1, 1, D)
    # exact: N(0, I) vs N(mu, s^2 I) is ||mu||^2 + D (1 - s)^2; diagonal covariances in general
    # sum (sqrt(a_i) - sqrt(b_i))^2
    assert frechet_distance_from_statistics(np.zeros(D), np.eye(D), mu, 9 * np.eye(D)) == pytest.approx(mu @ mu + 4 * D)
    a, b = np.arange(1.0, D + 1), np.full(D, 2.0)
    assert frechet_distance_from_statistics(np.zeros(D), np.diag(a), np.zeros(D), np.diag(b)) == pytest.approx(
        np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    # from samples: a mean shift of unit Gaussians is ||mu||^2 (up to sampling error at n = 4000)
    x, y = gaussian(4000, 0), gaussian(4000, 1, mean=mu)
    assert frechet_distance(x, y) == pytest.approx(mu @ mu, abs=0.08)
    assert frechet_distance(x, gaussian(4000, 2, scale=2.0)) == pytest.approx(D * (2 - 1) ** 2, rel=0.05)
    # identical sets are at distance 0, and the distance is symmetric
    assert abs(frechet_distance(x, x)) < 1e-8
    assert frechet_distance(y, x) == pytest.approx(frechet_distance(x, y), rel=1e-9)


def test_fad_with_fewer_clips_than_dimensions_is_finite_and_warned():
    result = fad(gaussian(5, 0), gaussian(6, 1), "vae-latent")
    assert math.isfinite(result.value) and result.value > 0
    assert (result.n_generated, result.n_reference, result.metric) == (5, 6, "FAD")
    assert "singular" in result.warning and "KAD" in result.warning
    assert result.embedding == EMBEDDINGS["vae-latent"] and "not comparable" in result.embedding
    assert "fewer than 50" in fad(gaussian(20, 0), gaussian(60, 1), "x").warning
    assert fad(gaussian(60, 0), gaussian(60, 1), "x").warning == ""
    with pytest.raises(ValueError, match="at least 2 generated"):
        fad(gaussian(1, 0), gaussian(5, 1), "x")
    with pytest.raises(ValueError, match="width"):
        frechet_distance(gaussian(5, 0), np.zeros((5, D + 1)))


# ----------------------------------------------------------------------------- KAD
def test_kad_follows_kadtks_definition_by_hand():
    # 1-D sets g = {0, 1}, r = {0, 2}; bandwidth = median distance within g = 1, gamma = 1 / (2 + 1e-8)
    g, r = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    gamma = 1 / (2 + 1e-8)
    k = lambda d2: math.exp(-gamma * d2)  # noqa: E731
    k_gg, k_rr = k(1), k(4)  # the one distinct pair in each set (the diagonal is left out)
    k_gr = (k(0) + k(4) + k(1) + k(1)) / 4
    assert kernel_audio_distance(g, r) == pytest.approx(KAD_SCALE * (k_gg + k_rr - 2 * k_gr), rel=1e-12)
    assert KAD_SCALE == 100
    # the median of an even number of pairs is the lower middle value (as torch.median): points 0, 1, 3, 7
    # have distances 1 2 3 4 6 7 -> 3, not 3.5
    assert median_pairwise_distance(np.array([[0.0], [1.0], [3.0], [7.0]])) == 3.0
    result = kad(g, r, "clap-paper")
    assert result.bandwidth == 1.0 and result.value == pytest.approx(kernel_audio_distance(g, r))


def test_kad_is_unbiased_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    h = math.sqrt(2 * D)  # a fixed bandwidth makes the estimator exactly unbiased
    same = np.array([kernel_audio_distance(rng.standard_normal((5, D)), rng.standard_normal((5, D)), bandwidth=h)
                     for _ in range(1500)])
    se = same.std() / math.sqrt(same.size)
    assert abs(same.mean()) < 3.5 * se and abs(same.mean()) < 0.05 * same.std()
    # the biased (V-statistic) estimate, diagonals kept, would sit far above 0 at n = 5
    assert same.std() > 1.0
    # with kadtk's median heuristic the mean stays close to 0 against the spread
    heuristic = np.array([kernel_audio_distance(rng.standard_normal((5, D)), rng.standard_normal((5, D)))
                          for _ in range(1500)])
    assert abs(heuristic.mean()) < 0.1 * heuristic.std()
    shifted = np.array([kernel_audio_distance(rng.standard_normal((5, D)) + 1.0, rng.standard_normal((5, D)))
                        for _ in range(300)])
    assert shifted.mean() > 10 * shifted.std() / math.sqrt(shifted.size) and shifted.mean() > 5
    # small sets are measured, with a warning; 10 clips each are enough to drop it
    assert "under 10 clips" in kad(gaussian(5, 0), gaussian(5, 1), "x").warning
    assert kad(gaussian(10, 0), gaussian(10, 1), "x").warning == ""


# ----------------------------------------------------------------------------- embeddings
def test_clap_paper_and_latent_embeddings_of_clips(tiny):
    clips = [(0.1 * np.random.default_rng(s).standard_normal((1, 8000))).astype(np.float32) for s in range(4)]
    model, processor = tiny_fused_clap()
    scorer = ClapScorer(model, processor, name="tiny-fused", preprocessing="stable-audio-metrics")
    emb = embed_clips(clips, 16_000, "clap-paper", scorer=scorer)
    assert emb.shape == (4, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[1], scorer.embed_audio([clips[1]], 16_000)[0].numpy(), atol=1e-6)
    assert math.isfinite(kad(emb[:2], emb[2:], "clap-paper").value)

    lat = embed_clips(clips, 16_000, "vae-latent", backend=tiny)
    z = tiny.encode_audio(clips[0], 16_000)
    np.testing.assert_allclose(lat[0], z.double().mean(dim=2).reshape(-1).numpy(), rtol=1e-6)
    assert lat.shape == (4, latent_vector(z).shape[1])
    with pytest.raises(ValueError, match="needs a loaded CLAP"):
        embed_clips(clips, 16_000, "clap")
    with pytest.raises(ValueError, match="unknown embedding"):
        embed_clips(clips, 16_000, "openl3")


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    variants = [Variant("baseline", "rain on a tin roof", "baseline", 0), Variant("reword", "light rain", "synonym", 1)]
    result = generate_grid(tiny, variants, GenerationConfig(seconds=1.0, steps=2, seeds=[0, 1, 2]))
    return save_run(result, tiny, tmp_path_factory.mktemp("runs")).path


def reference_folder(path, n: int, sr: int = 22_050):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = np.arange(sr) / sr
        write_wav(path / f"ref{i}.wav", (0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t))[None].astype(np.float32), sr)
    return path


def test_cli_fad_on_a_run_with_vae_latents(run_dir, tiny, tmp_path, capsys):
    refs = reference_folder(tmp_path / "refs", 4)
    out = tmp_path / "fad.json"
    assert main(["fad", str(run_dir), "--reference", str(refs), "--embedding", "vae-latent", "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "reword" in printed.out and "all clips" in printed.out and "not comparable" in printed.out
    assert "warning: FAD from 3 generated / 4 reference clips" in printed.err
    data = json.loads(out.read_text())
    assert data["embedding"] == "vae-latent" and data["clap"] is None
    assert [r["group"] for r in data["results"]] == ["baseline", "reword", "all clips"]
    assert [r["n"] for r in data["results"]] == [3, 3, 6]
    # the numbers are the documented ones of the clips' pooled latents
    run = load_run(run_dir)
    gen = [load_audio(run.audio_path(c)) for c in run.clips if c.variant == "reword"]
    ref = [load_audio(p) for p in sorted(refs.iterdir())]
    g = embed_clips([c.audio for c in gen], gen[0].sample_rate, "vae-latent", backend=tiny)
    r = embed_clips([c.audio for c in ref], 22_050, "vae-latent", backend=tiny)
    row = data["results"][1]
    assert row["fad"]["value"] == pytest.approx(frechet_distance(g, r), rel=1e-6)
    assert row["kad"]["value"] == pytest.approx(kernel_audio_distance(g, r), rel=1e-6)
    assert row["kad"]["warning"] and row["fad"]["n_reference"] == 4


def test_cli_reference_can_be_a_tokens_training_clips(run_dir, tiny, tmp_path, recap_home, capsys):
    tokens = recap_home / "tokens"
    reference_folder(tokens, 2)
    save_token(LearnedToken("<bell>", torch.randn(1, tiny.embedding_dim), {"clip_names": ["ref0.wav", "ref1.wav"]}),
               tokens)
    assert main(["fad", str(run_dir), "--reference", "<bell>", "--embedding", "vae-latent"]) == 0
    assert "training clip(s) of token <bell>" in capsys.readouterr().out
    (tokens / "ref1.wav").unlink()
    assert main(["fad", str(run_dir), "--reference", "<bell>", "--embedding", "vae-latent"]) == 2
    err = capsys.readouterr().err
    assert "ref1.wav" in err and "--clips-dir" in err and "Traceback" not in err


@pytest.mark.parametrize("case", ["missing folder", "one clip", "no clap", "no run"])
def test_cli_bad_inputs_give_one_sentence(case, run_dir, tmp_path, capsys):
    args = ["fad", str(run_dir), "--reference", str(reference_folder(tmp_path / "refs", 2)), "--embedding", "vae-latent"]
    if case == "missing folder":
        args[3] = str(tmp_path / "nowhere")
        expected = "nowhere' is neither a folder nor a learned token"
    elif case == "one clip":
        args[3] = str(reference_folder(tmp_path / "one", 1))
        expected = "1 clip; FAD and KAD need at least 2"
    elif case == "no clap":
        (tmp_path / "empty").mkdir()
        args[-1:] = ["clap-paper", "--clap-model", str(tmp_path / "empty")]
        expected = "could not be loaded"
    else:
        args[1] = "no-such-run"
        expected = "'no-such-run' is neither a run folder nor the id of a run"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    if case == "no clap":
        assert "--embedding vae-latent" in err
