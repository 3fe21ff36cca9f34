"""Stable Audio 3 (`tiny-sa3`): the same wording study as on the other families, on SA3's own terms.

recap's loop is StableAudio3Pipeline's (noise and ping-pong re-noise included), a seed's clips
differ only by their prompt, learned tokens splice into T5Gemma's input embeddings, TI trains on
the rectified-flow objective, transfer starts late on the log-SNR schedule, and the distilled
checkpoint refuses the guidance it does not have.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recap.audio_io import Clip
from recap.backends.registry import ModelDefaults, get_spec, offline_fallback
from recap.errors import BadInput
from recap.generation.grid import GenerationConfig, Variant, generate_grid, save_run
from recap.generation.transfer import TransferConfig, noise_share, start_point, transfer

SR = 16_000
PROMPTS = ["rain on a tin roof", "a dog barking in the distance"]


@pytest.fixture(scope="session")
def sa3():
    from recap.backends.loading import load_backend

    return load_backend("tiny-sa3")


@pytest.fixture(scope="module")
def sa3_base():
    """The base checkpoint's layout: deterministic Euler sampler, real CFG (built here, not registered)."""
    from recap.backends.stable_audio3 import StableAudio3Backend
    from recap.backends.tiny import tiny_stable_audio3_pipeline

    pipe = tiny_stable_audio3_pipeline(distilled=False)
    pipe.tokenizer.model_max_length = int(1e30)  # as Gemma's tokenizer declares: no length of its own
    backend = StableAudio3Backend("tiny-sa3-base", "recap/tiny-stable-audio-3-base", pipe, torch.device("cpu"),
                                  torch.float32, random_weights=True)
    backend.defaults = ModelDefaults(seconds=1.0, steps=6, guidance=3.0)
    backend.freeze()
    return backend


def pulses(n: int = 3, seconds: float = 1.0) -> list[Clip]:
    t = np.arange(int(SR * seconds)) / SR
    gate = (np.sin(2 * np.pi * 4 * t) > 0).astype(np.float32)
    return [Clip((0.5 * gate * np.sin(2 * np.pi * (500 + 50 * i) * t))[None].astype(np.float32), SR, f"p{i}.wav")
            for i in range(n)]


# ----------------------------------------------------------------------------- the pipeline's loop
def test_distilled_loop_is_the_pipelines_noise_and_renoise_included(sa3):
    """recap draws each clip's start and its ping-pong re-noise from its seed, as the pipeline does from
    ``generator=[Generator().manual_seed(s), ...]``: the pipeline, drawing everything itself, lands on
    recap's latents exactly."""
    ours = sa3.generate(PROMPTS, [0, 1], seconds=1.0, steps=8)
    ref = sa3.pipe(prompt=PROMPTS, duration=1.0, num_inference_steps=8, output_type="latent",
                   generator=[torch.Generator().manual_seed(s) for s in (0, 1)]).audios
    torch.testing.assert_close(ref.float(), ours.final, rtol=1e-5, atol=1e-5)
    assert ours.audio.shape == (2, 2, SR) and torch.isfinite(ours.audio).all()
    assert sa3.distilled and sa3.pipe.scheduler.config.stochastic_sampling


def test_base_loop_with_guidance_and_negative_prompt_is_the_pipelines(sa3_base):
    # prompts are padded to the pipeline's 256 tokens, not to the tokenizer's unbounded length
    assert sa3_base.max_prompt_tokens == 256 and sa3_base.tokenize(PROMPTS).input_ids.shape == (2, 256)
    ours = sa3_base.generate(PROMPTS, [3, 4], seconds=1.0, steps=5, guidance=3.0, negative_prompt="low quality")
    ref = sa3_base.pipe(prompt=PROMPTS, negative_prompt=["low quality"] * 2, duration=1.0, num_inference_steps=5,
                        guidance_scale=3.0, latents=ours.initial.clone(), output_type="latent").audios
    torch.testing.assert_close(ref.float(), ours.final, rtol=1e-5, atol=1e-5)
    # no negative prompt: the pipeline's unconditional branch is the empty prompt
    ours = sa3_base.generate(PROMPTS[:1], [3], seconds=1.0, steps=5, guidance=3.0)
    ref = sa3_base.pipe(prompt=PROMPTS[:1], duration=1.0, num_inference_steps=5, guidance_scale=3.0,
                        latents=ours.initial.clone(), output_type="latent").audios
    torch.testing.assert_close(ref.float(), ours.final, rtol=1e-5, atol=1e-5)


def test_distilled_model_refuses_guidance_and_negative_prompts(sa3):
    with pytest.raises(BadInput, match="guidance is built into its weights and fixed at 1"):
        sa3.generate(["rain"], [0], seconds=1.0, guidance=3.0)
    with pytest.raises(BadInput, match="negative prompt would change nothing"):
        sa3.generate(["rain"], [0], seconds=1.0, negative_prompt="noise")
    with pytest.raises(BadInput, match="fixed at 1"):
        generate_grid(sa3, [Variant("baseline", "rain")], GenerationConfig(seconds=1.0, steps=2, guidance=7.0))


# ----------------------------------------------------------------------------- identical noise
def test_grid_clips_of_a_seed_share_their_noise_and_do_not_depend_on_the_batch(sa3):
    variants = [Variant("baseline", PROMPTS[0]), Variant("reworded", "heavy rain falling on a metal roof")]
    batched = generate_grid(sa3, variants, GenerationConfig(seconds=1.0, steps=8, seeds=[5, 6]))
    alone = generate_grid(sa3, variants, GenerationConfig(seconds=1.0, steps=8, seeds=[5, 6], max_batch=1))
    assert batched.batch_sizes == [4] and alone.batch_sizes == [1] * 4
    for seed in (5, 6):
        a, b = batched.clip("baseline", seed), batched.clip("reworded", seed)
        torch.testing.assert_close(a.initial, b.initial, rtol=0, atol=0)  # the prompt is the only difference
        assert not torch.allclose(a.final, b.final)
        for v in variants:
            torch.testing.assert_close(batched.clip(v.label, seed).final, alone.clip(v.label, seed).final,
                                       rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched.clip("baseline", 5).initial, batched.clip("baseline", 6).initial)


# ----------------------------------------------------------------------------- learned tokens
def test_a_learned_token_changes_the_embedding_only_where_it_stands(sa3):
    table = sa3.text_encoder.get_input_embeddings()
    rows, vocab = table.weight.shape, len(sa3.tokenizer)
    prompt = "a recording of <zz> in the rain"
    vec = torch.randn(1, sa3.embedding_dim, generator=torch.Generator().manual_seed(0))
    one, other = sa3.tokenize([prompt], {"<zz>": vec}), sa3.tokenize([prompt], {"<zz>": 3 * vec})
    e1, e2 = sa3.input_embeddings(one)[0], sa3.input_embeddings(other)[0]
    where = one.input_ids[0] == one.extra_ids[0]
    assert where.sum() == 1
    torch.testing.assert_close(e1[where][0], vec[0])
    torch.testing.assert_close(e1[~where], e2[~where], rtol=0, atol=0)  # every other position untouched
    assert not torch.allclose(e1[where], e2[where])
    # ... and it reaches the text encoder's output (T5Gemma is bidirectional: every position sees it)
    assert not torch.allclose(sa3.embed_text([prompt], {"<zz>": vec}), sa3.embed_text([prompt], {"<zz>": 3 * vec}))
    assert table.weight.shape == rows and len(sa3.tokenizer) == vocab  # the 256k-row matrix is never resized
    assert sa3.unknown_words("A dog barking in the rain", {"<zz>": vec}) == []  # case is kept, as Gemma's


def test_one_textual_inversion_step_moves_only_the_token(sa3, tmp_path):
    from recap.tokens.training import TIConfig, initial_vectors, train_token

    before = sa3.parameters_snapshot()
    losses = []
    config = TIConfig(placeholder="<pulse>", init_word="beep", steps=1, seconds=1.0, batch_size=2, checkpoint_every=0)
    token = train_token(sa3, pulses(), config, on_step=lambda s: losses.append(s.loss), checkpoint_dir=tmp_path)
    after = sa3.parameters_snapshot()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert len(losses) == 1 and math.isfinite(losses[0])
    init = initial_vectors(sa3, config, torch.Generator().manual_seed(0))
    assert token.vectors.shape == (1, sa3.embedding_dim) and not torch.equal(token.vectors, init)


def test_ti_loss_is_the_rectified_flow_objective(sa3):
    """The loss is mse(v, noise - x0) at x_t = (1 - t) x0 + t noise, t ~ U(0, 1), drawn from the generator."""
    x0 = torch.randn(2, *sa3.latent_shape(1.0), generator=torch.Generator().manual_seed(1))
    enc = sa3.tokenize(PROMPTS)
    with torch.no_grad():
        loss = sa3.ti_loss(x0, enc, torch.Generator().manual_seed(7), seconds=1.0)
        g = torch.Generator().manual_seed(7)
        t = torch.rand(2, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        context, mask, global_states = sa3.conditioning(enc, None, 1.0, 1.0)
        v = sa3.pipe.transformer((1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * noise, t, encoder_hidden_states=context,
                                 global_hidden_states=global_states, encoder_attention_mask=mask).sample
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(v, noise - x0))


# ----------------------------------------------------------------------------- transfer
def test_noise_level_is_the_noise_to_signal_ratio_of_rectified_flow(sa3):
    sched = sa3.schedule(8)
    for k in range(1, 8):
        t = float(sched.sigmas[k])
        _, sigma = sa3.noise_level(8, k)
        assert sigma == pytest.approx(t / (1 - t))
        assert noise_share(sigma) == pytest.approx(t * t / (t * t + (1 - t) ** 2))
        x0, noise = torch.ones(1, 2, 3), torch.full((1, 2, 3), 2.0)
        torch.testing.assert_close(sa3.noise_to(x0, noise, 8, k), (1 - t) * x0 + t * noise)
    assert sa3.noise_level(8, 0)[1] == math.inf  # the first step starts from pure noise
    assert start_point(sa3, 1.0, 8).start_step == 0 and start_point(sa3, 0.5, 8).start_step == 7


def test_transfer_zero_is_the_source_and_one_is_plain_generation(sa3):
    t = np.arange(SR) / SR
    source = Clip((0.4 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), SR, "tone.wav")
    cfg = TransferConfig(strengths=[0.0, 0.5, 1.0], seeds=[0, 1], seconds=1.0, steps=8)
    result = transfer(sa3, source, PROMPTS[0], cfg)
    plain = sa3.generate([PROMPTS[0]] * 2, [0, 1], 1.0, 8)
    half = start_point(sa3, 0.5, 8)
    assert 0 < half.start_step < 8 and noise_share(half.sigma) <= 0.5
    for i, seed in enumerate((0, 1)):
        torch.testing.assert_close(result.grid.clip("strength-0.00", seed).final, result.source_latents[0], rtol=0, atol=0)
        torch.testing.assert_close(result.grid.clip("strength-1.00", seed).final, plain.final[i], rtol=1e-5, atol=1e-5)
        mid = result.grid.clip("strength-0.50", seed)
        assert torch.isfinite(mid.final).all() and not torch.allclose(mid.final, plain.final[i])
        assert mid.audio.shape == (2, SR)


# ----------------------------------------------------------------------------- runs and analysis
def test_a_saved_run_is_analysed(sa3, tmp_path):
    from recap.analysis.scoring import analyze_run

    variants = [Variant("baseline", PROMPTS[0]), Variant("reworded", "rain drumming on a metal roof")]
    result = generate_grid(sa3, variants, GenerationConfig(seconds=1.0, steps=4, seeds=[0, 1, 2]))
    run = save_run(result, sa3, tmp_path)
    assert run.model["family"] == "stable-audio-3" and run.model["distilled"] is True
    analysis = analyze_run(run.path, backend=sa3)
    assert (run.path / "metrics.json").is_file() and len(analysis.clips) == 6
    pairs = analysis.baseline_pairs  # baseline vs the rewording, same seed
    assert len(pairs) == 3 and all(p.seed_a == p.seed_b and math.isfinite(p.cosine) for p in pairs)
    assert {(p.variant_a, p.variant_b) for p in pairs} == {("baseline", "reworded")}
    assert len(analysis.seed_pairs) > 0 and len(analysis.reconstruction) == 6


def test_a_converted_checkpoint_in_recap_home_loads_under_its_hub_id(sa3, recap_home):
    """Stable Audio 3 is not on the Hub in diffusers' format: a folder converted by diffusers' script,
    placed at $RECAP_HOME/models/<hub id>, is what `--model sa3` loads."""
    from recap.backends.loading import load_backend
    from recap.backends.registry import availability, local_folder

    spec = get_spec("sa3")
    assert local_folder(spec) is None and "convert_stable_audio_3_to_diffusers.py" in availability(spec)
    sa3.pipe.save_pretrained(recap_home / "models" / spec.model_id)
    assert local_folder(spec) == recap_home / "models" / spec.model_id
    loaded = load_backend("sa3", device="cpu")
    assert (loaded.name, loaded.family, loaded.distilled, loaded.max_seconds) == (spec.name, "stable-audio-3", True, 380.0)
    ours = sa3.generate(PROMPTS[:1], [2], seconds=1.0, steps=4)
    torch.testing.assert_close(loaded.generate(PROMPTS[:1], [2], seconds=1.0, steps=4).final, ours.final)


def test_encode_decode_and_the_registry(sa3):
    z = sa3.encode_audio(pulses(1)[0].audio, SR)
    assert z.shape == (1, *sa3.latent_shape(1.0))
    torch.testing.assert_close(z, sa3.encode_audio(pulses(1)[0].audio, SR), rtol=0, atol=0)
    assert sa3.decode(z, 0.5).shape == (1, 2, SR // 2)
    spec = get_spec("tiny-sa3")
    assert (spec.family, spec.defaults, spec.max_seconds) == (sa3.family, sa3.defaults, sa3.max_seconds)
    medium, base = get_spec("sa3"), get_spec("sa3-base")
    assert medium.name == "stabilityai/stable-audio-3-medium" and medium.defaults.guidance == 1.0
    assert medium.defaults.steps == 8 and base.defaults.steps == 100 and base.defaults.guidance > 1.0
    assert medium.gated and base.gated and medium.max_seconds == base.max_seconds == 380.0
    assert offline_fallback("sa3") == "tiny-sa3"


# ----------------------------------------------------------------------------- every feature end to end
def test_textual_inversion_stopped_and_resumed_equals_an_uninterrupted_run(sa3, tmp_path):
    """As on the other families: the checkpoint holds the vectors, the optimiser and every generator, so a
    run stopped at step 3 and resumed lands on the same bits as one that never stopped."""
    import threading

    from recap.tokens.files import load_token, save_token
    from recap.tokens.training import TIConfig, train_token

    config = TIConfig(placeholder="<pulse>", init_word="beep", steps=6, seconds=1.0, batch_size=2, checkpoint_every=2)
    full = train_token(sa3, pulses(), config, checkpoint_dir=tmp_path / "a")
    stop = threading.Event()
    partial = train_token(sa3, pulses(), config, on_step=lambda s: s.step == 3 and stop.set(), stop=stop,
                          checkpoint_dir=tmp_path / "b")
    assert partial.meta["steps_done"] == 3 and partial.meta["complete"] is False
    resumed = train_token(sa3, pulses(), config, checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.meta["steps_done"] == 6 and resumed.meta["complete"]
    torch.testing.assert_close(resumed.vectors, full.vectors, rtol=0, atol=0)
    assert resumed.meta["losses"] == full.meta["losses"]
    # the saved token generates with the model it was trained on
    loaded = load_token(sa3, save_token(resumed, tmp_path / "tokens"))
    assert loaded.meta["model_id"] == sa3.model_id
    learned = sa3.generate(["a recording of a <pulse> in a hall"], [0], seconds=1.0, steps=2, tokens=loaded.as_tokens())
    init_word = sa3.generate(["a recording of a beep in a hall"], [0], seconds=1.0, steps=2)
    assert torch.isfinite(learned.audio).all() and not torch.allclose(learned.final, init_word.final)


def test_a_batch_experiment_runs_on_tiny_sa3(sa3, tmp_path):
    """Two prompts, a synonym rewording each, one seed: units, pairs and the summary, at the model's own
    guidance 1 (the experiment's default), with the model named in its config."""
    import csv
    import json
    from pathlib import Path

    from recap.experiment.config import ExperimentConfig, PromptSelection
    from recap.experiment.runner import run_experiment
    from recap.rewording.base import RecaptionConfig

    prompts = Path(__file__).resolve().parent.parent / "assets" / "prompts.csv"
    config = ExperimentConfig(name="sa3", model="tiny-sa3", prompts=PromptSelection(file=str(prompts), ids=["1", "40"]),
                              seeds_per_prompt=1, seconds=1.0, steps=2, distances=["light"],
                              recaption=RecaptionConfig(n=1, method="synonym"), n_boot=200)
    outcome = run_experiment(config, tmp_path / "out", sa3)
    out = tmp_path / "out"
    assert outcome.units_written == 4 and outcome.units_skipped == 0  # 2 prompts x (baseline, light) x 1 seed
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["name"] == "tiny-sa3" and saved["model"]["family"] == "stable-audio-3"
    with open(out / "pairs.csv", newline="") as f:
        pairs = list(csv.DictReader(f))
    assert [p["prompt_id"] for p in pairs] == ["1", "40"] and {p["method"] for p in pairs} == {"synonym"}
    assert all(math.isfinite(float(p["cosine"])) and float(p["cosine"]) <= 1.0 for p in pairs)
    assert len(list(out.glob("units/*/*.wav"))) == 4 and (out / "summary.csv").is_file()
    # resuming a finished experiment generates nothing
    assert run_experiment(config, out, sa3).units_written == 0


def test_a_listening_study_is_built_from_a_tiny_sa3_run_and_answered(sa3, recap_home):
    import uuid

    from recap.study.stats import summarize
    from recap.study.store import StudyConfig, StudyStore

    variants = [Variant("baseline", PROMPTS[0]), Variant("reworded", "rain drumming on a metal roof")]
    result = generate_grid(sa3, variants, GenerationConfig(seconds=1.0, steps=2, seeds=[0, 1]))
    run = save_run(result, sa3, recap_home / "runs")
    store = StudyStore(recap_home)
    info = store.create(StudyConfig(kind="ab", name="SA3 rain", pairs=["baseline:reworded"], repeats=0, checks=0),
                        [run.run_id])
    assert len(info.items) == 2 and {i.label_a for i in info.items} == {f"{run.run_id}/baseline@seed{s}" for s in (0, 1)}
    rater = store.join(info.code, name="r1")
    answered = 0
    while (trial := store.trial(rater.rater_id)) is not None:
        assert all(clip.is_file() for clip in trial.clips)
        assert store.submit(uuid.uuid4().hex, rater.rater_id, trial.slot, "A")
        answered += 1
    assert answered == 2
    results = summarize(info, store.answers(info.code))
    (row,) = results.preferences
    assert row.condition == "baseline:reworded" and row.n == 2 and sum(s.count for s in row.shares) == 2


# ----------------------------------------------------------------------------- the app
def test_picking_a_distilled_model_locks_guidance_at_1_and_the_negative_prompt_saying_why():
    from recap.ui.compare import model_defaults

    seconds, steps, guidance, negative = model_defaults("sa3")
    assert (seconds["value"], seconds["maximum"], steps["value"]) == (10.0, 380.0, 8)
    assert guidance["value"] == 1.0 and guidance["interactive"] is False
    assert "fixed at 1" in guidance["label"] and "built into its weights" in guidance["info"]
    assert negative["value"] == "" and negative["interactive"] is False
    assert "not supported" in negative["label"] and "classifier-free guidance" in negative["placeholder"]
    assert model_defaults("tiny-sa3")[2]["interactive"] is False
    # the base checkpoint (and every model with CFG) unlocks both again, at its own default guidance
    _, steps, guidance, negative = model_defaults("sa3-base")
    assert (steps["value"], guidance["value"], guidance["interactive"], negative["interactive"]) == (100, 7.0, True, True)
    assert guidance["info"] is None and "value" not in negative  # a typed negative prompt is kept
    assert model_defaults("tiny")[2]["interactive"] is True


def test_the_registry_says_which_models_have_fixed_guidance_as_their_backends_do(sa3, sa3_base):
    assert get_spec("tiny-sa3").fixed_guidance == sa3.defaults.guidance == 1.0 and sa3.distilled
    assert get_spec("sa3").fixed_guidance == 1.0 and not get_spec("sa3").negative_prompts
    assert get_spec("sa3-base").fixed_guidance is None and not sa3_base.distilled
    assert all(s.fixed_guidance is None for s in (get_spec("tiny"), get_spec("sao"), get_spec("tiny-audioldm")))


def test_a_distilled_start_model_opens_with_its_fields_locked(tmp_path):
    """The compare tab's fields are built for a model with CFG; with a distilled start model the page's
    load event locks them, and the model picker's change event updates all four fields."""
    from recap.config import Settings
    from recap.ui.app import build_app
    from recap.ui.compare import model_defaults
    from recap.ui.context import AppContext

    def wired(start):
        demo = build_app(AppContext(settings=Settings(home=tmp_path, model=start), start_model=start))
        found = [(d, [t[1] for t in d.targets]) for d in demo.fns.values() if d.fn is model_defaults]
        return [(events, [getattr(c, "label", None) for c in d.outputs]) for d, events in found]

    sa3_events = wired("tiny-sa3")
    assert [(set(e), labels) for e, labels in sa3_events] == [
        ({"change", "load"}, ["Seconds", "Steps", "Guidance (<= 1: off)", "Negative prompt (optional)"])]
    assert [e for e, _ in wired("tiny")] == [["change"]]  # nothing to lock: no extra page-load request


def test_the_about_tab_and_the_readme_list_what_each_model_supports():
    from pathlib import Path

    from recap.ui.about import SUPPORT, support_table

    table = support_table()
    assert table in SUPPORT and table in (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ")[1:] for line in table.splitlines()[2:]}
    assert rows["stabilityai/stable-audio-3-medium"][1:4] == ["no: fixed at 1 (guidance-distilled)", "no", "yes"]
    assert rows["stabilityai/stable-audio-3-medium-base"][1:3] == ["yes (default 7)", "yes"]
    assert rows["stabilityai/stable-audio-3-medium"][-1] == "380 |"
