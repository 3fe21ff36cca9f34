"""Stable Audio 3 benchmark: recap's grid vs plain ``StableAudio3Pipeline`` calls, and Textual Inversion steps/s.

    python bench/sa3.py                       # tiny-sa3 on whatever device is here (CPU figures)
    python bench/sa3.py --sampler base        # the base checkpoint's sampler: Euler steps with CFG
    python bench/sa3.py --full                # full-size SA3 Medium architecture, random weights (GPU)

Compared, for the same V variants x S seeds, seconds, steps and guidance:
  plain-seq    V*S sequential StableAudio3Pipeline calls (what a notebook does)
  plain-batch  one StableAudio3Pipeline call with every prompt and a generator list
  ours         recap.generation.grid.generate_grid (same noise and ping-pong re-noise per seed)
and Textual Inversion on the rectified-flow loss: ms per step as (T(n2) - T(n1)) / (n2 - n1), so
set-up (encoding the clips) cancels out.

The distilled sampler (SA3 Medium's, the default) runs 8 ping-pong steps at guidance 1 (no CFG);
``--sampler base`` runs the base checkpoint's deterministic Euler steps with CFG (one DiT pass per
prompt and one for the negative). SA3 has no fixed window: only the frames a clip needs are
denoised, so there is no fast-preview row as in bench/grid.py. Speed does not depend on weight
values: random weights give honest timings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    H100_BF16_TFLOPS,
    markdown_table,
    max_rss_gib,
    median_time,
    peak_gib,
    record,
    reset_peak,
    sync,
)
from bench.ti import clips  # noqa: E402
from recap.generation.grid import GenerationConfig, generate_grid, make_variants  # noqa: E402
from recap.tokens.training import TIConfig, train_token  # noqa: E402

PROMPTS = ["rain on a tin roof", "light rain on a metal roof", "a heavy downpour on sheet metal", "drizzle on a tin roof",
           "rain falling on a corrugated roof", "a storm on a metal shed", "soft rain on tin", "rain on a car roof"]
# (steps, guidance) of each checkpoint's sampler: StableAudio3Pipeline's defaults and recap's registry
SAMPLERS = {"distilled": (8, 1.0), "base": (100, 7.0)}


def full_sa3_pipeline(dtype: torch.dtype = torch.float16, distilled: bool = True):
    """Stable Audio 3 Medium's architecture with random weights, built offline.

    - DiT: ``StableAudio3DiTModel``'s defaults, which are SA3 Medium's (embed 1536, depth 24, 24 heads,
      256 latent channels, 64 memory tokens, differential attention).
    - SAME-L: ``AutoencoderSAME(encoder_channels=256, encoder_transformer_depths=(12,))`` as its docstring
      says for SA3 Medium (hop 256 x 16 = 4096 at 44.1 kHz stereo, 256 latent channels).
    - T5Gemma B encoder (``google/t5gemma-b-b-ul2``): width 768, 12 layers, 12 heads of 64, GeGLU 2048,
      256,000-row vocabulary (with a B decoder this gives the published 591.5 M parameters).
    - The duration embedder's defaults (768 wide, saturating at 384 s); the scheduler as diffusers'
      conversion script writes it.
    The tokenizer is recap's tiny Gemma-like one at SA3's 256 tokens (tokenising costs nothing here).
    """
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel, StableAudio3Pipeline
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    from recap.backends.loading import cast_pipeline, quiet_build
    from recap.backends.stable_audio3 import MAX_TEXT_TOKENS
    from recap.backends.tiny import load_tokenizer

    tokenizer = load_tokenizer("tiny-gemma")
    tokenizer.model_max_length = MAX_TEXT_TOKENS
    with quiet_build():
        module = T5GemmaModuleConfig(
            vocab_size=256_000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
            num_key_value_heads=12, head_dim=64, query_pre_attn_scalar=64,
        )
        text_encoder = T5GemmaEncoderModel(
            T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(), is_encoder_decoder=False))
        transformer = StableAudio3DiTModel()
        vae = AutoencoderSAME(encoder_channels=256, encoder_transformer_depths=(12,))
        duration_embedder = StableAudio3DurationEmbedder()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0, stochastic_sampling=distilled)
    pipe = StableAudio3Pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                duration_embedder=duration_embedder, transformer=transformer, scheduler=scheduler)
    return cast_pipeline(pipe, torch.device("cpu"), dtype)


def sa3_backend(full: bool, sampler: str, dtype_name: str | None):
    """The backend measured: full-size SA3 Medium with random weights, or tiny-sa3 (its base twin for ``base``)."""
    from recap.backends.loading import load_backend, pick_device, pick_dtype
    from recap.backends.registry import ModelDefaults, SA3_BASE_DEFAULTS, SA3_DEFAULTS
    from recap.backends.stable_audio3 import StableAudio3Backend
    from recap.backends.tiny import tiny_stable_audio3_pipeline

    device = pick_device()
    dtype = pick_dtype(device, dtype_name)
    distilled = sampler == "distilled"
    if not full and distilled:
        return load_backend("tiny-sa3", device=device, dtype=dtype)
    if full:
        name, pipe = f"sa3-medium{'' if distilled else '-base'}-full-random", full_sa3_pipeline(dtype, distilled)
        defaults = SA3_DEFAULTS if distilled else SA3_BASE_DEFAULTS
    else:
        from recap.backends.loading import cast_pipeline

        name, pipe = "tiny-sa3-base", cast_pipeline(tiny_stable_audio3_pipeline(distilled=False), torch.device("cpu"), dtype)
        defaults = ModelDefaults(seconds=2.0, steps=SAMPLERS["base"][0], guidance=SAMPLERS["base"][1])
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    backend = StableAudio3Backend(name, f"bench/{name}", pipe, device, dtype, random_weights=True)
    backend.defaults = defaults
    backend.freeze()
    return backend


def sa3_forward_flops(transformer: torch.nn.Module, frames: int, text_tokens: int, batch: int) -> float:
    """Matmul FLOPs of one SA3 DiT forward: 2*params*tokens for the block linears plus attention scores.

    Self-attention runs over the latent frames and the memory tokens; cross-attention reads the text
    tokens and the duration token. Differential attention's two score maps are counted as one (close enough).
    """
    cfg = transformer.config
    linear = sum(m.weight.numel() for m in transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear))
    tokens = frames + cfg.num_memory_tokens
    attn = 4 * tokens * tokens * cfg.embed_dim + 4 * tokens * (text_tokens + 1) * cfg.embed_dim
    return batch * (2 * linear * tokens + cfg.depth * attn)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bench_grid(backend, args, seconds: float, steps: int, guidance: float) -> tuple[str, str]:
    device, pipe = backend.device, backend.pipe
    variants = make_variants(PROMPTS[0], PROMPTS[1 : args.variants])
    seeds = list(range(args.seeds))
    items = [(v.prompt, s) for v in variants for s in seeds]

    # the pipeline's generators on the CPU, as recap's (so both draw the same noise on any device)
    def plain_sequential():
        for prompt, s in items:
            pipe(prompt=prompt, duration=seconds, num_inference_steps=steps, guidance_scale=guidance,
                 generator=torch.Generator().manual_seed(s))

    def plain_batched():
        pipe(prompt=[p for p, _ in items], duration=seconds, num_inference_steps=steps, guidance_scale=guidance,
             generator=[torch.Generator().manual_seed(s) for _, s in items])

    def ours():
        generate_grid(backend, variants, GenerationConfig(seconds=seconds, steps=steps, guidance=guidance, seeds=seeds))

    runs = [("plain-batch", plain_batched), ("ours", ours)]
    if not args.skip_sequential:
        runs.insert(0, ("plain-seq", plain_sequential))
    results = {}
    for name, fn in runs:
        reset_peak(device)
        t = median_time(fn, device, repeats=args.repeats, warmup=1)
        results[name] = (t, peak_gib(device))
        print(f"{name:12s} {t:8.3f} s", flush=True)
    frames = backend.latent_shape(seconds)[-1]
    flops = steps * sa3_forward_flops(pipe.transformer, frames, backend.max_prompt_tokens,
                                      len(items) * (2 if guidance > 1 else 1))
    base = results.get("plain-seq", results["plain-batch"])[0]
    rows = [[name, t, base / t, flops / t / 1e12, flops / (H100_BF16_TFLOPS * 1e12) if device.type == "cuda" else None,
             peak] for name, (t, peak) in results.items()]
    table = markdown_table(
        ["path", "seconds (median)", f"speed-up vs {'plain-seq' if 'plain-seq' in results else 'plain-batch'}",
         "achieved TFLOP/s", "H100 FLOP floor (s)", "peak GiB"], rows)
    notes = (f"{args.variants} variants x {args.seeds} seeds = {len(items)} clips of {seconds:g} s ({frames} latent "
             f"frames), {steps} steps, guidance {guidance:g}, median of {args.repeats} after a warm-up")
    return table, notes


def bench_ti(backend, args, seconds: float) -> tuple[str, str]:
    device = backend.device
    data = clips(backend.sample_rate, seconds)
    config = TIConfig(placeholder="<bench>", init_word=None, init="mean", batch_size=args.batch_size, seconds=seconds,
                      checkpoint_every=0)
    n1, n2 = args.ti_steps
    with tempfile.TemporaryDirectory() as tmp:
        def run(n):
            return lambda: train_token(backend, data, TIConfig(**{**config.__dict__, "steps": n}), checkpoint_dir=Path(tmp))

        run(2)()  # warm-up
        reset_peak(device)
        # medians over repeats, interleaved: on a shared machine one slow run would swing the difference
        pairs = [(timed(run(n1), device), timed(run(n2), device)) for _ in range(args.repeats)]
    per_step = (statistics.median(t2 for _, t2 in pairs) - statistics.median(t1 for t1, _ in pairs)) / (n2 - n1)
    peak = peak_gib(device)
    print(f"TI {per_step * 1000:8.1f} ms/step", flush=True)
    table = markdown_table(["trainer", "ms / step", "steps / s", "peak GiB"],
                           [["ours (new vectors only, rectified-flow loss)", per_step * 1000, 1 / per_step, peak]])
    return table, (f"batch {args.batch_size} of {seconds:g} s clips, runs of {n1} and {n2} steps timed "
                   f"{args.repeats} times each (medians)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full-size SA3 Medium architecture (random weights)")
    ap.add_argument("--sampler", choices=sorted(SAMPLERS), default="distilled")
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default: 10 s, the model's default)")
    ap.add_argument("--steps", type=int, default=None, help="default: the sampler's (8 distilled, 100 base)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4, help="Textual Inversion batch")
    ap.add_argument("--ti-steps", type=int, nargs=2, default=[5, 25], metavar=("N1", "N2"))
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--skip-grid", action="store_true")
    ap.add_argument("--skip-ti", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    backend = sa3_backend(args.full, args.sampler, args.dtype)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in backend.pipe.transformer.parameters()) / 1e9
    steps = args.steps or SAMPLERS[args.sampler][0]
    guidance = SAMPLERS[args.sampler][1]
    seconds = args.seconds or min(10.0, backend.max_seconds)
    model = (f"full-size SA3 Medium architecture ({params:.2f} B DiT), random weights" if args.full
             else f"{backend.name} (random weights)") + f", {args.sampler} sampler"
    dtype = str(backend.dtype).replace("torch.", "")

    if not args.skip_grid:
        table, notes = bench_grid(backend, args, seconds, steps, guidance)
        notes = f"{model}; {notes}; dtype {dtype}; built in {build_s:.1f} s; max RSS {max_rss_gib():.2f} GiB."
        print(table + "\n" + notes)
        if not args.no_record:
            record(f"grid — {model}", table, notes)
    if not args.skip_ti:
        table, notes = bench_ti(backend, args, seconds)
        notes = f"{model}; {notes}; dtype {dtype}; max RSS {max_rss_gib():.2f} GiB."
        print(table + "\n" + notes)
        if not args.no_record:
            record(f"textual inversion — {model}", table, notes)


if __name__ == "__main__":
    main()
