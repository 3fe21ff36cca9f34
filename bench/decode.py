"""Decode benchmark: Stable Audio Open's Oobleck decoder on the kept frames vs on the whole window.

    .venv/bin/python -m bench.decode                        # 1 s clip of a 47.55 s window (1024 frames)
    .venv/bin/python -m bench.decode --window-frames 256    # a shorter window, where memory is short

The pipeline decodes every latent frame of the window it denoised and then cuts the requested
seconds; recap decodes the frames under the clip plus the decoder's receptive-field margin
(``recap.backends.stable_audio.decoder_frames_needed``) and cuts. Each way runs in its own
process so that its peak resident memory (VmHWM, reset after the model is built) is its own; the parent compares the
kept audio of both. Full-size architecture, random fp32 weights (time and memory do not depend on
weight values). On a CPU the whole window peaks near 18 GB: measure it once, or at a shorter window.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import markdown_table, max_rss_gib, median_time, record  # noqa: E402

SAO_WINDOW_FRAMES = 1024  # 47.55 s at hop 2048, 44.1 kHz


def _child(mode: str, window: int, seconds: float, repeats: int, out: Path) -> None:
    """Decodes one way, saves the kept audio [1, 2, samples] to ``out`` and prints its figures as JSON."""
    from bench.full_size import full_sao_vae
    from recap.backends.stable_audio import decoder_frames_needed

    torch.manual_seed(0)
    vae = full_sao_vae().eval()
    z = torch.randn(1, 64, window, generator=torch.Generator().manual_seed(0))
    keep = int(seconds * vae.sampling_rate)
    frames = min(window, decoder_frames_needed(vae.decoder, keep)) if mode == "partial" else window
    # the model's construction peaks above a short decode: restart the high-water mark (Linux resets
    # VmHWM on "5" to clear_refs) so that the peak read after decoding is the decode's own
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = _rss_gib("VmRSS")

    @torch.no_grad()
    def decode() -> torch.Tensor:
        return vae.decode(z[..., :frames]).sample[..., :keep]

    t0 = time.perf_counter()
    audio = decode()
    first = time.perf_counter() - t0
    t = median_time(decode, torch.device("cpu"), repeats=repeats, warmup=0) if repeats > 1 else first
    np.save(out, audio.numpy())
    print(json.dumps({"mode": mode, "frames": frames, "seconds": t, "peak_gib": _rss_gib("VmHWM"), "model_gib": rss_before,
                      "process_peak_gib": max_rss_gib()}))


def _rss_gib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"no {field} in /proc/self/status")


def _run(mode: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, "-m", "bench.decode", "--child", mode, "--window-frames", str(args.window_frames),
           "--seconds", str(args.seconds), "--repeats", str(args.repeats if mode == "partial" else 1), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} decode failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{mode:8s} {result['frames']:5d} frames  {result['seconds']:8.3f} s  peak RSS {result['peak_gib']:.2f} GiB (model {result['model_gib']:.2f})", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window-frames", type=int, default=SAO_WINDOW_FRAMES)
    ap.add_argument("--seconds", type=float, default=1.0, help="clip length kept")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the partial decode (the whole window runs once)")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--child", choices=["partial", "full"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.window_frames, args.seconds, args.repeats, args.out)
        return

    with tempfile.TemporaryDirectory() as tmp:
        part = _run("partial", args, Path(tmp) / "partial.npy")
        full = _run("full", args, Path(tmp) / "full.npy")
        a, b = np.load(Path(tmp) / "partial.npy"), np.load(Path(tmp) / "full.npy")
    rel = float(np.abs(a - b).max() / np.abs(b).max())
    window_s = args.window_frames * 2048 / 44_100
    rows = [[name, r["frames"], r["seconds"], r["peak_gib"], r["peak_gib"] - r["model_gib"]]
            for name, r in (("kept frames + margin", part), ("whole window", full))]
    table = markdown_table(["decode", "latent frames", "seconds", "peak RSS while decoding GiB", "above the loaded model GiB"], rows)
    ratio = (f"whole window / kept frames: {full['seconds'] / part['seconds']:.1f}x time, "
             f"{full['peak_gib'] / part['peak_gib']:.1f}x peak RSS "
             f"({(full['peak_gib'] - full['model_gib']) / max(part['peak_gib'] - part['model_gib'], 1e-9):.0f}x above the model's own)")
    notes = (f"Full-size Oobleck decoder (SAO 1.0 architecture, random fp32 weights), batch 1, {args.seconds:g} s kept of a "
             f"{window_s:.2f} s window ({args.window_frames} frames). {ratio}. Kept audio max |partial - whole| / peak = {rel:.1e}. "
             "Each way in its own process; peak = VmHWM reset after building the model; the partial time is the median of "
             f"{args.repeats}, the whole window ran once.")
    print(table)
    print(notes)
    if not args.no_record:
        record("decode — full-size Oobleck, kept frames vs whole window", table, notes)


if __name__ == "__main__":
    main()
