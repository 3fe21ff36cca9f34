"""The model backends: tiny models build offline and behave like the real pipelines."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest
import torch

from recap.backends.loading import pick_dtype
from recap.backends.registry import get_spec, list_specs


def test_tiny_backends_generate_requested_length_and_rate(any_tiny):
    out = any_tiny.generate(["rain on a tin roof"], [0], seconds=1.5, steps=2, guidance=3.0)
    assert any_tiny.sample_rate == 16_000
    assert out.audio.shape == (1, any_tiny.channels, int(1.5 * 16_000))
    assert torch.isfinite(out.audio).all() and out.audio.abs().max() > 0
    assert any_tiny.random_weights and "random weights" in any_tiny.label


def test_same_seed_same_audio_and_same_noise_across_variants(any_tiny):
    a = any_tiny.generate(["rain", "a dog barking"], [7, 7], seconds=1.0, steps=3, guidance=3.0)
    b = any_tiny.generate(["rain", "a dog barking"], [7, 7], seconds=1.0, steps=3, guidance=3.0)
    torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=0)
    # both prompts started from the very same noise, and the prompts still made different clips
    torch.testing.assert_close(a.initial[0], a.initial[1], rtol=0, atol=0)
    assert not torch.allclose(a.final[0], a.final[1])
    other = any_tiny.generate(["rain"], [8], seconds=1.0, steps=3, guidance=3.0)
    assert not torch.allclose(other.initial[0], a.initial[0])


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_loop_matches_the_diffusers_pipeline(any_tiny, guidance):
    """Our denoising loop is the pipeline's: same noise and seeds -> the same latents/audio.

    On Stable Audio both run ScheduleBoundedScheduler (the backend put it into the pipeline): the
    stock scheduler builds its Brownian trees over another interval (diffusers #13274), which
    draws other noise, so the stock pipeline's clips differ by design; see the test below.
    """
    prompts = ["rain on a tin roof", "a dog barking"]
    ours = any_tiny.generate(prompts, [0, 1], seconds=1.0, steps=3, guidance=guidance)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    if any_tiny.family == "stable-audio":
        ref = any_tiny.pipe(prompt=prompts, num_inference_steps=3, guidance_scale=guidance, audio_end_in_s=1.0,
                            latents=ours.initial.clone(), generator=gens, output_type="latent").audios
        torch.testing.assert_close(ref.float(), ours.final, rtol=1e-5, atol=1e-5)
    else:
        ref = any_tiny.pipe(prompt=prompts, num_inference_steps=3, guidance_scale=guidance, audio_length_in_s=1.0,
                            latents=ours.initial.clone(), generator=gens, output_type="pt").audios
        torch.testing.assert_close(ref.float(), ours.audio[:, 0], rtol=1e-5, atol=1e-5)


def test_negative_prompt_matches_pipeline(tiny):
    ours = tiny.generate(["rain"], [3], seconds=1.0, steps=3, guidance=4.0, negative_prompt="low quality")
    ref = tiny.pipe(prompt=["rain"], negative_prompt=["low quality"], num_inference_steps=3, guidance_scale=4.0,
                    audio_end_in_s=1.0, latents=ours.initial.clone(), generator=[torch.Generator().manual_seed(3)],
                    output_type="latent").audios
    torch.testing.assert_close(ref.float(), ours.final, rtol=1e-5, atol=1e-5)


def _record_tree_queries(monkeypatch) -> list[tuple[float, float, float, float]]:
    """Every (ta, tb, tree start, tree end) torchsde's Brownian trees are asked for."""
    import torchsde

    queries: list[tuple[float, float, float, float]] = []
    original = torchsde.BrownianInterval.__call__

    def call(self, ta, tb=None, *args, **kwargs):
        queries.append((float(ta), float(tb), self._start, self._end))
        return original(self, ta, tb, *args, **kwargs)

    monkeypatch.setattr(torchsde.BrownianInterval, "__call__", call)
    return queries


def test_brownian_trees_are_never_queried_outside_their_interval(tiny, monkeypatch):
    """diffusers #13274: the stock sampler's trees span [sigma_min, sigma_max] but its schedule runs
    from 500.00006 to 0; recap's trees span the schedule, for its loop, the pipeline and a late start."""
    from diffusers import CosineDPMSolverMultistepScheduler

    from recap.backends.stable_audio import ScheduleBoundedScheduler

    # the premise: the stock schedule leaves the stock trees' interval at both ends
    stock = CosineDPMSolverMultistepScheduler.from_config(tiny.pipe.scheduler.config)
    stock.set_timesteps(4)
    assert stock.sigmas.max() > stock.config.sigma_max and stock.sigmas.min() < stock.config.sigma_min
    assert type(tiny.pipe.scheduler) is ScheduleBoundedScheduler

    queries = _record_tree_queries(monkeypatch)
    seeds = [5, 5, 6]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Should have", category=UserWarning)  # torchsde's clamping
        ours = tiny.generate(["rain", "light rain", "a dog"], seeds, seconds=1.0, steps=4, guidance=3.0)
        tiny.share_seed_noise = False  # the scheduler's own per-row trees
        try:
            tiny.generate(["rain"], [5], seconds=1.0, steps=4, guidance=3.0)
        finally:
            tiny.share_seed_noise = True
        ref = tiny.pipe(prompt=["rain", "light rain", "a dog"], num_inference_steps=4, guidance_scale=3.0,
                        audio_end_in_s=1.0, latents=ours.initial.clone(),
                        generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="latent").audios
        enc = tiny.tokenize(["rain"])
        tiny.sample(enc, None, ours.initial[:1], [5], 1.0, 4, 1.0, start_step=2,
                    start_latents=tiny.noise_to(ours.final[:1], ours.initial[:1], 4, 2))
    assert len(queries) >= 3 * 4
    outside = [q for q in queries if not (q[2] <= min(q[0], q[1]) and max(q[0], q[1]) <= q[3])]
    assert not outside, outside[:3]
    assert {0.0, float(stock.sigmas.max())} <= {t for q in queries for t in q[:2]}  # both extremes were asked for
    torch.testing.assert_close(ref.float(), ours.final, rtol=1e-5, atol=1e-5)


def test_clean_loads_print_nothing(capfd):
    """Loading `tiny` and `toy` raises no warning and prints nothing (no deprecations, no progress bars)."""
    from recap.backends.loading import load_backend

    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # also what conftest / pyproject filters would hide
        for name in ("tiny", "toy"):
            load_backend(name)
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_half_precision_keeps_the_modules_diffusers_keeps_in_fp32():
    """fp16 as from_pretrained(dtype=float16) holds it: T5's `wo` (fp16 overflow) stays fp32."""
    from recap.backends.loading import load_backend, pretrained_kwargs

    backend = load_backend("tiny", dtype="float16")
    t5 = {n: p.dtype for n, p in backend.text_encoder.named_parameters()}
    assert {d for n, d in t5.items() if ".wo." in n} == {torch.float32}
    assert {d for n, d in t5.items() if ".wo." not in n} == {torch.float16}
    assert backend.pipe.transformer.dtype == backend.pipe.vae.dtype == torch.float16
    assert pretrained_kwargs(get_spec("sao"), torch.float16) == {"dtype": torch.float16}  # not torch_dtype


def test_encode_audio_is_deterministic_and_shaped(any_tiny):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((1, 16_000))).astype(np.float32)
    z1 = any_tiny.encode_audio(audio, 16_000)
    z2 = any_tiny.encode_audio(audio, 16_000)
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)
    assert z1.shape[0] == 1 and torch.isfinite(z1).all()
    # another sample rate is resampled to the model's
    z3 = any_tiny.encode_audio(np.repeat(audio, 2, axis=1), 32_000)
    assert z3.shape == z1.shape
    decoded = any_tiny.decode(z1)
    assert decoded.shape[:2] == (1, any_tiny.channels)


def test_embed_text_is_pooled_per_prompt(any_tiny):
    e = any_tiny.embed_text(["rain on a roof", "rain on a roof", "a dog"])
    assert e.shape == (3, any_tiny.text_encoder.config.hidden_size if any_tiny.family == "audioldm" else any_tiny.text_encoder.config.d_model)
    torch.testing.assert_close(e[0], e[1])
    assert not torch.allclose(e[0], e[2])


def test_learned_tokens_apply_per_call_and_leave_shared_state_alone(any_tiny):
    vocab = len(any_tiny.tokenizer)
    vec = torch.randn(2, any_tiny.embedding_dim)
    with_token = any_tiny.embed_text(["a recording of a <zz>"], tokens={"<zz>": vec})
    again = any_tiny.embed_text(["a recording of a <zz>"], tokens={"<zz>": vec})
    other = any_tiny.embed_text(["a recording of a <zz>"], tokens={"<zz>": vec * 3})
    without = any_tiny.embed_text(["a recording of a <zz>"])
    torch.testing.assert_close(with_token, again)
    assert not torch.allclose(with_token, other)
    assert not torch.allclose(with_token, without)
    assert len(any_tiny.tokenizer) == vocab  # the shared tokenizer never learned the placeholder
    # a one-vector placeholder is a single token, where the plain tokenizer splits it into pieces
    assert any_tiny.count_tokens("a <zz>", tokens={"<zz>": vec[:1]}) < any_tiny.count_tokens("a <zz>")


def test_registry_names_the_real_pipelines():
    sao = get_spec("stabilityai/stable-audio-open-1.0")
    assert sao.pipeline == "StableAudioPipeline" and sao.gated and sao.family == "stable-audio"
    assert get_spec("sao") is sao
    ldm = get_spec("cvssp/audioldm-s-full-v2")
    assert ldm.pipeline == "AudioLDMPipeline" and ldm.family == "audioldm"
    import diffusers

    assert hasattr(diffusers, sao.pipeline) and hasattr(diffusers, ldm.pipeline)
    assert pick_dtype(torch.device("cuda")) == torch.float16
    assert pick_dtype(torch.device("cpu")) == torch.float32
    names = [s.name for s in list_specs()]
    assert {"tiny", "tiny-audioldm", "stabilityai/stable-audio-open-1.0"} <= set(names)
    with pytest.raises(ValueError, match="unknown model"):
        get_spec("no-such-model")


_LOAD = textwrap.dedent(
    """
    import sys
    from recap.errors import ModelUnavailable
    from recap.backends.loading import load_backend
    try:
        load_backend(sys.argv[1])
    except ModelUnavailable as e:
        print("UNAVAILABLE:", e)
    """
)


def _load_in_subprocess(name: str, tmp_path, **env) -> str:
    full_env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), **env}
    full_env.pop("HF_TOKEN", None)
    proc = subprocess.run([sys.executable, "-c", _LOAD, name], env=full_env, capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def test_missing_weights_offline_give_clear_error(tmp_path):
    out = _load_in_subprocess("stabilityai/stable-audio-open-1.0", tmp_path, HF_HUB_OFFLINE="1")
    assert "UNAVAILABLE:" in out
    assert "not in the local Hugging Face cache" in out and "HF_TOKEN" in out and "--model tiny" in out


class _GatedHub(http.server.BaseHTTPRequestHandler):
    """Answers every Hub request the way the Hub answers for a gated repo without access."""

    def _gated(self):
        body = b'{"error": "Access to model stabilityai/stable-audio-open-1.0 is restricted."}'
        self.send_response(401)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model is restricted and you are not in the authorized list.")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _gated

    def log_message(self, *args):
        pass


def test_gated_model_error_says_what_to_do(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = _load_in_subprocess(
            "stabilityai/stable-audio-open-1.0", tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
            HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5",
        )
    finally:
        server.shutdown()
    assert "UNAVAILABLE:" in out, out
    assert "is gated" in out and "accept its licence" in out.lower() and "HF_TOKEN" in out and "--model tiny" in out
