"""Grid benchmark: recap's batched side-by-side grid vs the plain diffusers way, in one process.

    python bench/grid.py                      # tiny model on whatever device is here
    python bench/grid.py --full --steps 100   # full-size Stable Audio Open architecture, random weights (GPU)

Compared, for the same V variants x S seeds, seconds, steps and CFG:
  plain-seq    V*S sequential StableAudioPipeline calls (what a notebook does)
  plain-batch  one StableAudioPipeline call with every prompt and a generator list
  ours         recap.generation.grid.generate_grid at the model's full window
  ours-preview the same, denoising only the requested length (opt-in fast preview)
  ours-compiled / ours-preview-compiled  with --compile: the same after torch.compile of the DiT
                 (compilation happens in the warm-up run and is not timed)
Speed does not depend on weight values: random weights give honest timings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import H100_BF16_TFLOPS, markdown_table, max_rss_gib, median_time, peak_gib, record, reset_peak  # noqa: E402
from bench.full_size import bench_backend, dit_forward_flops  # noqa: E402
from recap.generation.grid import GenerationConfig, generate_grid, make_variants  # noqa: E402

PROMPTS = ["rain on a tin roof", "light rain on a metal roof", "a heavy downpour on sheet metal", "drizzle on a tin roof",
           "rain falling on a corrugated roof", "a storm on a metal shed", "soft rain on tin", "rain on a car roof"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full-size SAO architecture (random weights)")
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--guidance", type=float, default=7.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--compile", nargs="?", const="default", default=None,
                    help="also time ours after torch.compile (mode: default, reduce-overhead, max-autotune-no-cudagraphs)")
    args = ap.parse_args()

    backend = bench_backend(args.full, "tiny", args.dtype)
    device, dtype = backend.device, backend.dtype
    seconds = args.seconds or min(10.0, backend.max_seconds)
    pipe = backend.pipe
    variants = make_variants(PROMPTS[0], PROMPTS[1 : args.variants])
    seeds = list(range(args.seeds))
    items = [(v.prompt, s) for v in variants for s in seeds]
    n = len(items)

    def plain_sequential():
        for prompt, s in items:
            pipe(prompt=prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, audio_end_in_s=seconds,
                 generator=torch.Generator(device).manual_seed(s))

    def plain_batched():
        pipe(prompt=[p for p, _ in items], num_inference_steps=args.steps, guidance_scale=args.guidance,
             audio_end_in_s=seconds, generator=[torch.Generator(device).manual_seed(s) for _, s in items])

    def ours(preview: bool):
        cfg = GenerationConfig(seconds=seconds, steps=args.steps, guidance=args.guidance, seeds=seeds, fast_preview=preview)
        return lambda: generate_grid(backend, variants, cfg)

    runs = [("plain-batch", plain_batched), ("ours", ours(False)), ("ours-preview", ours(True))]
    if not args.skip_sequential:
        runs.insert(0, ("plain-seq", plain_sequential))
    results = {}

    def measure(runs):
        for name, fn in runs:
            reset_peak(device)
            t = median_time(fn, device, repeats=args.repeats, warmup=1)
            results[name] = (t, peak_gib(device))
            print(f"{name:22s} {t:8.3f} s  peak {results[name][1] or 0:.2f} GiB", flush=True)

    measure(runs)
    if args.compile:
        # after the eager runs: compiling changes the module in place
        from recap.backends.speed import compile_denoiser

        compile_denoiser(pipe.transformer, mode=None if args.compile == "default" else args.compile)
        measure([("ours-compiled", ours(False)), ("ours-preview-compiled", ours(True))])

    text_tokens = backend.tokenizer.model_max_length
    cfg_mult = 2 if args.guidance > 1 else 1
    full_frames = backend.latent_shape(seconds, True)[-1]
    prev_frames = backend.latent_shape(seconds, False)[-1]
    flops_full = args.steps * dit_forward_flops(pipe.transformer, full_frames, text_tokens, n * cfg_mult)
    flops_prev = args.steps * dit_forward_flops(pipe.transformer, prev_frames, text_tokens, n * cfg_mult)
    base = results.get("plain-seq", results["plain-batch"])[0]
    rows = []
    for name, (t, peak) in results.items():
        flops = flops_prev if name.startswith("ours-preview") else flops_full
        rows.append([name, t, base / t, flops / t / 1e12, (flops / (H100_BF16_TFLOPS * 1e12)) if device.type == "cuda" else None, peak])
    table = markdown_table(
        ["path", "seconds (median)", f"speed-up vs {'plain-seq' if 'plain-seq' in results else 'plain-batch'}",
         "achieved TFLOP/s", "H100 FLOP floor (s)", "peak GiB"], rows)
    print(table)
    model = "full-size SAO architecture, random weights" if args.full else "tiny (random weights)"
    notes = (f"{model}; {args.variants} variants x {args.seeds} seeds = {n} clips of {seconds:g} s, {args.steps} steps, "
             f"CFG {args.guidance}, dtype {str(dtype).replace('torch.', '')}; max RSS {max_rss_gib():.2f} GiB. "
             "ours-preview denoises only the requested length (a fast preview; fidelity not guaranteed)."
             + (f" Compiled rows: torch.compile mode {args.compile}." if args.compile else ""))
    print(notes)
    if not args.no_record:
        record(f"grid — {model}", table, notes)


if __name__ == "__main__":
    main()
