"""Shared benchmark plumbing: timing with synchronisation, peak memory, machine description, results file."""

from __future__ import annotations

import datetime as dt
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# bf16 dense matmul throughput measured on an H100 SXM (the anchor figures in the benchmarks' docs)
H100_BF16_TFLOPS = 790.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak accelerator memory since the last reset (GiB); None on CPU (see max_rss_gib)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def max_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def median_time(fn: Callable[[], object], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs, synchronised."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
        return f"{gpu}, CUDA {torch.version.cuda}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} threads), torch {torch.__version__}"


def record(title: str, table: str, notes: str = "") -> None:
    """Appends a dated section to bench/RESULTS.md."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title}\n\n{stamp} — {machine()}\n\n{table}\n"
    if notes:
        section += f"\n{notes}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is one run of a script under `bench/`: ours and the plain diffusers way in the same process, same machine.\n")
    with RESULTS.open("a") as f:
        f.write(section)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "—" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
