"""MUSHRA studies in the core: anchors that really cut, each rater's own shuffle, BS.1534's
post-screening on simulated raters, results with and without it, and the must-play rule enforced
by the store from the play events it logged."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from recap.audio_io import write_wav
from recap.study.anchors import HIDDEN_REFERENCE, lowpass, plan_anchors
from recap.study.mushra import HIDDEN_REFERENCE_MIN, stimulus_order
from recap.study.stats import answer_table, results_figure, summarize, summary_rows
from recap.study.store import StudyConfig, StudyError, StudyStore

SEEDS = [0, 1, 2, 3]
CONDITIONS = ["reword-1a", "reword-1b"]


def make_noise_run(home: Path, run_id: str = "run1", sr: int = 16000, seconds: float = 0.5) -> Path:
    """A run folder of the documented shape whose clips are white noise (broadband, so a low-pass shows)."""
    folder = home / "runs" / run_id
    labels = ["baseline", *CONDITIONS]
    clips = []
    for k, label in enumerate(labels):
        for seed in SEEDS:
            audio = np.random.default_rng([k, seed]).standard_normal(int(seconds * sr)).astype(np.float32) * 0.1
            rel = f"audio/{label}__seed{seed}.wav"
            write_wav(folder / rel, np.stack([audio, audio]), sr)
            clips.append({"variant": label, "seed": seed, "audio": rel, "latents": None, "sha256": ""})
    (folder / "manifest.json").write_text(json.dumps({
        "format": "recap.run/1", "run_id": run_id, "kind": "generate", "created": "2026-01-01T00:00:00+00:00",
        "model": {"name": "tiny", "sample_rate": sr, "channels": 2}, "config": {}, "seeds": SEEDS, "clips": clips,
        "variants": [{"label": lab, "prompt": "rain on a roof", "method": "baseline" if k == 0 else "synonym",
                      "batch": k} for k, lab in enumerate(labels)]}))
    return folder


def mushra_config(**kw) -> StudyConfig:
    return StudyConfig(kind="mushra", name="Rain", reference_variant="baseline", conditions=list(CONDITIONS),
                       repeats=0, **kw)


@pytest.fixture
def store(recap_home) -> StudyStore:
    return StudyStore(recap_home)


def band_power_db(audio: np.ndarray, sr: int, low: float, high: float) -> float:
    freqs, psd = signal.welch(audio, fs=sr, nperseg=1024)
    band = (freqs >= low) & (freqs <= high)
    return float(10 * np.log10(psd[band].mean() + 1e-30))


def test_anchors_cut_above_their_cutoff_and_keep_the_band_below(store, recap_home):
    # The filter itself, at a CD rate: the stop band is ~90 dB down one octave above each cutoff.
    sr = 44100
    noise = np.random.default_rng(0).standard_normal((1, 4 * sr)).astype(np.float32)
    for cutoff in (3500.0, 7000.0):
        out = lowpass(noise, sr, cutoff)[0]
        assert abs(band_power_db(out, sr, 100, 0.5 * cutoff) - band_power_db(noise[0], sr, 100, 0.5 * cutoff)) < 0.5
        assert band_power_db(out, sr, 2 * cutoff, sr / 2) < band_power_db(noise[0], sr, 2 * cutoff, sr / 2) - 80
        assert band_power_db(out, sr, 1.25 * cutoff, 1.5 * cutoff) < band_power_db(noise[0], sr, 100, cutoff) - 25
    # The anchors a study writes: made from its reference copy, at the clip's rate, aligned with it.
    make_noise_run(recap_home, sr=24000)
    info = store.create(mushra_config(), ["run1"])
    for item in info.items:
        ref, sr = sf.read(info.folder / item.clip_a, always_2d=True)
        stimuli = {s.condition: s for s in info.stimuli_of(item.item_id)}
        assert list(stimuli) == [*CONDITIONS, HIDDEN_REFERENCE, "anchor 3.5 kHz", "anchor 7 kHz"]
        assert stimuli[HIDDEN_REFERENCE].clip == item.clip_a
        for name, cutoff in (("anchor 3.5 kHz", 3500), ("anchor 7 kHz", 7000)):
            anchor, anchor_sr = sf.read(info.folder / stimuli[name].clip, always_2d=True)
            assert anchor_sr == sr and anchor.shape == ref.shape
            assert band_power_db(anchor[:, 0], sr, 1.3 * cutoff, sr / 2) < band_power_db(ref[:, 0], sr, 1.3 * cutoff, sr / 2) - 40
            assert abs(band_power_db(anchor[:, 0], sr, 100, 0.5 * cutoff) - band_power_db(ref[:, 0], sr, 100, 0.5 * cutoff)) < 1
            # zero phase: below the cutoff the anchor is the reference, sample for sample
            assert np.corrcoef(lowpass(ref.T, sr, 0.5 * cutoff)[0], lowpass(anchor.T, sr, 0.5 * cutoff)[0])[0, 1] > 0.99
    # Names say nothing: every copy is an opaque file.
    assert all(s.clip.startswith("audio/") and "anchor" not in s.clip and "base" not in s.clip for s in info.stimuli)


def test_an_anchor_above_nyquist_is_skipped_and_said_so(store, recap_home):
    assert [n for n, _ in plan_anchors(8000).anchors] == ["anchor 3.5 kHz"]
    assert "Nyquist" in plan_anchors(8000).skipped[0] and "7000 Hz" in plan_anchors(8000).skipped[0]
    assert plan_anchors(6000).anchors == ()
    make_noise_run(recap_home, sr=8000)
    info = store.create(mushra_config(), ["run1"])
    assert {s.condition for s in info.stimuli} == {*CONDITIONS, HIDDEN_REFERENCE, "anchor 3.5 kHz"}
    assert len(info.notes) == 1 and "anchor 7 kHz skipped" in info.notes[0]


def test_bad_mushra_configs_are_refused_with_sentences(store, recap_home):
    make_noise_run(recap_home)
    bad = {"reference_variant": (None, "needs a reference variant"), "conditions": ([], "at least one condition"),
           "redirect_url": ("javascript:alert(1)", "http:// or https://")}
    for field_, (value, message) in bad.items():
        with pytest.raises(StudyError, match=message):
            store.create(mushra_config(**{field_: value}) if field_ not in ("reference_variant", "conditions")
                         else StudyConfig(kind="mushra", **{"reference_variant": "baseline",
                                                            "conditions": CONDITIONS, field_: value}), ["run1"])
    with pytest.raises(StudyError, match="differ from the reference"):
        store.create(StudyConfig(kind="mushra", reference_variant="baseline", conditions=["baseline"]), ["run1"])
    with pytest.raises(StudyError, match="no variant 'nope'"):
        store.create(StudyConfig(kind="mushra", reference_variant="baseline", conditions=["nope"]), ["run1"])
    assert not store.studies() and not list(store.studies_dir.glob("*"))
    ok = mushra_config(redirect_url="https://app.prolific.com/submissions/complete?cc=C1ABCD",
                       completion_code="C1ABCD")
    ok.validate()
    assert ok.redirect_url.startswith("https://")


def test_each_rater_has_a_deterministic_shuffle_of_their_own(store, recap_home):
    make_noise_run(recap_home)
    info = store.create(mushra_config(), ["run1"])
    raters = [store.join(info.code) for _ in range(4)]
    shown = []
    for rater in raters:
        first = store.trial(rater.rater_id)
        again = store.trial(rater.rater_id, first.slot)
        assert first.clips == again.clips and first.labels == ["1", "2", "3", "4", "5"]
        assert first.reference == info.folder / info.items[0].clip_a or first.reference in {
            info.folder / i.clip_a for i in info.items}
        shown.append(tuple(str(c) for c in first.clips))
    assert len(set(shown)) > 1  # different raters, different orders
    orders = {tuple(stimulus_order(r.seed, 0, 5)) for r in raters}
    assert len(orders) > 1 and stimulus_order(raters[0].seed, 0, 5) == stimulus_order(raters[0].seed, 0, 5)


def rate_like(store: StudyStore, info, rater_id: str, score_of) -> None:
    """A simulated rater who hears which condition each clip is and scores it with ``score_of(condition)``."""
    while (trial := store.trial(rater_id)) is not None:
        item = info.items[next(i.item_id for i in info.items if info.folder / i.clip_a == trial.reference)]
        by_clip = {info.folder / s.clip: s.condition for s in info.stimuli_of(item.item_id)}
        scores = {label: score_of(by_clip[clip]) for label, clip in zip(trial.labels, trial.clips)}
        assert store.submit(uuid.uuid4().hex, rater_id, trial.slot, scores=scores, device="desktop")


def test_post_screening_excludes_exactly_the_raters_who_rate_the_hidden_reference_low(store, recap_home, tmp_path):
    make_noise_run(recap_home)
    info = store.create(mushra_config(), ["run1"])
    truth = {"reword-1a": 70, "reword-1b": 40, HIDDEN_REFERENCE: 100, "anchor 3.5 kHz": 10, "anchor 7 kHz": 30}
    good, bad, borderline = [], [], []
    for k in range(6):  # careful raters: the truth plus a small personal offset
        rater = store.join(info.code, name=f"good{k}")
        rate_like(store, info, rater.rater_id, lambda c, k=k: min(100, truth[c] + (k % 3) - (0 if c == HIDDEN_REFERENCE else 1)))
        good.append(rater)
    for k in range(2):  # raters who always rate the hidden reference low (and everything else high)
        rater = store.join(info.code, name=f"bad{k}")
        rate_like(store, info, rater.rater_id, lambda c: 50 if c == HIDDEN_REFERENCE else 95)
        bad.append(rater)
    # Below 90 in 1 of 4 trials = 25 % > 15 %: excluded too; nobody else is.
    rater = store.join(info.code, name="once-low")
    low_once = iter([True, False, False, False])
    rate_like(store, info, rater.rater_id, lambda c: (60 if next(low_once) else 95) if c == HIDDEN_REFERENCE else truth[c])
    borderline.append(rater)

    info = store.get(info.code)
    answers = store.answers(info.code)
    results = summarize(info, answers)
    excluded = {s.rater for s in results.screening if s.excluded}
    assert excluded == {r.pseudonym for r in bad + borderline}
    assert results.excluded_by == {"failed checks": 0, "hidden reference below 90 in more than 15 % of trials": 3}
    screened = {r.condition: r for r in results.mushra}
    everyone = {r.condition: r for r in results.mushra_unscreened}
    assert screened["reword-1a"].raters == 6 and everyone["reword-1a"].raters == 9
    assert screened[HIDDEN_REFERENCE].mean >= HIDDEN_REFERENCE_MIN > everyone[HIDDEN_REFERENCE].mean
    assert abs(screened["reword-1b"].mean - 40) < 2 and everyone["reword-1b"].mean > 50  # the bad raters' 95s
    r = screened["reword-1a"]
    assert r.low < r.mean < r.high and r.n == 6 * len(SEEDS)
    # The boxplot shows the screened scores per condition, in the study's order.
    assert list(results.mushra_scores) == [*CONDITIONS, HIDDEN_REFERENCE, "anchor 3.5 kHz", "anchor 7 kHz"]
    fig = results_figure(results)
    assert [t.type for t in fig.data] == ["box"] * 5 and len(fig.data[0].y) == 6 * len(SEEDS)
    # Exports: the summary says both tables and the exclusions; every answer names its shown order.
    rows = summary_rows(results)
    assert {r["section"] for r in rows} >= {"mushra (screened)", "mushra (all raters)", "excluded"}
    table = answer_table(info, answers)
    assert all(row["shown_order"].count("|") == 4 and row["device"] == "desktop" for row in table)
    assert {row["score_hidden reference"] for row in table if row["rater_name"] == "bad0"} == {50}


def test_must_play_is_enforced_by_the_store_from_logged_plays(store, recap_home):
    make_noise_run(recap_home)
    info = store.create(mushra_config(must_play=True), ["run1"])
    rater = store.join(info.code)
    trial = store.trial(rater.rater_id)
    assert trial.must_play and trial.required == ["reference", "1", "2", "3", "4", "5"]
    scores = {label: 50 for label in trial.labels}
    with pytest.raises(StudyError, match=r"^Play the reference to the end before answering \(and then clip 1, "):
        store.submit("answer-0001", rater.rater_id, trial.slot, scores=scores)
    t = 1000.0
    for clip in trial.required[:-1]:  # all but clip 5, each to the end
        assert store.play(rater.rater_id, trial.slot, clip, "play", now=t)
        assert store.play(rater.rater_id, trial.slot, clip, "end", now=t + 0.5)
        t += 1
    store.play(rater.rater_id, trial.slot, "5", "play", now=t)
    store.play(rater.rater_id, trial.slot, "5", "pause", now=t + 0.2)  # stopped half way: not enough
    with pytest.raises(StudyError, match=r"^Play clip 5 to the end before answering\.$"):
        store.submit("answer-0001", rater.rater_id, trial.slot, scores=scores)
    assert store.answers(info.code) == []
    store.play(rater.rater_id, trial.slot, "5", "play", now=t + 1)
    store.play(rater.rater_id, trial.slot, "5", "pause", now=t + 1.5)  # players pause as they end ...
    assert store.play(rater.rater_id, trial.slot, "5", "end", now=t + 1.6)  # ... then say they ended
    missing = dict(scores)
    del missing["3"]
    with pytest.raises(StudyError, match="Rate clip 3"):  # an untouched slider is no score
        store.submit("answer-0001", rater.rater_id, trial.slot, scores=missing)
    with pytest.raises(StudyError, match="score of clip 2"):
        store.submit("answer-0001", rater.rater_id, trial.slot, scores={**scores, "2": 101})
    assert store.submit("answer-0001", rater.rater_id, trial.slot, scores=scores, device="phone")
    (answer,) = store.answers(info.code)
    assert answer["plays"]["5"] == {"plays": 2, "seconds": 0.7, "ended": True}
    assert answer["plays"]["reference"] == {"plays": 1, "seconds": 0.5, "ended": True}
    assert answer["listen_s"] == pytest.approx(0.5 * 5 + 0.7) and answer["device"] == "phone"
    logged = store.plays(info.code)
    assert len(logged) == 7 and {p["rater"] for p in logged} == {rater.pseudonym}
    assert rater.rater_id not in json.dumps(logged)
    # Events for an answered trial change nothing; unknown clips and events are refused.
    assert not store.play(rater.rater_id, trial.slot, "1", "play")
    nxt = store.trial(rater.rater_id)
    for clip, event, message in (("9", "play", "no clip '9'"), ("1", "seek", "play event is one of")):
        with pytest.raises(StudyError, match=message):
            store.play(rater.rater_id, nxt.slot, clip, event)


def test_cli_creates_mushra_and_abx_studies_and_prints_and_plots_their_results(recap_home, tmp_path, capsys):
    import argparse

    from recap.analysis.figures import static_export_available
    from recap.cli.study import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))

    def cli(*argv):
        args = parser.parse_args(list(argv))
        assert args.func(args) == 0
        return capsys.readouterr()

    make_noise_run(recap_home, sr=8000)
    made = cli("study", "create", "--type", "mushra", "--reference", "baseline", "--conditions", *CONDITIONS,
               "--run", "run1", "--must-play", "--completion-code", "C0DE-42",
               "--redirect-url", "https://app.prolific.com/submissions/complete?cc=C0DE-42")
    code = made.out.strip()
    assert "anchor 7 kHz skipped" in made.err and "4 MUSHRA trials of 4 clips" in made.err
    store = StudyStore(recap_home)
    info = store.get(code)
    assert info.config.must_play and info.config.completion_code == "C0DE-42" and info.config.checks == 0
    store_cfg = info.config
    store_cfg.must_play = False  # the simulated raters below do not play; scoring is what is checked here
    for k in range(3):
        rate_like(StudyStore(recap_home), info, _join_without_plays(store, code, store_cfg), lambda c, k=k: {
            HIDDEN_REFERENCE: 100, "anchor 3.5 kHz": 5}.get(c, 50 + 10 * k))
    out = cli("study", "results", code, "--plot", str(tmp_path / "mushra.html")).out
    assert "MUSHRA, post-screened (BS.1534)" in out and "MUSHRA, every rater (no post-screening)" in out
    assert "hidden reference below 90 in more than 15 % of trials" in out
    assert (tmp_path / "mushra.html").is_file()
    if static_export_available():
        assert (tmp_path / "mushra.png").is_file() and (tmp_path / "mushra.svg").is_file()
    abx_code = cli("study", "create", "--type", "abx", "--pair", "baseline:reword-1a", "--run", "run1").out.strip()
    assert store.get(abx_code).config.kind == "abx"
    assert "raters excluded" in cli("study", "results", abx_code).out  # no answers yet: the tables are empty


def _join_without_plays(store: StudyStore, code: str, config: StudyConfig) -> str:
    """A rater of a study whose must-play rule is switched off in the database (the test's raters do not play)."""
    import json as json_
    from dataclasses import asdict

    with store.connect(write=True) as conn:
        conn.execute("UPDATE studies SET config = ? WHERE code = ?", (json_.dumps(asdict(config)), code))
    return store.join(code).rater_id


def test_must_play_holds_through_the_launched_app_for_the_queue_and_gradio_client(recap_home):
    """The raw queue protocol (what a page or a script sends) and gradio_client: a submit without the
    plays is refused with a sentence beside the answer and stores nothing; after the plays it is stored."""
    from attack import RawSession, served
    from gradio_client import Client

    from recap.config import Settings

    make_noise_run(recap_home, sr=8000, seconds=0.25)
    store = StudyStore(recap_home)
    code = store.create(mushra_config(must_play=True, completion_code="DONE-1"), ["run1"]).code
    with served(Settings(home=recap_home, model="tiny")) as (_, url):
        tab = RawSession(url, query=f"?study={code}")
        opened = tab.call(tab.event(api_name="study_open"), {tab.component(label="Study code"): code})
        assert opened.ok, opened.error
        submit = tab.event(api_name="study_submit")
        message = tab.component(elem_id="study-answer-message")

        def send(**values):
            out = tab.call(submit, {tab.component(elem_id=f"study-score-{k}"): v for k, v in values.items()})
            assert out.ok, out.error
            shown = dict(zip(tab.outputs(submit), out.output))
            text = shown[message]
            shown[message] = text.get("value", "") if isinstance(text, dict) else text
            return shown

        refused = send()
        assert refused[message].startswith("**Play the reference to the end before answering")
        assert store.answers(code) == []
        play = tab.event(api_name="study_play")
        for clip in ["reference", "1", "2", "3", "4"]:
            for event in ("play", "end"):
                assert tab.call(play, {tab.inputs(play)[1]: clip, tab.inputs(play)[2]: event}).ok
        refused = send(**{str(k): 70 for k in range(1, 5)})
        assert "Rate clip 1" in refused[message]  # sliders never moved are no scores
        for k in range(1, 5):  # the page tells the server which sliders the rater moved
            (touch,) = [d.get("id", i) for i, d in enumerate(tab.config["dependencies"])
                        if [tab.component(elem_id=f"study-score-{k}"), "input"] in [list(t) for t in d["targets"]]]
            assert tab.call(touch, {}).ok
        stored = send(**{str(k): 60 + k for k in range(1, 5)})
        assert stored[message] == "" and len(store.answers(code)) == 1
        (answer,) = store.answers(code)
        assert all(answer["plays"][c]["ended"] for c in ["reference", "1", "2", "3", "4"])
        assert sorted(answer["scores"].values()) == [61, 62, 63, 64]

        client = Client(url, verbose=False, download_files=False)
        client.predict(code, "", "", api_name="/study_open")
        client.predict("1", "play", api_name="/study_play")
        out = client.predict(None, "", None, None, None, 390, *[50] * 12, api_name="/study_submit")
        assert "Play the reference to the end before answering" in str(out)
        assert len(store.answers(code)) == 1
