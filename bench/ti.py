"""Textual Inversion benchmark: recap's trainer vs the diffusers-example way, same backend and data.

    python bench/ti.py                 # tiny model (CPU figures)
    python bench/ti.py --full          # full-size Stable Audio Open architecture, random weights (GPU)

Per-step time is (T(n2) - T(n1)) / (n2 - n1), so set-up (encoding the clips, copies) cancels out.
recap trains one [n_vectors, dim] parameter spliced into the embeddings; the plain way makes the
whole embedding matrix trainable and restores every other row after each step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import markdown_table, max_rss_gib, peak_gib, record, reset_peak, sync  # noqa: E402
from bench.full_size import bench_backend  # noqa: E402
from bench.ti_plain import train_plain  # noqa: E402
from recap.audio_io import Clip  # noqa: E402
from recap.tokens.training import TIConfig, load_clips, train_token, training_latents  # noqa: E402


def clips(sr: int, seconds: float, n: int = 3) -> list[Clip]:
    t = np.arange(int(sr * seconds)) / sr
    return [Clip((0.5 * np.sin(2 * np.pi * (500 + 60 * i) * t))[None].astype(np.float32), sr, f"c{i}") for i in range(n)]


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, nargs=2, default=[5, 25], metavar=("N1", "N2"))
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    backend = bench_backend(args.full, args.model, args.dtype)
    device, dtype = backend.device, backend.dtype
    seconds = args.seconds or min(10.0, backend.max_seconds)
    data = clips(backend.sample_rate, seconds)
    config = TIConfig(placeholder="<bench>", init_word=None, init="mean", batch_size=args.batch_size, seconds=seconds,
                      checkpoint_every=0)
    latents = training_latents(backend, load_clips(backend, data), config, seconds)
    n1, n2 = args.steps
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        def ours(n):
            return lambda: train_token(backend, data, TIConfig(**{**config.__dict__, "steps": n}), checkpoint_dir=Path(tmp))

        def plain(n):
            return lambda: train_plain(backend, latents, config, seconds, steps=n)

        for name, make in (("plain (whole matrix, rows restored)", plain), ("ours (new vectors only)", ours)):
            make(2)()  # warm-up
            reset_peak(device)
            t1, t2 = timed(make(n1), device), timed(make(n2), device)
            per_step = (t2 - t1) / (n2 - n1)
            results[name] = (per_step, peak_gib(device))
            print(f"{name:38s} {per_step * 1000:8.1f} ms/step  peak {results[name][1] or 0:.2f} GiB", flush=True)
    base = results["plain (whole matrix, rows restored)"][0]
    rows = [[k, v[0] * 1000, 1 / v[0], base / v[0], v[1]] for k, v in results.items()]
    table = markdown_table(["trainer", "ms / step", "steps / s", "speed-up vs plain", "peak GiB"], rows)
    print(table)
    weights = "random weights" if backend.random_weights else "trained weights"
    model = "full-size SAO architecture, random weights" if args.full else f"{backend.name} ({weights})"
    notes = (f"{model}; batch {args.batch_size} of {seconds:g} s clips, dtype {str(dtype).replace('torch.', '')}, "
             f"gradient checkpointing {'on' if device.type == 'cuda' else 'off'} for ours; max RSS {max_rss_gib():.2f} GiB.")
    print(notes)
    if not args.no_record:
        record(f"textual inversion — {model}", table, notes)


if __name__ == "__main__":
    main()
