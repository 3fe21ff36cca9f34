"""Textual Inversion from the app: the form's settings, live progress, and GPU-sized chunks.

On ZeroGPU a GPU call may only hold the GPU for a limited time, so training runs as several
calls of ``chunk`` steps, each resuming from the checkpoint the previous one wrote; elsewhere it
is one call. Either way the steps stream back one by one for the live view, which shows what
A1111's Train tab users read: the raw loss with its moving average, the time per step and the
time left, and a strip of the previews, each with its step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import statistics
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMA_SMOOTHING = 0.9  # weight of the past in the loss's moving average: a diffusion loss is noisy step to step
TIMING_WINDOW = 20  # steps whose median gives the time per step: a preview or a warm-up step is an outlier
PREVIEWS_KEPT = 8  # previews in the strip (and their WAVs on disk): older ones are deleted


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


# ----------------------------------------------------------------------------- the live view
def ema(values: Sequence[float], smoothing: float = EMA_SMOOTHING) -> list[float]:
    """Exponential moving average: ``out[0] = v[0]``, ``out[i] = s * out[i-1] + (1 - s) * v[i]``.

    Args:
        values: The raw series (e.g. the loss of each step).
        smoothing: ``s`` in [0, 1): the weight of the past; 0 returns the values unchanged.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    out: list[float] = []
    for v in values:
        out.append(float(v) if not out else smoothing * out[-1] + (1.0 - smoothing) * float(v))
    return out


def time_per_step(seconds: Sequence[float | None], window: int = TIMING_WINDOW) -> float | None:
    """Median wall-clock seconds of the last ``window`` timed steps (None: no step timed yet).

    The median, not the mean: the first step (warm-up, compilation) and a step slowed by other
    work on the machine are outliers that would distort the estimate for the whole rest.
    """
    timed = [float(s) for s in seconds if s is not None][-window:]
    return statistics.median(timed) if timed else None


def eta_seconds(step: int, steps: int, per_step: float | None) -> float | None:
    """Seconds left: the steps still to do times the time per step (None when that is unknown)."""
    return None if per_step is None else max(0, steps - step) * per_step


def format_duration(seconds: float) -> str:
    """A short human duration: "0.42 s", "12 s", "3 min 05 s", "1 h 02 min"."""
    if seconds < 10:
        return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def training_status(step: Any, history: Sequence[Any], rendering: int | None = None) -> str:
    """The status line of a step: loss (and its EMA), norm, cosine, time per step, ETA.

    Args:
        step: The latest ``TIStep`` (its ``steps`` is the whole training's).
        history: Every ``StepRecord`` so far (the EMA and the timings are read from it).
        rendering: The step whose preview is being rendered now, said so at the end.
    """
    smoothed = ema([r.loss for r in history])[-1] if history else step.loss
    per_step = time_per_step([r.seconds for r in history])
    parts = [f"step {step.step} of {step.steps}", f"loss {step.loss:.4f} (EMA {smoothed:.4f})",
             f"norm {step.norm:.3f}", f"cosine to init {step.cos_to_init:.3f}"]
    if per_step is not None:
        parts.append(f"{format_duration(per_step)}/step")
        if step.step < step.steps:
            parts.append(f"ETA {format_duration(eta_seconds(step.step, step.steps, per_step))}")
    if step.checkpointed:
        parts.append("checkpoint saved")
    line = " · ".join(parts)
    return line + (f" · rendering the preview of step {rendering}…" if rendering is not None else "")


def progress_figure(history: Sequence[Any], smoothing: float = EMA_SMOOTHING) -> Any:
    """Loss (raw per-step markers and their EMA), embedding norm and cosine to init against the step.

    Args:
        history: ``StepRecord``-like items (step, loss, norm, cos_to_init), steps 1..N; a
            missing norm or cosine (steps restored from an older checkpoint) is a gap.
        smoothing: The EMA's weight of the past, named in the legend and the panel title.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"loss (raw · EMA, {smoothing:g})", "embedding norm",
                                                        "cosine to init"])
    steps = [r.step for r in history]
    losses = [r.loss for r in history]
    fig.add_trace(go.Scatter(x=steps, y=losses, mode="markers", name="loss (raw)", opacity=0.35,
                             marker={"size": 4, "color": "#1f77b4"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=steps, y=ema(losses, smoothing), mode="lines", name=f"loss (EMA, {smoothing:g})",
                             line={"color": "#1f77b4"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=steps, y=[r.norm for r in history], mode="lines", name="embedding norm",
                             showlegend=False), row=1, col=2)
    fig.add_trace(go.Scatter(x=steps, y=[r.cos_to_init for r in history], mode="lines", name="cosine to init",
                             showlegend=False), row=1, col=3)
    fig.update_layout(height=280, margin={"l": 40, "r": 10, "t": 40, "b": 30},
                      legend={"orientation": "h", "x": 0, "y": -0.25})
    fig.update_xaxes(title_text="step")
    return fig


def prune_previews(folder: Path, upto: int) -> list[tuple[int, str]]:
    """The previews a training goes on from, as (step, WAV path), newest first; the rest are deleted.

    Args:
        folder: The token's preview folder (``step-<N>.wav`` files).
        upto: The step training starts from: 0 for a new training (every old preview goes), the
            checkpoint's step for a resume (previews of later steps are made again).
    """
    found = []
    for path in Path(folder).glob("step-*.wav"):
        try:
            step = int(path.stem.removeprefix("step-"))
        except ValueError:
            continue
        found.append((step, str(path)))
    kept = sorted([f for f in found if f[0] <= upto], reverse=True)[:PREVIEWS_KEPT]
    for _, path in set(found) - set(kept):
        Path(path).unlink(missing_ok=True)
    return kept


def keep_preview(folder: Path, preview: Any, sample_rate: int, kept: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Writes ``preview`` (a ``TIPreview``) as ``folder/step-<N>.wav`` and returns the strip with it.

    The strip stays newest first and at most PREVIEWS_KEPT long; the WAVs that fall off it are
    deleted, so a long training keeps a bounded number of files.
    """
    from recap.audio_io import write_wav

    path = str(write_wav(Path(folder) / f"step-{preview.step:06d}.wav", preview.audio, sample_rate))
    strip = sorted([(s, p) for s, p in kept if s != preview.step] + [(preview.step, path)], reverse=True)
    for _, old in strip[PREVIEWS_KEPT:]:
        Path(old).unlink(missing_ok=True)
    return strip[:PREVIEWS_KEPT]


def strip_updates(strip: Sequence[tuple[int, str]], slots: int = PREVIEWS_KEPT) -> list[dict[str, Any]]:
    """One ``gr.update`` per preview player: the strip's previews labelled "step N", the rest hidden."""
    import gradio as gr

    shown = [gr.update(value=path, label=f"step {step}", visible=True) for step, path in strip[:slots]]
    return shown + [gr.update(value=None, label="preview", visible=False)] * (slots - len(shown))


def strip_values(strip: Sequence[tuple[int, str]], slots: int = PREVIEWS_KEPT) -> list[str | None]:
    """The players' plain values (WAV paths, None for an empty one), for an event's last output.

    The API returns an update that changes a label as a dict instead of the file, so the last
    output of an event (what an API caller gets) sends only the values; the labels and the
    visibility were set by :func:`strip_updates` when the strip last changed.
    """
    return [path for _, path in strip[:slots]] + [None] * (slots - min(slots, len(strip)))


@dataclass
class _Failed:
    exc: BaseException


def train_chunk(backend: Any, clips: list[str], config: Any, stop: threading.Event, checkpoint_dir: Path,
                resume: bool) -> Iterator[Any]:
    """Trains in a worker thread and yields each ``TIStep`` and ``TIPreview``, then the ``LearnedToken``.

    A step arrives before its preview is rendered (``preview_due`` says one is coming), so the
    page can say so while the preview renders. Closing the generator early (the visitor left)
    stops the training at the next step.
    """
    from recap.tokens.files import LearnedToken
    from recap.tokens.training import train_token

    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            events.put(train_token(backend, clips, config, on_step=events.put, stop=stop,
                                   checkpoint_dir=checkpoint_dir, resume=resume, on_preview=events.put))
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
            if isinstance(item, LearnedToken):  # done
                return
    finally:
        if worker.is_alive():
            stop.set()
            worker.join()


def train_in_chunks(run_chunk: Callable[..., Iterator[Any]], backend: Any, clips: list[str], config: Any,
                    stop: threading.Event, checkpoint_dir: Path, resume: bool, chunk: int | None) -> Iterator[Any]:
    """Runs training as one GPU call, or (``chunk`` steps per call, on ZeroGPU) as several.

    Each later call resumes from the checkpoint the previous one wrote, which continues exactly
    (optimiser state, random generator and step history included), so the token and its curve
    are the same either way. Yields ``TIStep`` (``steps`` = the whole training's), ``TIPreview``,
    then the ``LearnedToken``.
    """
    from recap.tokens.training import TIPreview, TIStep, check_config

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
            if isinstance(item, TIStep):
                yield dataclasses.replace(item, steps=config.steps)
            elif isinstance(item, TIPreview):
                yield item
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
