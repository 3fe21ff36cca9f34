"""Textual Inversion from the app: the form's settings, live progress, and GPU-sized chunks.

On ZeroGPU a GPU call may only hold the GPU for a limited time, so training runs as several
calls of ``chunk`` steps, each resuming from the checkpoint the previous one wrote; elsewhere it
is one call. Either way the steps stream back one by one for the live plot.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _whole(value: Any) -> Any:
    """A form number as an int when it is a finite whole number; anything else passes unchanged,
    so the core check (``recap.tokens.training.check_config``) names it in its sentence."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if math.isfinite(number) and number == int(number) else value


def training_config(name: str, init: str, init_word: str, n_vectors: float, steps: float, learning_rate: float,
                    batch_size: float, seconds: float, mix_snr_db: float, seed: float, preview_every: float,
                    preview_steps: int | None = None) -> Any:
    """A ``TIConfig`` from the form (0 seconds = automatic, 0 dB SNR = no noise mixing).

    Only converts: every bound is checked by the core when training starts, the same check the
    CLI and the API pass. Previews use ``preview_steps`` denoising steps: enough to hear where
    training is going without stalling it for a full-quality generation.
    """
    from recap.tokens.training import TIConfig

    name = name.strip() if isinstance(name, str) else name
    steps = _whole(steps)
    return TIConfig(
        placeholder=name, init=init, init_word=(init_word.strip() if isinstance(init_word, str) else init_word) or None,
        n_vectors=_whole(n_vectors),
        steps=steps, learning_rate=learning_rate, batch_size=_whole(batch_size),
        seconds=seconds if seconds else None, mix_snr_db=mix_snr_db if mix_snr_db else None,
        seed=_whole(seed or 0), preview_every=_whole(preview_every or 0), preview_steps=preview_steps,
        checkpoint_every=max(1, min(50, steps)) if isinstance(steps, int) else 50,
    )


def progress_figure(history: list[tuple[int, float, float, float]]) -> Any:
    """Loss, embedding norm and cosine to the initial vector against the step."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=["loss", "embedding norm", "cosine to init"])
    steps = [h[0] for h in history]
    for col, name in enumerate(("loss", "norm", "cos"), 1):
        fig.add_trace(go.Scatter(x=steps, y=[h[col] for h in history], mode="lines", name=name), row=1, col=col)
    fig.update_layout(height=260, showlegend=False, margin={"l": 40, "r": 10, "t": 40, "b": 30})
    fig.update_xaxes(title_text="step")
    return fig


@dataclass
class _Failed:
    exc: BaseException


def train_chunk(backend: Any, clips: list[str], config: Any, stop: threading.Event, checkpoint_dir: Path,
                resume: bool) -> Iterator[Any]:
    """Trains in a worker thread and yields each ``TIStep``, then the ``LearnedToken``.

    Closing the generator early (the visitor left) stops the training at the next step.
    """
    from recap.tokens.training import train_token

    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            events.put(train_token(backend, clips, config, on_step=events.put, stop=stop,
                                   checkpoint_dir=checkpoint_dir, resume=resume))
        except BaseException as exc:  # handed to the consumer, which raises it in its thread
            events.put(_Failed(exc))

    worker = threading.Thread(target=work, name="recap-train", daemon=True)
    worker.start()
    try:
        while True:
            item = events.get()
            if isinstance(item, _Failed):
                raise item.exc
            yield item
            if not hasattr(item, "loss"):  # the LearnedToken: done
                return
    finally:
        if worker.is_alive():
            stop.set()
            worker.join()


def train_in_chunks(run_chunk: Callable[..., Iterator[Any]], backend: Any, clips: list[str], config: Any,
                    stop: threading.Event, checkpoint_dir: Path, resume: bool, chunk: int | None) -> Iterator[Any]:
    """Runs training as one GPU call, or (``chunk`` steps per call, on ZeroGPU) as several.

    Each later call resumes from the checkpoint the previous one wrote, which continues exactly
    (optimiser state and random generator included), so the token is the same either way.
    """
    from recap.tokens.training import check_config

    # Checked here too, not only inside each call: the chunks are sized from the total steps.
    config = check_config(backend, config)
    if not chunk:
        yield from run_chunk(backend, clips, config, stop, checkpoint_dir, resume)
        return
    done = _checkpoint_step(checkpoint_dir) if resume else 0
    while True:
        part = dataclasses.replace(config, steps=min(config.steps, done + chunk))
        token = None
        for item in run_chunk(backend, clips, part, stop, checkpoint_dir, resume or done > 0):
            if hasattr(item, "loss"):
                yield dataclasses.replace(item, steps=config.steps)
            else:
                token = item
        done = int(token.meta["steps_done"])
        if done >= config.steps or stop.is_set() or done < part.steps:
            token.meta.update(steps=config.steps, complete=done >= config.steps, config=dataclasses.asdict(config))
            yield token
            return


def _checkpoint_step(checkpoint_dir: Path) -> int:
    path = checkpoint_dir / "checkpoint.json"
    if not path.is_file():
        raise ValueError("nothing to resume: this session has no stopped training of that token")
    return int(json.loads(path.read_text())["step"])
