"""CLAP-A / CLAP-T scoring (recap.metrics.clap) on a tiny random CLAP built offline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

from recap.errors import ModelUnavailable
from recap.metrics.clap import (CLAP_PRESETS, CLAP_SAMPLE_RATE, DEFAULT_CLAP_MODEL, DEFAULT_CLAP_PRESET, PAPER_CLAP_MODEL,
                                ClapScorer, ClapUnavailable, clap_a, clap_t, is_cached, paper_waveform)

TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tokenizers" / "tiny-roberta"


def tiny_clap() -> tuple[ClapModel, ClapProcessor]:
    torch.manual_seed(0)
    config = ClapConfig(
        text_config=dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, projection_dim=32, max_position_embeddings=64),
        audio_config=dict(spec_size=64, window_size=4, num_mel_bins=16, patch_stride=2, patch_embeds_hidden_size=16,
                          hidden_size=32, projection_dim=32, depths=[2, 2], num_attention_heads=[2, 2],
                          num_hidden_layers=2, intermediate_size=37),
        projection_dim=32,
    )
    model = ClapModel(config).eval()
    # One-second windows keep the test fast; the released checkpoints use 10 s.
    extractor = ClapFeatureExtractor(feature_size=16, sampling_rate=CLAP_SAMPLE_RATE, hop_length=480,
                                     max_length_s=1, fft_window_size=512)
    processor = ClapProcessor(feature_extractor=extractor, tokenizer=AutoTokenizer.from_pretrained(TOKENIZER))
    return model, processor


@pytest.fixture(scope="module")
def scorer() -> ClapScorer:
    model, processor = tiny_clap()
    return ClapScorer(model, processor, name="tiny-clap")


def noise(seconds: float, sr: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def test_default_model_is_the_unfused_htsat_at_48k():
    assert DEFAULT_CLAP_MODEL == "laion/clap-htsat-unfused"
    assert CLAP_SAMPLE_RATE == 48_000


def test_audio_embeddings_are_unit_vectors_and_deterministic(scorer):
    clips = [noise(0.5, 16_000, 0), np.stack([noise(0.5, 16_000, 1)] * 2), noise(2.6, 16_000, 2)]
    emb = scorer.embed_audio(clips, 16_000)
    assert emb.shape == (3, 32)
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-5)
    # the 2.6 s clip spans three 1 s windows; cutting it into windows (not a random crop) keeps it stable
    torch.testing.assert_close(scorer.embed_audio(clips, 16_000), emb)
    # stereo with equal channels embeds like its mono mix
    torch.testing.assert_close(scorer.embed_audio([noise(0.5, 16_000, 1)], 16_000)[0], emb[1], atol=1e-5, rtol=0)


def test_text_embeddings_and_scores(scorer):
    text = scorer.embed_text(["rain on a tin roof", "a dog barking"])
    audio = scorer.embed_audio([noise(0.5, 16_000, 0), noise(0.5, 16_000, 1)], 16_000)
    assert text.shape == (2, 32)
    scores = clap_t(audio, text)
    assert scores.shape == (2,) and np.all(np.abs(scores) <= 1)
    assert scores[0] == pytest.approx(float(audio[0] @ text[0]), abs=1e-5)
    # a clip compared with itself as the only reference scores 1
    assert clap_a(audio[:1], audio[:1])[0] == pytest.approx(1.0, abs=1e-5)


def test_clap_a_and_clap_t_by_hand():
    clips = np.array([[1.0, 0.0], [0.0, 2.0]])
    refs = np.array([[1.0, 0.0], [1.0, 1.0]])
    # clip 0: cos with (1,0) = 1, with (1,1) = 1/sqrt(2) -> mean (1 + 0.7071) / 2 = 0.8536
    # clip 1: cos with (1,0) = 0, with (1,1) = 1/sqrt(2) -> mean 0.3536
    np.testing.assert_allclose(clap_a(clips, refs), [(1 + 1 / math.sqrt(2)) / 2, 1 / (2 * math.sqrt(2))])
    # row-wise: (1,0).(1,0) = 1; (0,2).(1,1) / (2 * sqrt 2) = 1/sqrt(2)
    np.testing.assert_allclose(clap_t(clips, refs), [1.0, 1 / math.sqrt(2)])
    with pytest.raises(ValueError, match="pair up row by row"):
        clap_t(clips, refs[:1])


def test_from_pretrained_loads_a_saved_checkpoint(tmp_path, scorer):
    model, processor = tiny_clap()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert is_cached(str(tmp_path))
    loaded = ClapScorer.from_pretrained(str(tmp_path), device="cpu")
    assert loaded.sample_rate == CLAP_SAMPLE_RATE and loaded.window == CLAP_SAMPLE_RATE
    clip = [noise(0.5, 16_000, 3)]
    torch.testing.assert_close(loaded.embed_audio(clip, 16_000), scorer.embed_audio(clip, 16_000))
    torch.testing.assert_close(loaded.embed_text(["rain"]), scorer.embed_text(["rain"]))


def test_unavailable_weights_give_a_clear_error():
    pattern = r"(?s)'recap-tests/no-such-clap'.*could not be loaded.*Hugging Face Hub"
    with pytest.raises(ClapUnavailable, match=pattern):
        ClapScorer.from_pretrained("recap-tests/no-such-clap", device="cpu", local_files_only=True)
    # allowed to ask the Hub: it fails fast (one quick request, not minutes of download retries)
    with pytest.raises(ClapUnavailable, match=pattern):
        ClapScorer.from_pretrained("recap-tests/no-such-clap", device="cpu")
    assert not is_cached("recap-tests/no-such-clap")


# ----------------------------------------------------------------------------- the papers' CLAP setup
def tiny_fused_clap() -> tuple[ClapModel, ClapProcessor]:
    """A tiny random fusion CLAP: 64 mel bins and a 256 spectrogram as in the released fused model
    (its feature extractor hard-codes 64 bins when it fuses a long clip)."""
    torch.manual_seed(0)
    config = ClapConfig(
        text_config=dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, projection_dim=32, max_position_embeddings=64),
        audio_config=dict(spec_size=256, window_size=4, num_mel_bins=64, patch_stride=8, patch_size=8,
                          patch_embeds_hidden_size=16, hidden_size=32, projection_dim=32, depths=[2, 2],
                          num_attention_heads=[2, 2], num_hidden_layers=2, intermediate_size=37, enable_fusion=True),
        projection_dim=32,
    )
    model = ClapModel(config).eval()
    extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=CLAP_SAMPLE_RATE, hop_length=480,
                                     max_length_s=1, fft_window_size=1024)
    processor = ClapProcessor(feature_extractor=extractor, tokenizer=AutoTokenizer.from_pretrained(TOKENIZER))
    return model, processor


@pytest.fixture(scope="module")
def paper_scorer() -> ClapScorer:
    model, processor = tiny_fused_clap()
    return ClapScorer(model, processor, name="tiny-fused-clap", preprocessing="stable-audio-metrics")


def test_presets_name_checkpoint_and_preprocessing():
    assert DEFAULT_CLAP_PRESET == "recap"  # earlier analyses keep their meaning
    assert CLAP_PRESETS["recap"].model == DEFAULT_CLAP_MODEL and CLAP_PRESETS["recap"].preprocessing == "recap"
    assert CLAP_PRESETS["paper"].model == PAPER_CLAP_MODEL == "laion/clap-htsat-fused"
    assert CLAP_PRESETS["paper"].preprocessing == "stable-audio-metrics"
    assert issubclass(ClapUnavailable, ModelUnavailable)  # the CLI turns it into one sentence
    with pytest.raises(ValueError, match="unknown CLAP preset"):
        ClapScorer.from_preset("nope")


def test_paper_waveform_is_48k_mono_peak_normalised_int16():
    stereo = np.stack([noise(0.5, 16_000, 0), 0.5 * noise(0.5, 16_000, 0)])
    x = paper_waveform(stereo, 16_000)
    assert x.dtype == np.float32 and x.shape == (24_000,)
    # peak at -1 dBFS (int16 truncation can only lower it by one step)
    assert 10 ** (-1 / 20) - 1 / 32767 <= np.max(np.abs(x)) <= 10 ** (-1 / 20)
    np.testing.assert_allclose(x * 32767, np.round(x * 32767), atol=1e-3)  # on the int16 grid
    # level does not matter: a quieter copy prepares to the same waveform (up to one int16 step)
    np.testing.assert_allclose(paper_waveform(0.1 * stereo, 16_000), x, rtol=0, atol=1.01 / 32767)
    with pytest.raises(ValueError, match="silent"):
        paper_waveform(np.zeros(1000, np.float32), 16_000)


def test_paper_preprocessing_embeds_whole_clips_deterministically(paper_scorer):
    short, long = noise(0.5, 16_000, 4), noise(2.5, 16_000, 5)  # the tiny window is 1 s: long is fused
    emb = paper_scorer.embed_audio([short, long], 16_000)
    assert emb.shape == (2, 32)
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-5)
    torch.testing.assert_close(paper_scorer.embed_audio([short, long], 16_000), emb)  # fixed fusion crops
    # peak normalisation: the level of a clip does not change its embedding
    torch.testing.assert_close(paper_scorer.embed_audio([0.2 * short], 16_000)[0], emb[0], atol=2e-4, rtol=0)
    # the whole clip goes to the model once, prepared as stable-audio-metrics prepares it
    inputs = paper_scorer.processor.feature_extractor([paper_waveform(short, 16_000)], sampling_rate=CLAP_SAMPLE_RATE,
                                                      truncation="fusion", padding="repeatpad", return_tensors="pt")
    with torch.no_grad():
        direct = paper_scorer.model.get_audio_features(**inputs).pooler_output[0]
    torch.testing.assert_close(emb[0], torch.nn.functional.normalize(direct, dim=-1), atol=1e-5, rtol=0)
    assert paper_scorer.label == "tiny-fused-clap [stable-audio-metrics]"
    assert paper_scorer.describe()["preprocessing"] == "stable-audio-metrics"


def test_from_preset_loads_a_local_checkpoint_with_the_presets_preprocessing(tmp_path, paper_scorer):
    model, processor = tiny_fused_clap()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = ClapScorer.from_preset("paper", device="cpu", model=str(tmp_path))
    assert (loaded.name, loaded.preprocessing) == (str(tmp_path), "stable-audio-metrics")
    clip = [noise(0.5, 16_000, 6)]
    torch.testing.assert_close(loaded.embed_audio(clip, 16_000), paper_scorer.embed_audio(clip, 16_000))
    assert ClapScorer.from_pretrained(str(tmp_path), device="cpu").label == f"{tmp_path} [recap]"
