"""CLAP-A / CLAP-T scoring (recap.metrics.clap) on a tiny random CLAP built offline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

from recap.metrics.clap import CLAP_SAMPLE_RATE, DEFAULT_CLAP_MODEL, ClapScorer, ClapUnavailable, clap_a, clap_t, is_cached

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
