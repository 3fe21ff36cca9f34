"""Full-size smoke run: Stable Audio Open's architecture (random weights) through recap's own paths.

    .venv/bin/python -m bench.smoke

On the CPU, in one process: builds the full-size pipeline (bench/full_size.py: DiT 1.06 B,
Oobleck VAE, T5-base), generates a 2-variant x 1-seed grid of 1 s clips in 2 steps with
``recap.generation.grid.generate_grid`` (fast preview: the 1 s of frames, not the 47.55 s window,
and a decode of the kept frames), then takes one Textual Inversion step with
``recap.tokens.training.train_token`` (full window, as training runs). Checks shapes, finite
values, that the learned vector moved, and prints the peak resident memory. Exits non-zero on any
failure. The tiny models cannot catch what only shows at full size (memory, shapes of the real
configs, dtype handling); this does, in a few minutes.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import max_rss_gib  # noqa: E402

SECONDS = 1.0
STEPS = 2


def check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(what)
    print(f"  ok: {what}", flush=True)


def main() -> int:
    from bench.full_size import backend_from_pipe, full_sao_pipeline
    from recap.audio_io import Clip
    from recap.generation.grid import GenerationConfig, generate_grid, make_variants
    from recap.tokens.training import TIConfig, initial_vectors, train_token

    t0 = time.perf_counter()
    # 1. Build: fp32 on the CPU (half precision is for accelerators)
    backend = backend_from_pipe(full_sao_pipeline(torch.float32), "sao-full-random", torch.device("cpu"), torch.float32)
    print(f"built full-size SAO in {time.perf_counter() - t0:.0f} s, max RSS {max_rss_gib():.2f} GiB", flush=True)
    check(backend.window_frames == 1024 and backend.sample_rate == 44_100 and backend.channels == 2, "SAO 1.0 window and rate")

    # 2. Grid: 2 variants x 1 seed, 2 steps, 1 s, fast preview
    t1 = time.perf_counter()
    variants = make_variants("rain on a tin roof", ["light rain on a metal roof"])
    grid = generate_grid(backend, variants, GenerationConfig(seconds=SECONDS, steps=STEPS, guidance=7.0, seeds=[0],
                                                             fast_preview=True))
    print(f"grid in {time.perf_counter() - t1:.0f} s", flush=True)
    check(len(grid.clips) == 2, "2 clips")
    frames = backend.latent_shape(SECONDS, full_window=False)
    for c in grid.clips:
        check(c.audio.shape == (2, int(SECONDS * 44_100)), f"{c.variant.label}: audio [2, 44100]")
        check(bool(np.isfinite(c.audio).all()), f"{c.variant.label}: finite audio")
        check(tuple(c.final.shape[-2:]) == frames and bool(torch.isfinite(c.final).all()), f"{c.variant.label}: latents {frames}")
    torch.testing.assert_close(grid.clips[0].initial, grid.clips[1].initial, rtol=0, atol=0)
    check(True, "both variants started from the seed's noise")

    # 3. One Textual Inversion step on two 1 s clips
    t2 = time.perf_counter()
    sr = backend.sample_rate
    t = np.arange(int(SECONDS * sr)) / sr
    clips = [Clip(np.stack([0.3 * np.sin(2 * np.pi * f * t)] * 2).astype(np.float32), sr, f"tone{f}") for f in (440, 660)]
    config = TIConfig(placeholder="<smoke>", init="word", init_word="rain", steps=1, batch_size=1, seconds=SECONDS,
                      augment_copies=1, checkpoint_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        token = train_token(backend, clips, config, checkpoint_dir=Path(tmp))
    init = initial_vectors(backend, config, torch.Generator().manual_seed(config.seed))
    print(f"TI step in {time.perf_counter() - t2:.0f} s", flush=True)
    check(tuple(token.vectors.shape) == (1, 768), "learned vector [1, 768]")
    check(bool(torch.isfinite(token.vectors).all()), "finite learned vector")
    check(not torch.allclose(token.vectors.float(), init.float()), "the learned vector moved from its initial word")
    losses = token.meta.get("losses", [])
    check(len(losses) == 1 and np.isfinite(losses[0]), f"one finite loss ({losses})")

    print(f"smoke passed in {time.perf_counter() - t0:.0f} s; peak RSS (ru_maxrss) {max_rss_gib():.2f} GiB", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # a failed check or a crash: say which, exit non-zero
        print(f"SMOKE FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from exc
