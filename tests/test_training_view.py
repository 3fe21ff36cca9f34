"""The Token tab's training view: the smoothed loss, time per step and ETA, one curve across
stop/resume and GPU-sized chunks, a strip of previews with their steps, and a status that is
never held back by a preview."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from recap.config import Settings
from recap.paths import safe_name
from recap.tokens.checkpoints import HISTORY_FILE, StepRecord, checkpoint_history, read_history
from recap.tokens.training import TIPreview, TIStep, check_config, train_token
from recap.ui.context import AppContext
from recap.ui.jobs import SessionJobs
from recap.ui.token import nearest_rows, run_training
from recap.ui.training import (
    PREVIEWS_KEPT,
    ema,
    eta_seconds,
    format_duration,
    keep_preview,
    progress_figure,
    prune_previews,
    time_per_step,
    train_chunk,
    training_config,
    training_status,
)


@pytest.fixture
def ctx(tmp_path) -> AppContext:
    """The app's context on the tiny model, loaded on first use as the app loads it."""
    return AppContext(settings=Settings(home=tmp_path / "home", model="tiny"), start_model="tiny")


def train_in_app(ctx: AppContext, jobs: SessionJobs, clips: list[str], steps: int, preview_every: int = 0,
                 resume: bool = False) -> list[tuple]:
    """Every output tuple the Token tab's Train (or Resume) event yields, for <view-beep>."""
    return list(run_training(ctx, train_chunk, nearest_rows, resume, "tiny", clips, "<view-beep>", "word", "sound", 1,
                             steps, 0.02, 2, 1, 0, 0, preview_every, jobs, None))


def traces(fig) -> dict[str, object]:
    return {t.name: t for t in fig.data}


def strip_of(outputs: tuple) -> list:
    """The preview players of one output tuple, newest first (see ``recap.ui.token._page``)."""
    return [outputs[2], *outputs[8:]]


def newest_label(outputs: tuple) -> str | None:
    """The label an output tuple gives the newest preview's player (None: it leaves it as it is)."""
    first = outputs[2]
    return first.get("label") if isinstance(first, dict) else None


# ----------------------------------------------------------------------------- pure maths
def test_ema_matches_a_hand_computation():
    assert ema([1.0, 0.0, 0.0, 2.0], 0.5) == pytest.approx([1.0, 0.5, 0.25, 1.125])
    # 0.9: 4 -> 0.9*4 + 0.1*2 = 3.8 -> 0.9*3.8 + 0.1*3 = 3.72
    assert ema([4.0, 2.0, 3.0]) == pytest.approx([4.0, 3.8, 3.72])
    assert ema([3.0, 1.0], 0.0) == [3.0, 1.0] and ema([]) == []
    with pytest.raises(ValueError, match="smoothing"):
        ema([1.0], 1.0)


def test_time_per_step_is_the_median_of_recent_steps_and_eta_follows():
    # a slow first (warm-up) step and a step slowed by a checkpoint do not move the median
    assert time_per_step([5.0, 0.2, 0.3, 0.2, 9.0, 0.4]) == pytest.approx(0.35)
    assert time_per_step([100.0] + [0.5] * 20) == 0.5  # only the last 20 count
    assert time_per_step([None, None]) is None and time_per_step([None, 0.25]) == 0.25
    assert eta_seconds(8, 20, 0.35) == pytest.approx(4.2) and eta_seconds(3, 3, 1.0) == 0
    assert eta_seconds(1, 10, None) is None
    assert [format_duration(s) for s in (0.35, 4.2, 42, 185, 3720)] == ["0.35 s", "4.2 s", "42 s", "3 min 05 s",
                                                                         "1 h 02 min"]
    history = [StepRecord(i, loss, 1.0, 0.99, s) for i, (loss, s) in
               enumerate(zip([4.0, 2.0, 3.0, 3.0, 3.0, 3.0], [5.0, 0.2, 0.3, 0.2, 9.0, 0.4]), 1)]
    step = TIStep(6, 20, 3.0, 1.0, 0.99, 0.4, checkpointed=True, preview_due=True)
    line = training_status(step, history, rendering=6)
    smoothed = ema([r.loss for r in history])[-1]
    assert f"loss 3.0000 (EMA {smoothed:.4f})" in line and "0.35 s/step" in line and "ETA 4.9 s" in line
    assert line.endswith("checkpoint saved · rendering the preview of step 6…")
    assert "ETA" not in training_status(TIStep(20, 20, 3.0, 1.0, 0.99, 0.4), history)  # nothing left to wait for


def test_the_figure_shows_raw_loss_points_and_their_ema():
    history = [StepRecord(i, loss, 1.0 + i / 10, 1.0 - i / 100, 0.1) for i, loss in enumerate([4.0, 2.0, 3.0], 1)]
    fig = progress_figure(history)
    by_name = traces(fig)
    raw, smooth = by_name["loss (raw)"], by_name["loss (EMA, 0.9)"]
    assert raw.mode == "markers" and raw.opacity < 1 and list(raw.x) == [1, 2, 3] and list(raw.y) == [4.0, 2.0, 3.0]
    assert smooth.mode == "lines" and list(smooth.y) == pytest.approx([4.0, 3.8, 3.72])
    assert list(by_name["embedding norm"].y) == pytest.approx([1.1, 1.2, 1.3])
    assert list(by_name["cosine to init"].y) == pytest.approx([0.99, 0.98, 0.97])
    assert "EMA, 0.9" in fig.layout.annotations[0].text  # the smoothing is named on the panel


# ----------------------------------------------------------------------------- the core loop
def test_steps_are_timed_reported_before_their_preview_and_kept_in_history(tiny, clips, tmp_path):
    events = []
    held = {}

    def on_step(s: TIStep) -> None:
        events.append(("step", s.step, s.preview_due))
        if s.step == 2:  # the history the checkpoint of step 2 wrote, opened as a reader would
            held["file"] = open(tmp_path / HISTORY_FILE)

    config = check_config(tiny, training_config("<view-beep>", "word", "sound", 1, 4, 0.02, 2, 1, 0, 0, 2, 2))
    config.checkpoint_every = 2
    token = train_token(tiny, clips, config, on_step=on_step, checkpoint_dir=tmp_path,
                        on_preview=lambda p: events.append(("preview", p.step, p.audio.shape)))
    # Each preview is rendered after its step was reported: a live status never waits on it.
    one_second = (tiny.channels, tiny.sample_rate)
    assert events == [("step", 1, False), ("step", 2, True), ("preview", 2, one_second), ("step", 3, False),
                      ("step", 4, True), ("preview", 4, one_second)]
    history = read_history(tmp_path)
    assert [r.step for r in history] == [1, 2, 3, 4] and [r.loss for r in history] == token.meta["losses"]
    assert all(r.seconds is not None and r.seconds > 0 and r.norm > 0 and 0.9 < r.cos_to_init <= 1 for r in history)
    # Written atomically: each save is a new file put in place (a reader of the old one still reads
    # it whole), and no temporary file is left behind.
    with held["file"] as old:
        assert [r["step"] for r in json.load(old)["steps"]] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir() if "history" in p.name) == [HISTORY_FILE]


def test_stop_then_resume_in_the_app_continues_one_curve_from_step_1(ctx, clips):
    jobs = SessionJobs()
    backend, _ = ctx.backend("tiny")
    config = check_config(backend, training_config("<view-beep>", "word", "sound", 1, 8, 0.02, 2, 1, 0, 0, 0))
    checkpoint_dir = jobs.scratch / "checkpoints" / safe_name(config.placeholder)
    stop, before = threading.Event(), []

    def on_step(s: TIStep) -> None:  # the visitor presses Stop during step 4
        before.append(s.record)
        if s.step == 4:
            stop.set()

    stopped = train_token(backend, clips, config, on_step=on_step, stop=stop, checkpoint_dir=checkpoint_dir)
    assert stopped.meta["steps_done"] == 4 and checkpoint_history(checkpoint_dir) == before

    outputs = train_in_app(ctx, jobs, clips, 8, resume=True)
    first, last = outputs[0], outputs[-1]
    assert list(traces(first[0])["loss (raw)"].x) == [1, 2, 3, 4]  # the curve is back before the first new step
    raw = traces(last[0])["loss (raw)"]
    assert list(raw.x) == list(range(1, 9)) and len(traces(last[0])["loss (EMA, 0.9)"].y) == 8
    assert list(raw.y)[:4] == [r.loss for r in before]
    history = checkpoint_history(checkpoint_dir)
    assert [r.step for r in history] == list(range(1, 9)) and history[:4] == before
    assert "Trained `<view-beep>`" in last[1] and "step 8 of 8" in last[1]


def test_gpu_sized_chunks_keep_one_history(ctx, clips):
    ctx.train_chunk_steps = 3  # as on ZeroGPU: calls of 3 steps, each resuming the last one's checkpoint
    jobs = SessionJobs()
    outputs = train_in_app(ctx, jobs, clips, 8)
    raw = traces(outputs[-1][0])["loss (raw)"]
    assert list(raw.x) == list(range(1, 9))
    history = read_history(jobs.scratch / "checkpoints" / "view-beep")
    assert [r.step for r in history] == list(range(1, 9)) and list(raw.y) == [r.loss for r in history]
    assert all(r.seconds is not None for r in history)  # every chunk's steps kept, none rebuilt from losses


# ----------------------------------------------------------------------------- previews
def test_previews_stay_as_a_strip_with_their_steps_and_the_status_says_when_one_renders(ctx, clips):
    jobs = SessionJobs()
    outputs = train_in_app(ctx, jobs, clips, 4, preview_every=2)
    # when the preview of step 4 came, the players were labelled and shown, newest first
    shown = strip_of(next(o for o in reversed(outputs) if newest_label(o)))
    assert [(u["label"], u["visible"]) for u in shown[:2]] == [("step 4", True), ("step 2", True)]
    assert all(u["visible"] is False and u["value"] is None for u in shown[2:]) and len(shown) == PREVIEWS_KEPT
    # the last output (what an API caller gets) holds the same previews as plain files
    final = strip_of(outputs[-1])
    assert final == [u["value"] for u in shown] and all(Path(f).is_file() for f in final[:2])
    # While the preview of step 2 renders, the page already says so, before that preview arrives.
    saying = next(i for i, o in enumerate(outputs) if "rendering the preview of step 2…" in str(o[1]))
    arrived = next(i for i, o in enumerate(outputs) if newest_label(o) == "step 2")
    assert saying < arrived and "step 2 of 4" in outputs[saying][1]
    assert "rendering" not in outputs[arrived][1]


def test_the_strip_keeps_the_last_8_and_a_resume_keeps_only_earlier_steps(tmp_path):
    folder = tmp_path / "previews"
    strip: list[tuple[int, str]] = []
    for step in range(1, 11):
        strip = keep_preview(folder, TIPreview(step, np.zeros((1, 160), np.float32), 0.1), 16000, strip)
    assert [s for s, _ in strip] == list(range(10, 2, -1))
    assert sorted(p.name for p in folder.iterdir()) == [f"step-{s:06d}.wav" for s in range(3, 11)]
    assert prune_previews(folder, 6) == [(s, str(folder / f"step-{s:06d}.wav")) for s in (6, 5, 4, 3)]
    assert len(list(folder.iterdir())) == 4  # the later steps are made again by the resumed training
    assert prune_previews(folder, 0) == [] and not list(folder.iterdir())  # a new training starts clean


def test_the_form_check_names_a_bad_field_beside_the_buttons_before_anything_starts(ctx, clips):
    from recap.ui.common import form_check
    from recap.ui.token import check_training

    check = form_check(lambda *form: check_training(ctx, *form))
    good = ["tiny", clips, "<view-ok>", "word", "sound", 1, 4, 0.02, 2, 0, 0, 0, 0]
    assert check(*good) == ""
    for i, bad, words in ((1, [], "upload at least one clip"), (6, float("nan"), "steps"),
                          (7, 5.0, "learning rate"), (4, "zzzz-not-a-word", "init word")):
        form = list(good)
        form[i] = bad
        message = check(*form)
        assert message.startswith("⚠️") and words in message, (i, message)
