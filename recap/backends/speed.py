"""Speed and memory: cached text conditioning, an opt-in compiled denoiser, batch sizes from free memory.

Each piece can be switched off, so benchmarks can compare the plain path with the fast one and
tests can check that both give the same clips:

* :class:`TextCache` keeps the text encoder's outputs per prompt row. A grid or a UI session asks
  for the same prompts over and over; the cache is keyed by the token ids, the mask and the bytes
  of any learned vectors the row uses, so a changed token is a different entry.
* :func:`compile_denoiser` wraps the DiT / UNet in ``torch.compile`` in place (``Module.compile``):
  parameter names and the frozen state are unchanged, so Textual Inversion and snapshots still see
  the same module. ``mode="reduce-overhead"`` adds CUDA graphs.
* :func:`clips_per_batch` turns free accelerator memory and a per-clip estimate into a batch size;
  the grid still halves on out-of-memory, so an estimate that is too low never crashes a grid.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

# Share of free memory a batch may plan to use: allocator fragmentation and the
# scheduler's and decoder's temporaries need the rest.
MEMORY_HEADROOM = 0.8


class TextCache:
    """A bounded, thread-safe LRU of per-row text-encoder outputs.

    Used only where no gradient is recorded (see ``AudioBackend.cached_text``).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def row_keys(tag: str, enc) -> list[tuple]:
        """One key per prompt row: ids, mask and the learned vectors that row uses."""
        ids, mask = enc.input_ids.cpu(), enc.attention_mask.cpu()
        vectors = b""
        if enc.extra_vectors is not None:
            vectors = hashlib.sha1(enc.extra_vectors.detach().float().cpu().numpy().tobytes()).digest()
        extra = set(enc.extra_ids)
        keys = []
        for r in range(ids.shape[0]):
            row = tuple(ids[r].tolist())
            uses_extra = bool(extra.intersection(row))
            keys.append((tag, row, tuple(mask[r].tolist()), tuple(enc.extra_ids) if uses_extra else (), vectors if uses_extra else b""))
        return keys

    def rows(self, tag: str, enc, compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """``compute(rows)`` -> outputs [len(rows), ...] for the rows not cached; returns all rows [B, ...]."""
        if self.size <= 0:
            return compute(list(range(enc.input_ids.shape[0])))
        keys = self.row_keys(tag, enc)
        with self._lock:
            found = {k: self._rows[k] for k in keys if k in self._rows}
        missing = [r for r, k in enumerate(keys) if k not in found]
        unique_missing = list({keys[r]: r for r in missing}.values())
        if unique_missing:
            out = compute(unique_missing)
            for j, r in enumerate(unique_missing):
                found[keys[r]] = out[j].clone()  # a view would keep the whole batch's storage alive
        with self._lock:
            self.hits += len(keys) - len(unique_missing)
            self.misses += len(unique_missing)
            for k in keys:
                self._rows[k] = found[k]
                self._rows.move_to_end(k)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)
        return torch.stack([found[k] for k in keys])


def compile_denoiser(module: torch.nn.Module, mode: str | None = None, backend: str = "inductor") -> None:
    """Compiles ``module``'s forward in place with ``torch.compile``.

    Args:
        mode: ``None`` (default inductor), ``"max-autotune-no-cudagraphs"`` or ``"reduce-overhead"`` (CUDA graphs).
        backend: The dynamo backend; ``"inductor"`` generates kernels, ``"aot_eager"`` only traces
            (what the tests use to check the compiled graph on a CPU without waiting for codegen).
    """
    # dynamic=False: a grid reuses one batch shape, and static shapes are what CUDA graphs need.
    module.compile(mode=mode, backend=backend, dynamic=False, fullgraph=False)
    log.info("compiled %s (backend %s, mode %s)", type(module).__name__, backend, mode)


def free_memory(device: torch.device) -> int | None:
    """Free bytes on an accelerator; None on the CPU (where the batch is capped instead)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory the caching allocator holds but does not use is free for our tensors too
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return None


def clips_per_batch(free_bytes: int | None, bytes_per_clip: int, n_clips: int, cap: int) -> int:
    """How many clips one call may take: what fits in ``MEMORY_HEADROOM`` of free memory, within [1, cap]."""
    if n_clips < 1:
        raise ValueError(f"n_clips must be >= 1, got {n_clips}")
    limit = min(n_clips, cap)
    if free_bytes is None or bytes_per_clip <= 0:
        return limit
    return max(1, min(limit, int(free_bytes * MEMORY_HEADROOM) // bytes_per_clip))
