"""The fast paths give the clips of the plain ones: cached text conditioning, a compiled denoiser, memory-sized batches."""

from __future__ import annotations

import pytest
import torch

from recap.backends.loading import load_backend
from recap.backends.speed import MEMORY_HEADROOM, clips_per_batch, compile_denoiser
from recap.generation.grid import GenerationConfig, generate_grid, make_variants
from recap.tokens.files import LearnedToken


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("name", ["tiny", "tiny-audioldm"])
def test_cached_text_gives_the_same_clips_and_skips_the_encoder(name):
    backend = load_backend(name)
    calls = _count_calls(backend.text_encoder)
    variants = make_variants("rain on a tin roof", ["light rain on a metal roof"])
    config = GenerationConfig(seconds=1.0, steps=3, guidance=3.0, seeds=[0, 1])
    first = generate_grid(backend, variants, config)
    after_first = calls[0]
    second = generate_grid(backend, variants, config)
    assert calls[0] == after_first, "the second grid ran the text encoder again"
    assert backend.text_cache.hits > 0
    backend.text_cache.size = 0  # the plain path
    plain = generate_grid(backend, variants, config)
    assert calls[0] > after_first
    for a, b, c in zip(first.clips, second.clips, plain.clips):
        torch.testing.assert_close(a.final, b.final, rtol=0, atol=0)
        # the cache encodes each distinct prompt once, so batch shapes differ: float32 rounding only
        torch.testing.assert_close(a.final, c.final, rtol=1e-4, atol=1e-4)


def test_cached_text_tells_learned_tokens_apart():
    """Same prompt and placeholder, other vectors: another cache entry, another clip."""
    backend = load_backend("tiny")
    dim = backend.embedding_dim
    a = LearnedToken("<x>", torch.randn(1, dim, generator=torch.Generator().manual_seed(0)))
    b = LearnedToken("<x>", torch.randn(1, dim, generator=torch.Generator().manual_seed(1)))
    out_a = backend.generate(["a recording of <x>"], [0], seconds=1.0, steps=2, guidance=3.0, tokens=a.as_tokens())
    out_b = backend.generate(["a recording of <x>"], [0], seconds=1.0, steps=2, guidance=3.0, tokens=b.as_tokens())
    assert not torch.allclose(out_a.final, out_b.final)
    again = backend.generate(["a recording of <x>"], [0], seconds=1.0, steps=2, guidance=3.0, tokens=a.as_tokens())
    torch.testing.assert_close(again.final, out_a.final, rtol=0, atol=0)


def test_training_never_reads_the_cache():
    """With gradients recorded the encoder always runs, so a trained text encoder is never stale."""
    backend = load_backend("tiny")
    enc = backend.tokenize(["rain"])
    with torch.no_grad():
        before = backend.conditioning(enc, None, 1.0, 1.0)[0]
    with torch.no_grad():
        backend.text_encoder.get_input_embeddings().weight.mul_(2.0)
    backend.text_encoder.requires_grad_(True)
    after = backend.conditioning(enc, None, 1.0, 1.0)[0]
    assert after.requires_grad and not torch.allclose(after, before)


def test_compiled_denoiser_gives_the_eager_clips():
    eager = load_backend("tiny")
    compiled = load_backend("tiny")
    # aot_eager traces and runs the captured graph without generating kernels: the graph is what
    # could be wrong, and checking it this way takes seconds on a CPU
    compile_denoiser(compiled.denoiser, backend="aot_eager")
    args = dict(seconds=1.0, steps=3, guidance=3.0)
    a = eager.generate(["rain", "a dog barking"], [0, 1], **args)
    b = compiled.generate(["rain", "a dog barking"], [0, 1], **args)
    torch.testing.assert_close(b.final, a.final, rtol=1e-5, atol=1e-5)
    assert set(compiled.parameters_snapshot()) == set(eager.parameters_snapshot())  # same module, same names


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="compile mode"):
        load_backend("tiny", compile="fastest")


def test_batch_size_follows_free_memory():
    gib = 1 << 30
    assert clips_per_batch(None, 3 * gib, 8, 32) == 8  # CPU: the cap and the grid decide
    assert clips_per_batch(80 * gib, 3 * gib, 8, 32) == 8
    assert clips_per_batch(10 * gib, 3 * gib, 8, 32) == int(10 * MEMORY_HEADROOM // 3)
    assert clips_per_batch(1 * gib, 3 * gib, 8, 32) == 1  # never zero: one clip is tried, then OOM says so
    assert clips_per_batch(80 * gib, 0, 40, 32) == 32
    with pytest.raises(ValueError):
        clips_per_batch(gib, gib, 0, 4)


def test_memory_estimates_grow_with_length_and_guidance(tiny):
    full = tiny.latent_shape(4.0, full_window=True)
    short = tiny.latent_shape(1.0, full_window=False)
    assert tiny.denoise_bytes_per_clip(full, 7.0) > tiny.denoise_bytes_per_clip(short, 7.0) > 0
    assert tiny.denoise_bytes_per_clip(full, 7.0) == 2 * tiny.denoise_bytes_per_clip(full, 1.0)
    assert tiny.decode_bytes_per_clip(full) > tiny.decode_bytes_per_clip(short) > 0


def test_one_brownian_tree_per_seed_gives_the_per_row_noise(tiny):
    """Rows sharing a seed read one shared tree: the latents equal the pipeline's one-tree-per-row run."""
    prompts, seeds = ["rain", "light rain", "a dog barking", "rain"], [5, 5, 6, 6]
    ours = tiny.generate(prompts, seeds, seconds=1.0, steps=4, guidance=3.0)
    ref = tiny.pipe(prompt=prompts, num_inference_steps=4, guidance_scale=3.0, audio_end_in_s=1.0,
                    latents=ours.initial.clone(), generator=[torch.Generator().manual_seed(s) for s in seeds],
                    output_type="latent").audios
    torch.testing.assert_close(ours.final, ref.float(), rtol=1e-5, atol=1e-5)
    tiny.share_seed_noise = False
    try:
        per_row = tiny.generate(prompts, seeds, seconds=1.0, steps=4, guidance=3.0)
    finally:
        tiny.share_seed_noise = True
    torch.testing.assert_close(ours.final, per_row.final, rtol=0, atol=0)
