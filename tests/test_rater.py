"""The rater's warm-up through the pure handlers: a volume check on calibration noise at the study's
loudness, one practice trial in the study's own trial screen whose answer and plays are never
stored, then the real trials; a rater who resumes after answering skips both."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from test_mushra import CONDITIONS, make_noise_run
from test_study import make_run

from recap.study.items import plan_trials
from recap.study.store import IncompleteAnswer, StudyConfig, StudyError, StudyStore
from recap.ui.rater import calibration_noise, finish_volume_check, log_play, open_study, submit_answer


@pytest.fixture
def store(recap_home) -> StudyStore:
    return StudyStore(recap_home)


def mushra_study(store, recap_home, **kw):
    make_noise_run(recap_home)
    return store.create(StudyConfig(kind="mushra", reference_variant="baseline", conditions=list(CONDITIONS),
                                    repeats=0, **kw), ["run1"])


def test_calibration_noise_is_pink_at_the_loudness_of_the_listening_copies():
    sr = 16000
    noise = calibration_noise(sr, 2, -23.0)
    assert noise.shape == (2, 4 * sr) and np.array_equal(noise[0], noise[1]) and np.abs(noise).max() < 1
    assert pyloudnorm.Meter(sr).integrated_loudness(noise.T.astype(np.float64)) == pytest.approx(-23.0, abs=0.1)
    # pink: each octave holds about the same power (white noise would double it per octave)
    power = np.abs(np.fft.rfft(noise[0])) ** 2
    freqs = np.fft.rfftfreq(noise.shape[1], 1 / sr)
    octaves = [power[(freqs >= f) & (freqs < 2 * f)].sum() for f in (250, 500, 1000, 2000)]
    assert max(octaves) / min(octaves) < 1.3


def test_a_new_rater_goes_volume_check_then_practice_then_the_real_trials(store, recap_home):
    info = mushra_study(store, recap_home, must_play=True)
    view = open_study(recap_home, info.code, name="kim", warmup=True)
    state = view.state
    # 1. The volume check: the noise at the study's loudness, at the clips' rate; nothing to answer.
    assert view.stage == "volume" and view.kind is None and not view.clips and "Volume check" in view.status
    assert f"resume code is `{state['rater_id']}`" in view.status
    noise, sr = sf.read(view.calibration, always_2d=True)
    assert sr == sf.info(str(info.folder / info.items[0].clip_a)).samplerate
    assert pyloudnorm.Meter(sr).integrated_loudness(noise) == pytest.approx(info.config.target_lufs, abs=0.5)
    with pytest.raises(StudyError, match="press Continue"):
        submit_answer(recap_home, state, None, None, scores={str(k): 50 for k in range(1, 6)})
    assert not log_play(recap_home, state, "reference", "play")

    # 2. The practice: the study's own trial screen, on the rater's last test item, not the first.
    view = finish_volume_check(recap_home, state)
    assert view.stage == "practice" and view.kind == "mushra" and len(view.clips) == 5 and view.reference
    assert "Practice — not recorded" in view.status and view.question.startswith("### Practice — not recorded")
    rater = store.join(info.code, rater_id=state["rater_id"])
    plan = plan_trials(info.items, rater.seed, 0)
    assert view.state["practice_slot"] == plan[-1].slot != store.trial(rater.rater_id).slot
    assert view.state["slot"] is None  # nothing can be stored or logged against a real slot
    with pytest.raises(StudyError, match="no volume check"):
        finish_volume_check(recap_home, view.state)
    # Plays of the practice are not logged, so they cannot count towards the real trial's must-play.
    for clip in ("reference", "1", "2", "3", "4", "5"):
        assert not log_play(recap_home, view.state, clip, "play")
        assert not log_play(recap_home, view.state, clip, "end")
    # Checked like a real answer (the same sentences), then stored nowhere.
    with pytest.raises(IncompleteAnswer, match="Rate clip 3"):
        submit_answer(recap_home, view.state, None, None, scores={"1": 10, "2": 20, "3": None, "4": 5, "5": 9})
    with pytest.raises(StudyError, match="score of clip 2"):
        submit_answer(recap_home, view.state, None, None, scores={"1": 10, "2": 101, "3": 1, "4": 5, "5": 9})
    view = submit_answer(recap_home, view.state, None, None, scores={str(k): 50 for k in range(1, 6)})
    assert store.answers(info.code) == [] and store.plays(info.code) == []

    # 3. The real trials, starting at the first slot; must-play holds there as always.
    assert view.stage == "trial" and view.state["slot"] == store.trial(rater.rater_id).slot == plan[0].slot
    assert "Practice done — that answer was not recorded" in view.status and "item 1 of 4" in view.status
    with pytest.raises(IncompleteAnswer, match="Play the reference to the end"):
        submit_answer(recap_home, view.state, None, None, scores={str(k): 50 for k in range(1, 6)})


def test_resuming_skips_the_warm_up_once_the_rater_has_answered(store, recap_home):
    make_run(recap_home, "run1", ["baseline", "reword-1a"], [0, 1, 2])
    info = store.create(StudyConfig(kind="ab", pairs=["baseline:reword-1a"], repeats=0, checks=1), ["run1"])
    view = open_study(recap_home, info.code, warmup=True)
    rater_id = view.state["rater_id"]
    # Not answered yet: a resume starts the warm-up again.
    again = open_study(recap_home, info.code, resume_code=rater_id, warmup=True)
    assert again.stage == "volume"
    view = finish_volume_check(recap_home, again.state)
    # The practice is never the attention check (noise against a clip would give it away).
    rater = store.join(info.code, rater_id=rater_id)
    practised = info.items[plan_trials(info.items, rater.seed, 0)[view.state["practice_slot"]].item_id]
    assert view.stage == "practice" and practised.role == "test"
    with pytest.raises(IncompleteAnswer, match="choose one of A, B"):
        submit_answer(recap_home, view.state, None, None)
    with pytest.raises(StudyError, match="choose one of"):
        submit_answer(recap_home, view.state, "A' OR 1=1", None)
    view = submit_answer(recap_home, view.state, "A", None)
    assert view.stage == "trial" and store.answers(info.code) == []
    view = submit_answer(recap_home, view.state, "B", None)
    assert [a["choice"] for a in store.answers(info.code)] == ["B"]
    # Answered once: resuming (with the warm-up asked for) goes straight to the next trial.
    resumed = open_study(recap_home, info.code, resume_code=rater_id, warmup=True)
    assert resumed.stage == "trial" and resumed.state["slot"] == view.state["slot"] and "item 2 of 4" in resumed.status
    # API clients never ask for the warm-up: a new rater starts at the first trial.
    assert open_study(recap_home, info.code).stage == "trial"


def test_a_finished_rater_who_returns_sees_the_end_not_the_warm_up(store, recap_home):
    make_run(recap_home, "run1", ["baseline", "reword-1a"], [0])
    info = store.create(StudyConfig(kind="ab", pairs=["baseline:reword-1a"], repeats=0, checks=0), ["run1"])
    view = open_study(recap_home, info.code)
    view = submit_answer(recap_home, view.state, "A", None)
    assert view.stage is None and "All done" in view.status
    back = open_study(recap_home, info.code, resume_code=view.state["rater_id"], warmup=True)
    assert back.stage is None and "All done" in back.status
