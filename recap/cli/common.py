"""Small pieces every subcommand uses: model loading with a warning for random weights, progress bars."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from recap.backends.base import AudioBackend
from recap.errors import ModelUnavailable
from recap.backends.loading import COMPILE_MODES, load_backend
from recap.backends.registry import get_spec, offline_fallback
from recap.config import settings


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="backend name (see `recap models`); default $RECAP_MODEL or Stable Audio Open")
    parser.add_argument("--device", default=None, help="torch device (default: cuda > mps > cpu)")
    parser.add_argument("--dtype", default=None, help="float16 / bfloat16 / float32 (default: fp16 on CUDA)")
    parser.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES,
                        help="torch.compile the denoiser (pays on GPUs for long grids; default $RECAP_COMPILE)")


def open_backend(args: argparse.Namespace) -> AudioBackend:
    """Loads ``--model``; with none given, the configured model, or the offline one when it cannot load."""
    s = settings()
    device, dtype = args.device or s.device, args.dtype or s.dtype
    compile_mode = getattr(args, "compile", None) or s.compile
    try:
        backend = load_backend(args.model or s.model, device=device, dtype=dtype, compile=compile_mode)
    except ModelUnavailable as exc:
        if args.model:  # the user asked for this model: say why it cannot load
            raise
        fallback = offline_fallback()
        print(f"note: {exc}\nnote: using the offline model `{fallback}` instead (--model to choose).", file=sys.stderr)
        backend = load_backend(fallback, device=device, dtype=dtype, compile=compile_mode)
    if backend.random_weights:
        print(f"note: {backend.name} has RANDOM weights: its audio is noise and means nothing.", file=sys.stderr)
    elif get_spec(backend.name).trained_here:
        print(f"note: {backend.description}", file=sys.stderr)
    return backend


def runs_dir(out: str | None) -> Path:
    return Path(out) if out else settings().runs_dir


@contextmanager
def progress_bar(desc: str, unit: str = "clip"):
    """Yields a ``progress(done, total, message)`` callback drawing a tqdm bar on stderr."""
    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    last_draw = [0.0]

    def update(done: float, total: int, message: str = "") -> None:
        if last_draw[0] == 0.0:  # the clock starts with the work, not with the bar (a later stage's bar waits)
            bar.reset(total=total)
        bar.total = total
        bar.n = min(round(done, 3), total)  # absolute, so fractional steps never add up past the total
        if message:
            bar.set_postfix_str(message, refresh=False)
        now = time.monotonic()
        if now - last_draw[0] >= 0.2 or bar.n >= total:  # redraw at most 5 times a second
            bar.refresh()
            last_draw[0] = now

    try:
        yield update
    finally:
        bar.close()


def print_table(headers: list[str], rows: list[list[object]], out=None) -> None:
    """A plain aligned text table."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=out)


Callback = Callable[[float, int, str], None]
