"""`analyze_run` and `recap analyze` on a tiny run folder (recap.analysis.scoring, recap.cli.analyze)."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest

from recap.metrics import similarity as metrics
from recap.analysis.scoring import AnalysisConfig, analyze_run
from recap.audio_io import load_audio, write_wav
from recap.cli import main
from recap.generation.grid import GenerationConfig, Variant, generate_grid, save_run
from recap.generation.runs import load_run

VARIANTS = [
    Variant("baseline", "rain on a tin roof", "baseline", 0),
    Variant("reword-1", "light rain on a metal roof", "synonym", 1),
    Variant("reword-2", "a storm hammering a shed", "llm", 2),
]
SEEDS = [0, 1]


class EncodeCounter:
    """Wraps the real backend's encode_audio and counts the clips it encodes."""

    def __init__(self, backend, monkeypatch):
        self.calls = 0
        self.clips = 0
        real = backend.encode_audio

        def counting(audio, sr):
            self.calls += 1
            self.clips += 1 if np.ndim(audio) == 2 else int(audio.shape[0])
            return real(audio, sr)

        monkeypatch.setattr(backend, "encode_audio", counting)


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    result = generate_grid(tiny, VARIANTS, GenerationConfig(seconds=1.0, steps=2, seeds=SEEDS))
    return save_run(result, tiny, tmp_path_factory.mktemp("runs")).path


@pytest.fixture(scope="module")
def first(run_dir, tiny):
    return analyze_run(run_dir, backend=tiny)


def test_writes_complete_consistent_files(run_dir, first, tiny):
    data = json.loads((run_dir / "metrics.json").read_text())
    assert data["run_id"] == first.run_id and data["config"]["baseline"] == "baseline"
    assert {(c["variant"], c["seed"]) for c in data["clips"]} == {(v.label, s) for v in VARIANTS for s in SEEDS}
    # 2 variants x 2 seeds paired with the baseline; 3 variants x 1 seed pair
    assert len(data["baseline_pairs"]) == 4 and len(data["seed_pairs"]) == 3
    assert len(data["reconstruction"]) == 6 and len(data["text"]) == 2
    assert any("random weights" in n for n in data["notes"])

    # The numbers are the documented metrics of the VAE latents of the WAV files.
    run = load_run(run_dir)
    clip = {k: load_audio(run.audio_path(run.clip(*k))) for k in [("baseline", 1), ("reword-2", 1)]}
    za, zb = (tiny.encode_audio(c.audio, c.sample_rate) for c in clip.values())
    pair = next(p for p in first.baseline_pairs if p.variant_b == "reword-2" and p.seed_b == 1)
    assert pair.cosine == pytest.approx(metrics.cosine(za, zb), abs=1e-6)
    assert pair.l2 == pytest.approx(math.sqrt(max(0.0, 2 - 2 * pair.cosine)), abs=1e-6)
    assert pair.mse == pytest.approx(metrics.mse(za, zb), rel=1e-3)
    emb = tiny.embed_text([VARIANTS[0].prompt, VARIANTS[2].prompt])
    text = next(t for t in first.text if t["variant"] == "reword-2")
    assert text["cosine"] == pytest.approx(metrics.cosine(emb[0], emb[1]), abs=1e-6)

    # Summaries are the mean / variance of the pairs they group.
    cos = [p.cosine for p in first.baseline_pairs if p.variant_b == "reword-1"]
    row = next(r for r in first.table("vs_baseline", "cosine") if r.group == "reword-1")
    assert (row.mean, row.n) == (pytest.approx(np.mean(cos)), 2)
    # Changed with the interval's definition: 2 seeds used to get a percentile-bootstrap interval;
    # below 3 seeds there is none, and the row says over what it would be.
    assert row.variance == pytest.approx(np.var(cos)) and row.ci_low is None and row.ci_high is None
    assert (row.unit, row.method, row.latent) == ("seed", "t", "clip latent")
    assert {r.group for r in first.table("vs_baseline")} == {"reword-1", "reword-2", "tier 1", "tier 2"}

    # The CSV holds the same values as the JSON.
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    as_csv = {(r["kind"], r["variant_b"], r["seed_b"], r["metric"]): float(r["value"]) for r in rows
              if r["kind"] == "vs_baseline"}
    for p in first.baseline_pairs:
        assert as_csv[("vs_baseline", p.variant_b, str(p.seed_b), "l2")] == p.l2
    assert sum(r["kind"] == "seed_variance" for r in rows) == 3 * len(metrics.METRIC_NAMES)


def test_reconstruction_is_encode_decode_encode(run_dir, first, tiny):
    run = load_run(run_dir)
    c = load_audio(run.audio_path(run.clip("reword-1", 0)))
    z = tiny.encode_audio(c.audio, c.sample_rate)
    z_rec = tiny.encode_audio(tiny.decode(z, 1.0), tiny.sample_rate)
    rec = next(r for r in first.reconstruction if (r["variant"], r["seed"]) == ("reword-1", 0))
    assert rec["latent_mse"] == pytest.approx(metrics.mse(z, z_rec), rel=1e-3)
    assert rec["latent_l2_raw"] == pytest.approx(metrics.l2_raw(z, z_rec), rel=1e-3)
    assert rec["audio_mse"] > 0
    # waveform raw L2 is the norm of the same difference: L2^2 = MSE x samples (thesis Table 5.4's pair)
    samples = tiny.channels * int(round(1.0 * tiny.sample_rate))
    assert rec["audio_l2_raw"] ** 2 == pytest.approx(rec["audio_mse"] * samples, rel=1e-2)


def test_reconstruction_is_shown_beside_a_seed_change_and_the_closest_rewording(run_dir, first):
    run = load_run(run_dir)
    by = {c: [x for x in first.comparisons if x["comparison"] == c] for c in
          ("autoencoder round trip", "seed change", "closest rewording")}
    # 6 clips round trip; 3 variants x 1 next seed; 2 baseline seeds
    assert [len(v) for v in by.values()] == [6, 3, 2]
    change = next(x for x in by["seed change"] if x["variant"] == "reword-1")
    a, b = (load_audio(run.audio_path(run.clip("reword-1", s))).audio for s in (0, 1))
    assert change["audio_mse"] == pytest.approx(float(np.mean((a - b) ** 2)), rel=1e-6)
    assert change["audio_l2_raw"] == pytest.approx(float(np.linalg.norm(a - b)), rel=1e-6)
    for x in by["closest rewording"]:  # the rewording whose clip latent is nearest the baseline at that seed
        same_seed = [p for p in first.baseline_pairs if p.seed_b == x["seed"]]
        assert x["variant"] == max(same_seed, key=lambda p: p.cosine).variant_b
    groups = {r.group for r in first.table("reconstruction", "audio_l2_raw")}
    assert groups == {"autoencoder round trip", "seed change", "closest rewording"}


def test_wording_effect_is_a_ratio_to_generation_variance(first):
    base = next(p for p in first.seed_pairs if p.variant_a == "baseline")  # seeds 0 and 1
    wording = [1 - p.cosine for p in first.baseline_pairs if p.variant_b == "reword-2"]
    row = next(r for r in first.table("wording_effect") if r.group == "reword-2")
    assert row.mean == pytest.approx(np.mean(wording) / (1 - base.cosine))
    assert (row.n, row.unit, row.method, row.ci_low) == (2, "seed", "delta-t", None)  # 2 seeds: n too small


def test_second_call_recomputes_and_rewrites_nothing(run_dir, first, tiny, monkeypatch):
    files = [run_dir / "metrics.json", run_dir / "metrics.csv"]
    before = [(p.stat().st_mtime_ns, p.read_bytes()) for p in files]
    counter = EncodeCounter(tiny, monkeypatch)
    again = analyze_run(run_dir, backend=tiny)
    assert counter.calls == 0
    assert not again.recomputed and again == first
    assert [(p.stat().st_mtime_ns, p.read_bytes()) for p in files] == before


def test_only_a_changed_clip_is_encoded_again(run_dir, first, tiny, monkeypatch, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    run = load_run(copy)
    wav = run.audio_path(run.clip("reword-2", 0))
    c = load_audio(wav)
    write_wav(wav, c.audio[:, ::-1].copy(), c.sample_rate)  # same length, different sound
    counter = EncodeCounter(tiny, monkeypatch)
    changed = analyze_run(copy, backend=tiny)
    # one clip, encoded once as itself and once as its reconstruction
    assert counter.clips == 2
    assert changed.recomputed and changed.cache_key != first.cache_key
    old = {(p.variant_b, p.seed_b): p.cosine for p in first.baseline_pairs}
    new = {(p.variant_b, p.seed_b): p.cosine for p in changed.baseline_pairs}
    assert new[("reword-1", 1)] == old[("reword-1", 1)] and new[("reword-2", 0)] != old[("reword-2", 0)]


def test_new_settings_reuse_cached_latents(run_dir, tiny, monkeypatch, tmp_path):
    import test_clap  # the tiny CLAP built offline

    model, processor = test_clap.tiny_clap()
    model.save_pretrained(tmp_path / "clap")
    processor.save_pretrained(tmp_path / "clap")
    counter = EncodeCounter(tiny, monkeypatch)
    config = AnalysisConfig(music=True, clap=True, clap_model=str(tmp_path / "clap"), n_boot=200)
    scored = analyze_run(run_dir, backend=tiny, config=config)
    assert counter.calls == 0 and scored.recomputed
    assert len(scored.clap) == 6 and all(-1 <= c["clap_a"] <= 1 and -1 <= c["clap_t"] <= 1 for c in scored.clap)
    assert len(scored.music) == 6 and {"tempo_bpm", "loudness_lufs", "tempo_match"} <= set(scored.music[0])
    assert {r.table for r in scored.summaries} >= {"clap", "music"}
    assert json.loads((run_dir / "metrics.json").read_text())["config"]["music"] is True


def test_unavailable_clap_is_a_note_not_a_failure(run_dir, tiny):
    a = analyze_run(run_dir, backend=tiny, config=AnalysisConfig(clap=True, clap_model="recap-tests/no-such-clap"))
    assert a.clap == [] and any(n.startswith("CLAP scores skipped") and "no-such-clap" in n for n in a.notes)
    assert len(a.baseline_pairs) == 4


def test_bad_settings_are_refused(run_dir, tiny, tmp_path):
    with pytest.raises(ValueError, match="'nope' is not in run"):
        analyze_run(run_dir, backend=tiny, config=AnalysisConfig(baseline="nope"))
    with pytest.raises(ValueError, match="not a run folder"):
        analyze_run(tmp_path, backend=tiny)


def test_cli_prints_the_tables_and_writes_figures(run_dir, first, capsys):
    assert main(["analyze", str(run_dir), "--bins", "100", "120"]) == 0
    out = capsys.readouterr().out
    for heading in ("Tables 5.1 / 5.3", "Generation variance", "Table 5.2", "Table 5.4", "95% CI", "Wording effect",
                    "clip latent cosine", "n too small", "2 seeds, t", "seed change", "closest rewording"):
        assert heading in out
    assert "reword-1" in out and "random weights" in out
    figures = run_dir / "figures"
    assert (figures / "spectrograms.html").is_file() and (figures / "difference.html").is_file()
    assert json.loads((figures / "figures.json").read_text())["config"]["bins"] == [100, 120]
    # for a paper: every figure also as PNG and SVG, every table also as Markdown and LaTeX
    for stem in ("spectrograms", "difference"):
        assert (figures / f"{stem}.png").read_bytes()[:4] == b"\x89PNG" and "<svg" in (figures / f"{stem}.svg").read_text()
    md, tex = (run_dir / "summary.md").read_text(), (run_dir / "summary.tex").read_text()
    # the first such row is Table 5.1's: the same number in the printed report, the Markdown and the LaTeX
    mean = next(line for line in md.splitlines() if line.startswith("| clip latent cosine | reword-1 |")).split("|")[3].strip()
    assert next(line for line in out.splitlines() if line.startswith("clip latent cosine") and "reword-1" in line).split()[4] == mean
    assert f"clip latent cosine & reword-1 & {mean} &" in tex and "\\toprule" in tex and "\\begin{tabular}" in tex
    html = (figures / "spectrograms.html").read_text()
    assert "reword-2__seed1" in html
