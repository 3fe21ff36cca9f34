"""The music world (General MIDI instruments rendered with FluidSynth) and the shipped `toy-music` model:
the world's readers tell instrument, tempo and register apart on real renderings, and the model
follows instrument, register and tempo words on seeds it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from recap.toy import music as M
from recap.backends.registry import TOY_MUSIC_DIR, get_spec, toy_music_weights_present

pytestmark = pytest.mark.skipif(M.soundfont_missing() is not None, reason=str(M.soundfont_missing()))

SEEDS = [600, 601, 602, 603]  # never used in training (data seeds 0-5) or in tuning
STEPS = 10  # few denoising steps keep the test quick; the model's default is 25


def _clips(specs: list[M.MusicSpec], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([M.synthesize(s, rng) for s in specs])


# ----------------------------------------------------------------------------- the world
def test_a_seed_reproduces_a_clip_and_bad_specs_are_refused():
    spec = M.MusicSpec("violin", "mid", "fast", "legato", "c")
    first = M.synthesize(spec, np.random.default_rng(3))
    M.synthesize(M.MusicSpec("organ", "low", "slow", "staccato", "d"), np.random.default_rng(1))  # something between
    again = M.synthesize(spec, np.random.default_rng(3))
    assert M.phrase(spec, np.random.default_rng(3)) == M.phrase(spec, np.random.default_rng(3))
    # FluidSynth's voices keep a little state between renders: equal within a few thousandths, not bit for bit
    assert first.shape == (M.CLIP_SAMPLES,) and np.abs(first - again).max() < 0.01
    assert np.abs(first - M.synthesize(spec, np.random.default_rng(4))).max() > 0.1  # another seed, another clip
    with pytest.raises(ValueError, match="'kazoo'"):
        M.MusicSpec("kazoo", "low", "slow", "legato", "c")


def test_the_held_out_instrument_is_a_word_but_never_in_a_training_caption(tmp_path):
    tok = M.build_tokenizer(tmp_path / "tok")
    rng = np.random.default_rng(0)
    captions = [M.caption(s, rng) for s in M.all_specs() for _ in range(10)]
    assert not any(h in c.split() for c in captions for h in M.HELD_OUT_INSTRUMENTS)
    assert all(h in M.vocabulary() for h in M.HELD_OUT_INSTRUMENTS)
    ids = tok(captions, padding="max_length", max_length=M.MAX_TOKENS, truncation=False).input_ids
    assert max(len(i) for i in ids) <= M.MAX_TOKENS and tok.unk_token_id not in {t for i in ids for t in i}
    assert {s.instrument for s in M.all_specs()} == set(M.TRAIN_INSTRUMENTS)
    # the registry's example prompts keep to the words the model reads
    examples = tok(list(get_spec("toy-music").examples)).input_ids
    assert tok.unk_token_id not in {t for i in examples for t in i}


def test_the_instrument_classifier_reads_every_instrument_on_a_fresh_draw():
    classifier = M.reference_classifier()
    specs = [M.MusicSpec(i, r, t, "legato", "c") for i in M.INSTRUMENTS for r in M.REGISTERS for t in M.TEMPOS]
    read = classifier.classify(M.timbre(_clips(specs, seed=77)))
    per = {i: np.mean([r == i for r, s in zip(read, specs) if s.instrument == i]) for i in M.INSTRUMENTS}
    # measured on another draw: 88-100 % per instrument, 95 % overall (chance 1/7)
    assert min(per.values()) >= 0.7 and np.mean([r == s.instrument for r, s in zip(read, specs)]) >= 0.85, per


def test_beat_tracking_reads_slow_and_fast_phrases_within_5_bpm():
    specs = [M.MusicSpec(i, "mid", t, a, "d") for t in M.TEMPOS for i in ("piano", "violin", "trumpet")
             for a in M.ARTICULATIONS]
    bpm = M.tempo(_clips(specs, seed=78))
    right = np.abs(bpm - np.array([s.bpm for s in specs])) <= M.TEMPO_TOLERANCE_BPM
    for tempo in M.TEMPOS:
        rows = [n for n, s in enumerate(specs) if s.tempo == tempo]
        # measured on 168 clips: 90 % (every miss a legato clip read at another tempo)
        assert right[rows].mean() >= 0.8, (tempo, bpm[rows])


def test_median_pitch_separates_the_registers():
    specs = [M.MusicSpec(i, r, "fast", "staccato", k) for r in M.REGISTERS for i in M.TRAIN_INSTRUMENTS for k in M.KEYS]
    pitch = M.median_pitch(_clips(specs, seed=79))
    medians = [np.median([p for p, s in zip(pitch, specs) if s.register == r]) for r in M.REGISTERS]
    assert medians[0] + 10 < medians[1] < medians[2] - 10, medians
    assert np.mean([r == s.register for r, s in zip(M.register_of(pitch), specs)]) >= 0.85


def test_the_key_reader_tells_c_from_d_in_every_register_and_reads_the_register_it_is_given():
    specs = [M.MusicSpec(i, r, t, "legato", k) for i in ("organ", "guitar", "trumpet") for r in M.REGISTERS
             for t in M.TEMPOS for k in M.KEYS]
    audio = _clips(specs, seed=80)
    read = M.key_of(audio, [s.register for s in specs])
    per = {r: np.mean([k == s.key for k, s in zip(read, specs) if s.register == r]) for r in M.REGISTERS}
    # measured on 168 clips of another draw: 91 % (low 93, mid 88, high 91); a 2-3 note slow phrase
    # can sit on notes both keys share, so no reader gets every clip
    assert min(per.values()) >= 0.75 and np.mean([k == s.key for k, s in zip(read, specs)]) >= 0.8, per
    # the key transposes the register's root: read against another register, the same notes mean another key
    wrong = M.key_of(audio, ["high" if s.register == "mid" else "mid" for s in specs])
    assert np.mean([k == s.key for k, s in zip(wrong, specs)]) < 0.7  # measured: 50 %, chance


# ----------------------------------------------------------------------------- the shipped model
@pytest.fixture(scope="module")
def model():
    from recap.backends.loading import load_backend

    if not toy_music_weights_present():
        pytest.skip(f"the toy-music weights are not in {TOY_MUSIC_DIR} (recap toy train --world music)")
    return load_backend("toy-music", device="cpu")


def test_the_registry_says_what_the_loaded_model_reports(model):
    spec = get_spec("toy-music")
    assert spec.max_seconds == pytest.approx(model.max_seconds, abs=1e-9)
    assert (spec.sample_rate, spec.defaults, spec.family) == (model.sample_rate, model.defaults, model.family)
    assert sum(p.stat().st_size for p in TOY_MUSIC_DIR.rglob("*.safetensors")) < 10_000_000


def test_the_model_follows_instrument_words(model):
    from recap.toy.music_eval import instrument_following

    shares = instrument_following(model, SEEDS, STEPS)
    trained = {i: v for i, v in shares.items() if i not in M.HELD_OUT_INSTRUMENTS}
    # measured (seeds 600-603, 10 steps): piano 100 %, organ, trumpet and flute 75 %, guitar and violin 0 %
    # (the VAE loses their timbre: see the model card); chance 1/7
    assert np.mean(list(trained.values())) >= 0.4 and sum(v >= 0.5 for v in trained.values()) >= 4, shares


def test_the_model_follows_register_words(model):
    from recap.toy.music_eval import register_following

    register = register_following(model, SEEDS[:2], STEPS, instruments=("piano", "flute"))
    low, mid, high = (np.median(register["pitch"][r]) for r in M.REGISTERS)
    # measured: low 100 %, mid 50 %, high 75 % (chance 1/3)
    assert low < mid < high and np.mean(list(register["share"].values())) >= 0.5, register


def test_slow_is_slow_and_fast_is_faster_but_rarely_140_bpm(model):
    from recap.toy.music_eval import tempo_following

    tempo = tempo_following(model, SEEDS, STEPS, instruments=("piano", "trumpet", "flute"))
    slow, fast = (np.median(tempo["bpm"][t]) for t in M.TEMPOS)
    # measured: 67 % of slow clips within 5 BPM of 70; fast ones spread from 69 to 208 BPM (median
    # ~100) and only 17 % land within 5 BPM of 140, so no floor is claimed for that share
    assert tempo["share"]["slow"] >= 0.5 and fast > slow + 10, tempo


# ----------------------------------------------------------------------------- Textual Inversion against its controls
def test_a_margin_is_positive_only_when_the_token_beats_every_control():
    from recap.toy.music_eval import TI_CONTROLS, ti_margin

    measured = {c: {"marimba_share": 0.25, "timbre_distance": 5.0} for c in TI_CONTROLS}
    measured["plain words"] = {"marimba_share": 0.5, "timbre_distance": 4.0}  # the strongest control
    measured["token"] = {"marimba_share": 0.75, "timbre_distance": 4.5}
    assert ti_margin(measured, "token", "marimba_share") == pytest.approx(0.25)  # higher share is better
    assert ti_margin(measured, "token", "timbre_distance") == pytest.approx(-0.5)  # a control lands closer


def test_ti_controls_train_a_token_per_draw_keep_them_and_put_intervals_on_draws(model, tmp_path):
    from recap.toy.music_eval import TI_MEASURES, shipped_ti_tokens, ti_controls

    # a plumbing run: 3 optimiser steps per token, 1 seed, 4 denoising steps, 2 unseen clips
    report = ti_controls(model, draws=[1, 2, 3], seeds=[730], n_trains=(1,), ti={"steps": 3}, steps=4,
                         n_unseen=2, keep=tmp_path)
    assert set(report["margins"]) == {"token (1 clip)"}
    for measure in TI_MEASURES:
        margin = report["margins"]["token (1 clip)"][measure]
        assert margin["n"] == 3 and margin["low"] <= margin["mean"] <= margin["high"]
    assert report["conditions"]["real marimba"]["marimba_share"]["mean"] == 1.0  # the reader knows the target
    assert report["conditions"]["real piano"]["marimba_share"]["mean"] == 0.0
    assert report["prompts"]["untrained word"] == "a mid slow legato marimba melody"
    for draw in (1, 2, 3):
        names = sorted(p.name for p in (tmp_path / f"draw-{draw}").glob("*.safetensors"))
        assert names == ["marimba-1.safetensors", "piano-c.safetensors"], names
        kept = shipped_ti_tokens(model, tmp_path / f"draw-{draw}", n_trains=(1,))
        assert {k: t.placeholder for k, t in kept.items()} == {"token (1 clip)": "<marimba-1>", "control token": "<piano-c>"}
        assert kept["token (1 clip)"].meta["steps"] == 3


def test_the_shipped_marimba_tokens_beat_every_control_on_seeds_and_clips_never_used(model):
    from recap.toy.music_eval import TI_MEASURES, TI_TOKENS_DIR, measure_ti_conditions, shipped_ti_tokens, ti_margin

    # the model card's tokens of draw 11 (`recap toy eval --world music --controls --card`), against
    # marimba clips of a draw the card never used and generation seeds it never used
    tokens = shipped_ti_tokens(model, TOY_MUSIC_DIR / TI_TOKENS_DIR / "draw-11")
    measured = measure_ti_conditions(model, tokens, unseen_seed=5000, seeds=[720, 721, 722, 723], steps=STEPS, n_unseen=4)
    margins = {name: {m: ti_margin(measured, name, m) for m in TI_MEASURES} for name in ("token (1 clip)", "token (3 clips)")}
    # measured at these settings: timbre margin 0.94 (1 clip) / 1.08 (3 clips), embedding 0.166 / 0.174;
    # over draws 11-12 x unseen seeds 5000-5002 the smallest were 0.89 and 0.131 (yardstick: real piano lies
    # 6.7 and 0.11 from the marimba). A token that learned nothing is its init word, a control: margin <= 0.
    # No classifier floor: this VAE renders no marimba the classifier can read (the card's ceiling, 0 %).
    for name, margin in margins.items():
        assert margin["timbre_distance"] >= 0.4 and margin["embedding_distance"] >= 0.07, margins
