"""Style transfer by partial noising: the schedule maths, the sweep's end points, its run folder and CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from recap.audio_io import Clip, load_audio, write_wav
from recap.tokens.files import LearnedToken, save_token
from recap.generation.runs import load_run
from recap.generation.transfer import TransferConfig, content_latents, noised_start, start_point, transfer
from recap.analysis.transfer_curves import curves_figure, load_transfer_curves, save_transfer, similarity_curves

PROMPT = "a recording of a bell"
SWEEP = [0.0, 0.25, 0.5, 0.75, 1.0]
SEEDS = [0, 1]


def tone(hz: float, seconds: float = 1.0, sr: int = 22_050, name: str = "tone.wav") -> Clip:
    """A pulsed tone at a rate the models do not use (the sweep must resample it)."""
    t = np.arange(int(seconds * sr)) / sr
    gate = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)
    return Clip((0.4 * gate * np.sin(2 * np.pi * hz * t))[None].astype(np.float32), sr, name)


@pytest.fixture(scope="module")
def sweeps(request):
    """One 12-step sweep per model family (enough steps that each strength of SWEEP starts at its own step), shared by the tests that only read it."""
    out = {}
    for name in ("tiny", "tiny-audioldm"):
        backend = request.getfixturevalue(name.replace("-", "_"))
        cfg = TransferConfig(strengths=SWEEP, seeds=SEEDS, seconds=1.0, steps=12, guidance=3.0)
        out[name] = transfer(backend, tone(440), PROMPT, cfg, references=[tone(660, name="ref.wav")])
    return out


@pytest.mark.parametrize("name", ["tiny", "tiny-audioldm"])
def test_strength_zero_is_the_source_and_one_is_plain_generation(sweeps, name, request):
    backend = request.getfixturevalue(name.replace("-", "_"))
    result = sweeps[name]
    z0 = result.source_latents
    assert tuple(z0.shape[1:]) == tuple(backend.latent_shape(1.0))
    for seed in SEEDS:
        # t = 0: no denoising at all, so the output is the autoencoder's reconstruction of the source
        zero = result.grid.clip("strength-0.00", seed)
        torch.testing.assert_close(zero.final, z0[0], rtol=0, atol=0)
        np.testing.assert_allclose(zero.audio, backend.decode(z0, 1.0)[0].numpy(), rtol=1e-5, atol=1e-6)
    # t = 1: exactly `generate` from the same seeds
    plain = backend.generate([PROMPT] * len(SEEDS), SEEDS, 1.0, 12, 3.0)
    for i, seed in enumerate(SEEDS):
        one = result.grid.clip("strength-1.00", seed)
        torch.testing.assert_close(one.final, plain.final[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(one.audio, plain.audio[i].numpy(), rtol=1e-4, atol=1e-5)
        # every strength of a seed starts from that seed's noise
        for s in SWEEP:
            initial = result.grid.clip(f"strength-{s:.2f}", seed).initial
            torch.testing.assert_close(initial, plain.initial[i], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["tiny", "tiny-audioldm"])
def test_outputs_move_away_from_the_source_as_strength_grows(sweeps, name, request):
    backend = request.getfixturevalue(name.replace("-", "_"))
    result = sweeps[name]
    src = content_latents(backend, result.source_latents, 1.0)[0]
    final = [np.mean([float((content_latents(backend, result.grid.clip(f"strength-{s:.2f}", k).final, 1.0) - src).norm())
                      for k in SEEDS]) for s in SWEEP]
    assert final[0] == 0.0
    assert all(a < b for a, b in zip(final, final[1:])), final
    # the reported curve measures the clip latent: each output's audio re-encoded, like the source
    def clip_latent(s: float, k: int) -> torch.Tensor:
        audio = torch.from_numpy(result.grid.clip(f"strength-{s:.2f}", k).audio)[None]
        return content_latents(backend, backend.encode_audio(audio, backend.sample_rate), 1.0)[0]

    # (on random weights re-encoding scrambles distances: the toy test checks the curve's shape)
    dist = [np.mean([float((clip_latent(s, k) - src).norm()) for k in SEEDS]) for s in SWEEP]
    curves = similarity_curves(result, backend)
    np.testing.assert_allclose([p.source_l2_raw for p in curves.points], dist, rtol=1e-5)
    assert [p.n_seeds for p in curves.points] == [2] * len(SWEEP)
    # strength 0 is the source through the autoencoder: the round trip's cosine, not the latent's own 1.0
    assert curves.points[0].source_cosine < 1.0 - 1e-4
    assert all(p.target_cosine is not None for p in curves.points)
    assert any("CLAP curves skipped" in n for n in curves.notes)


def _share(sigma: float) -> float:
    # the noise's share of the start's variance with unit-scale latents (recap's definition of strength)
    return sigma**2 / (sigma**2 + 1.0)


def test_strength_is_the_noise_share_of_the_start(tiny):
    steps = 20
    cfg = tiny.pipe.scheduler.config
    # SAO's exponential schedule: sigmas log-spaced from sigma_max down to sigma_min, then 0
    sigmas = np.exp(np.linspace(math.log(cfg.sigma_max), math.log(cfg.sigma_min), steps))
    for t in (0.2, 0.5, 0.8, 0.95):
        point = start_point(tiny, t, steps)
        k = point.start_step
        # the first step whose noise share is at most t: the one before it is noisier than asked
        assert _share(sigmas[k]) <= t < _share(sigmas[k - 1])
        assert point.sigma == pytest.approx(sigmas[k], rel=1e-5) and point.noise_share == pytest.approx(_share(sigmas[k]))
    # half noise, half source: sigma 1 on every model; the img2img step count would have started at sigma ~ 19
    assert start_point(tiny, 0.5, steps).sigma <= 1.0
    assert (start_point(tiny, 0.0, steps).steps_run, start_point(tiny, 1.0, steps).steps_run) == (0, steps)
    # below the last step's share (sigma_min 0.3: 0.083) the last step alone runs
    assert start_point(tiny, 0.05, steps).start_step == steps - 1


def test_stable_audio_start_is_the_schedules_sigma(tiny):
    steps = 5
    cfg = tiny.pipe.scheduler.config
    sigmas = np.exp(np.linspace(math.log(cfg.sigma_max), math.log(cfg.sigma_min), steps))
    x0 = torch.randn(2, *tiny.latent_shape(1.0), generator=torch.Generator().manual_seed(1)) * 0.1
    noise = tiny.initial_noise([3, 4], 1.0)
    # shares of the 5 starts: 1.0, 0.9998, 0.9934, 0.786, 0.083
    for t, k in ((0.2, 4), (0.8, 3), (0.995, 2), (0.99999, 1)):
        point = start_point(tiny, t, steps)
        assert (point.start_step, point.steps_run) == (k, steps - k)
        assert point.sigma == pytest.approx(sigmas[k], rel=1e-5)
        assert point.timestep == pytest.approx(math.atan(sigmas[k]) * 2 / math.pi, rel=1e-5)
        torch.testing.assert_close(noised_start(tiny, x0, noise, t, steps), x0 + float(sigmas[k]) * noise)
    torch.testing.assert_close(noised_start(tiny, x0, noise, 0.0, steps), x0, rtol=0, atol=0)
    torch.testing.assert_close(noised_start(tiny, x0, noise, 1.0, steps), noise * math.sqrt(cfg.sigma_max**2 + 1))


def test_stable_audio_sampler_starts_at_that_sigma(tiny):
    """The DiT first sees timestep(sigma_k) and the start latents scaled by c_in(sigma_k), then runs N - k steps."""
    steps, t = 5, 0.995  # starts at step 2 (share 0.993)
    point = start_point(tiny, t, steps)
    x0 = torch.zeros(1, *tiny.latent_shape(1.0))
    noise = tiny.initial_noise([0], 1.0)
    start = noised_start(tiny, x0, noise, t, steps)
    calls = []

    def hook(module, args, kwargs):
        calls.append((args[0].clone(), args[1].clone()))

    handle = tiny.pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        enc = tiny.tokenize([PROMPT])
        tiny.sample(enc, None, noise, [0], 1.0, steps, 1.0, start_step=point.start_step, start_latents=start)
    finally:
        handle.remove()
    assert len(calls) == point.steps_run == 3
    first_input, first_t = calls[0]
    assert float(first_t) == pytest.approx(point.timestep, rel=1e-6)
    torch.testing.assert_close(first_input, start / math.sqrt(point.sigma**2 + 1), rtol=1e-5, atol=1e-6)


def test_audioldm_start_is_ddim_forward_noising(tiny_audioldm):
    steps = 5
    scheduler = tiny_audioldm.new_scheduler()
    scheduler.set_timesteps(steps)
    x0 = torch.randn(2, *tiny_audioldm.latent_shape(1.0), generator=torch.Generator().manual_seed(1))
    noise = tiny_audioldm.initial_noise([3, 4], 1.0)
    seen = []
    handle = tiny_audioldm.pipe.unet.register_forward_pre_hook(lambda m, a: seen.append(int(a[1])))
    try:
        shares = [1 - float(scheduler.alphas_cumprod[int(t)]) for t in scheduler.timesteps]
        for t in (0.4, 0.8):
            # the first step whose noise share (1 - abar on a DDPM schedule) is at most t
            k = next(i for i, share in enumerate(shares) if share <= t)
            assert k == 0 or shares[k - 1] > t
            abar = float(scheduler.alphas_cumprod[int(scheduler.timesteps[k])])
            start = noised_start(tiny_audioldm, x0, noise, t, steps)
            torch.testing.assert_close(start, math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise)
            assert start_point(tiny_audioldm, t, steps).sigma == pytest.approx(math.sqrt((1 - abar) / abar))
            seen.clear()
            enc = tiny_audioldm.tokenize([PROMPT] * 2)
            tiny_audioldm.sample(enc, None, noise, [3, 4], 1.0, steps, 1.0, start_step=k, start_latents=start)
            assert seen == [int(x) for x in scheduler.timesteps[k:]]
    finally:
        handle.remove()


def test_bad_sweeps_are_refused(tiny):
    src = tone(440)
    for strengths, match in (([1.5], "in \\[0, 1\\], got 1.5"), ([-0.1], "got -0.1"), ([float("nan")], "got nan"),
                             ([0.4, 0.401], "repeat.*strength-0.40"), ([], "no transfer strengths")):
        with pytest.raises(ValueError, match=match):
            transfer(tiny, src, PROMPT, TransferConfig(strengths=strengths, seconds=1.0, steps=2))
    with pytest.raises(ValueError, match="seeds repeat"):
        transfer(tiny, src, PROMPT, TransferConfig(strengths=[0.5], seeds=[1, 1], seconds=1.0, steps=2))
    with pytest.raises(ValueError, match="empty prompt"):
        transfer(tiny, src, "  ", TransferConfig(strengths=[0.5], seconds=1.0, steps=2))
    with pytest.raises(ValueError, match="seconds must be in"):
        transfer(tiny, src, PROMPT, TransferConfig(strengths=[0.5], seconds=60.0, steps=2))


def test_progress_reaches_the_total_and_stop_cancels(tiny_audioldm):
    import threading

    from recap.errors import Cancelled

    calls = []
    cfg = TransferConfig(strengths=[0.0, 0.5], seeds=[0, 1], seconds=1.0, steps=2, guidance=1.0)
    transfer(tiny_audioldm, tone(440), PROMPT, cfg, progress=lambda d, t, m: calls.append((d, t)))
    assert calls[-1] == (4, 4) and all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        transfer(tiny_audioldm, tone(440), PROMPT, cfg, stop=stop)


def test_run_folder_holds_source_curves_and_figure(sweeps, tiny, tmp_path):
    import test_clap  # the tiny CLAP built offline

    from recap.metrics.clap import ClapScorer

    result = sweeps["tiny"]
    scorer = ClapScorer(*test_clap.tiny_clap(), name="tiny-clap")
    curves = similarity_curves(result, tiny, scorer)
    assert curves.clap_model == "tiny-clap" and not any("CLAP" in n for n in curves.notes)
    assert all(-1 <= p.clap_source <= 1 and -1 <= p.clap_target <= 1 for p in curves.points)
    assert len(curves_figure(curves).data) == 4  # latent and CLAP, to the source and to the token's clips
    manifest = save_transfer(result, tiny, tmp_path, curves)
    run = load_run(manifest.path)
    assert run.kind == "transfer" and len(run.clips) == len(SWEEP) * len(SEEDS)
    extra = run.extra["transfer"]
    assert extra["source"] == "reference/source.wav" and extra["references"][0]["file"] == "reference/target-01.wav"
    assert [s["steps_run"] for s in extra["starts"]] == [0, 1, 2, 3, 12]  # 12 steps; shares 0.25, 0.5, 0.75 start at the last three
    source = load_audio(run.path / extra["source"])
    assert source.sample_rate == tiny.sample_rate and source.audio.shape == result.source.audio.shape
    with open(run.path / "transfer.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == [f"strength-{s:.2f}" for s in SWEEP]
    assert load_transfer_curves(run.path) == curves
    assert (run.path / "transfer.html").is_file()


def test_cli_sweep_with_a_token(tiny, tmp_path, capsys):
    from recap.cli import main

    token = LearnedToken("<oud>", torch.randn(1, tiny.embedding_dim, generator=torch.Generator().manual_seed(0)),
                         meta={"model_id": tiny.model_id, "model_name": "tiny", "init_word": "guitar"})
    token_file = save_token(token, tmp_path / "tokens")
    src, ref = tone(440), tone(660)
    write_wav(tmp_path / "source.wav", src.audio, src.sample_rate)
    write_wav(tmp_path / "oud.wav", ref.audio, ref.sample_rate)
    code = main(["transfer", "--source", str(tmp_path / "source.wav"), "--prompt", "a recording of <oud>",
                 "--strengths", "0", "0.5", "1", "--seeds", "3", "--token", str(token_file), "--steps", "2",
                 "--references", str(tmp_path / "oud.wav"), "--out", str(tmp_path / "runs"), "--no-clap"])
    out = capsys.readouterr().out
    assert code == 0
    run = load_run(next((tmp_path / "runs").iterdir()))
    assert run.model["name"] == "tiny"  # taken from the token's metadata
    assert {v["method"] for v in run.variants} == {"token"} and run.tokens[0]["placeholder"] == "<oud>"
    assert run.config["seconds"] == pytest.approx(1.0)  # the source's length
    assert "0.50" in out and "cos->token" in out and "CLAP curves skipped: turned off" in out
    data = json.loads((run.path / "transfer.json").read_text())
    assert [p["strength"] for p in data["points"]] == [0.0, 0.5, 1.0]
    # the curves figure for a paper too
    assert (run.path / "transfer.png").read_bytes()[:4] == b"\x89PNG" and "<svg" in (run.path / "transfer.svg").read_text()
