"""Batch experiments: config, prompt set, end to end on the tiny model, resume after a kill, two processes."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recap.experiment.config import ExperimentConfig, load_prompts, select_prompts
from recap.experiment.runner import run_experiment
from recap.experiment.config import PromptSelection

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "assets" / "prompts.csv"
# nature/low, weather/medium, water/high, domestic/low, transport/high, industrial/high; each has
# a light and a strong synonym rewording.
SIX = ["1", "40", "80", "150", "230", "290"]
PAIR_METRICS = ("text_cosine", "cosine", "l2", "l2_raw", "mse")
UNIT_WRITTEN = re.compile(r"unit \S+ written")


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def write_config(folder: Path, **over) -> Path:
    """A fast experiment on the tiny model: 1 s clips, 2 steps, 1 seed, 1 light + 1 strong rewording."""
    top = {"name": "test experiment", "model": "tiny", "seeds_per_prompt": 1, "seconds": 1.0, "steps": 2,
           "fast_preview": True} | over.pop("top", {})
    tables = {
        "prompts": {"file": str(PROMPTS), "ids": SIX} | over.pop("prompts", {}),
        "recaption": {"distances": ["light", "strong"], "n": 1, "method": "synonym"} | over.pop("recaption", {}),
        "tokens": over.pop("tokens", {}),
    }
    assert not over
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path = folder / "experiment.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def unit_records(out: Path) -> list[Path]:
    return sorted(out.glob("units/*/*.json"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine more threads mostly wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """The 6-prompt experiment, run once, uninterrupted, in this process."""
    folder = tmp_path_factory.mktemp("reference")
    config = ExperimentConfig.from_toml(write_config(folder))
    outcome = run_experiment(config, folder / "out", tiny)
    # Subprocesses must compute with as many threads as this process did to give the same bits.
    return folder / "out", outcome, torch.get_num_threads()


# ---------------------------------------------------------------------- config and prompts


def test_prompt_set_is_large_varied_and_free_of_names():
    from recap.rewording.checks import named_entities

    rows = load_prompts(PROMPTS)
    assert len(rows) >= 300
    assert len({r.prompt.lower() for r in rows}) == len(rows)
    categories = {c: sum(r.category == c for r in rows) for c in {r.category for r in rows}}
    assert len(categories) >= 7 and min(categories.values()) >= 20, categories
    assert {r.complexity for r in rows} == {"low", "medium", "high"}
    assert not [(r.id, r.prompt) for r in rows if named_entities(r.prompt)]
    speech = re.compile(r"\b(speak\w*|speech|talk\w*|voices?|saying|whisper\w*|shout\w*|vocal\w*)\b", re.I)
    assert not [r.prompt for r in rows if speech.search(r.prompt)]


def test_example_config_loads_and_round_trips():
    config = ExperimentConfig.from_toml(ROOT / "assets" / "experiment.example.toml")
    assert config.distances == ["light", "strong"] and config.seeds == [0, 1, 2]
    assert config.path(config.prompts.file) == PROMPTS
    assert ExperimentConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"top": {"stepz": 3}}, "stepz"),
        ({"top": {"seeds_per_prompt": 0}}, "seeds_per_prompt"),
        ({"top": {"metrics": ["cosine", "clap"]}}, "metrics"),
        ({"recaption": {"distances": ["light", "far"]}}, "far"),
        ({"recaption": {"distance": "light"}}, "distances"),
        ({"recaption": {"distances": []}}, "nothing to compare"),
        ({"tokens": {"files": ["x.safetensors"], "templates": ["{prompt} only"]}}, "{prompt} only"),
        ({"prompts": {"complexities": ["extreme"]}}, "extreme"),
        ({"prompts": {"ids": [1, 40]}}, "ids must be a list of strings"),
    ],
)
def test_bad_config_values_are_refused_by_name(tmp_path, over, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        ExperimentConfig.from_toml(write_config(tmp_path, **over))


def test_prompt_selection_filters_samples_and_checks_ids(tmp_path):
    rows = load_prompts(PROMPTS)
    sel = PromptSelection(categories=["animals", "music"], complexities=["high"], n=5, sample_seed=3)
    picked = select_prompts(rows, sel)
    assert len(picked) == 5 and {r.category for r in picked} <= {"animals", "music"}
    assert {r.complexity for r in picked} == {"high"}
    assert select_prompts(rows, sel) == picked  # the same seed picks the same prompts
    assert [r.id for r in picked] == sorted((r.id for r in picked), key=int)  # file order kept
    with pytest.raises(ValueError, match="'animal'"):
        select_prompts(rows, PromptSelection(categories=["animal"]))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prompt,category,complexity\n../up,A bell.,music,low\n")
    with pytest.raises(ValueError, match=r"'\.\./up'"):
        load_prompts(bad)


# ---------------------------------------------------------------------- end to end


def test_six_prompt_experiment_writes_units_tables_and_charts(reference):
    out, outcome, _ = reference
    assert outcome.units_written == 18 and outcome.units_skipped == 0 and outcome.num_processes == 1
    # one unit per prompt x (baseline, light, strong) x seed, each with its clip and latent
    units = [json.loads(p.read_text()) for p in unit_records(out)]
    assert len(units) == 18 and len(list(out.glob("units/*/*.wav"))) == 18
    assert len(list(out.glob("units/*/*.safetensors"))) == 18 and len(list(out.glob("recaptions/*.json"))) == 6
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["prompts"]["ids"] == SIX and saved["model"]["name"] == "tiny"
    assert [r["id"] for r in read_csv(out / "prompts.csv")] == SIX
    # pairs.csv: one row per rewording clip, in prompt-file order
    pairs = read_csv(out / "pairs.csv")
    assert len(pairs) == 12 and [p["prompt_id"] for p in pairs[::2]] == SIX
    assert {(p["tier"], p["method"]) for p in pairs} == {("1", "synonym"), ("2", "synonym")}
    assert {p["category"] for p in pairs} == {"nature", "weather", "water", "domestic", "transport", "industrial"}
    for p in pairs:
        assert float(p["cosine"]) <= 1.0 and float(p["l2"]) >= 0.0
        assert abs(float(p["l2"]) - np.sqrt(max(0.0, 2 - 2 * float(p["cosine"])))) < 1e-3
    # the summary equals the mean of the rows, recomputed here from pairs.csv
    summary = read_csv(out / "summary.csv")
    by_tier = [r for r in summary if r["table"] == "by_tier"]
    assert {r["metric"] for r in by_tier} == set(PAIR_METRICS)
    for row in by_tier:
        values = [float(p[row["metric"]]) for p in pairs if f"{p['method']}, tier {p['tier']}" == row["set"]]
        assert int(row["n"]) == len(values) == 6
        assert float(row["mean"]) == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
        assert float(row["std"]) == pytest.approx(np.std(values), rel=1e-9, abs=1e-15)
        assert float(row["variance"]) == pytest.approx(np.var(values), rel=1e-9, abs=1e-20)
        assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])
        # 6 prompts, one variant clip each: the interval is over prompts
        assert (row["unit"], row["method"]) == ("prompt", "t")
        assert row["latent"] == ("" if row["metric"] == "text_cosine" else "clip latent")
    assert {p["latent"] for p in pairs} == {"clip latent"}
    for table, column in (("by_category", "category"), ("by_complexity", "complexity")):
        for row in (r for r in summary if r["table"] == table):
            values = [float(p[row["metric"]]) for p in pairs if p[column] == row["group"]
                      and f"{p['method']}, tier {p['tier']}" == row["set"]]
            assert float(row["mean"]) == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
    # one point per variant, 2 variants of each of 6 prompts (1 seed), interval over prompts
    corr = {c["set"]: c for c in outcome.report.correlations}
    assert (corr["all"]["variants"], corr["all"]["prompts"]) == (12, 6) and "pearson_p" not in corr["all"]
    md = (out / "summary.md").read_text()
    assert "| Metric | Tier | Mean | Std. deviation | Variance | n | 95% CI |" in md and "Tables 5.1" in md
    for chart in ("distributions.html", "text_vs_audio.html"):
        html = (out / "charts" / chart).read_text()
        assert "plotly.min.js" in html and "synonym, tier 2" in html
    assert (out / "charts" / "plotly.min.js").stat().st_size > 100_000


def test_report_rebuilds_everything_from_the_unit_files(reference, tmp_path, capsys):
    from recap.cli import main

    out, _, _ = reference
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.csv", "*.md", "*.tex", "charts"))
    shutil.copy(out / "prompts.csv", copy / "prompts.csv")  # the selection is an input, not a table
    assert main(["experiment", "report", str(copy), "--all"]) == 0
    for name in ("pairs.csv", "clips.csv", "summary.csv", "summary.md", "summary.tex", "charts/text_vs_audio.html"):
        assert (copy / name).read_bytes() == (out / name).read_bytes(), name
    # the report command also writes each chart as PNG and SVG for a paper
    for stem in ("distributions", "text_vs_audio"):
        assert (copy / "charts" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert "<svg" in (copy / "charts" / f"{stem}.svg").read_text()
    printed = capsys.readouterr().out
    assert "18 of 18 units" in printed
    for column in ("Mean", "Std. deviation", "Variance", "95% CI", "Latent cosine", "Text cosine", "By category"):
        assert column in printed


def test_rerun_skips_finished_units_and_redoes_the_one_in_flight(reference, tiny, tmp_path):
    out, _, _ = reference
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    # as if killed between writing a clip and its record: the wav is there, the record is not
    (copy / "units" / "80" / "reword-2a__seed0.json").unlink()
    (copy / "units" / "80" / ".reword-2a__seed0.json.x.tmp").write_text("{")
    (copy / "pairs.csv").unlink()
    config = ExperimentConfig.from_toml(write_config(tmp_path))
    seen = []
    outcome = run_experiment(config, copy, tiny, progress=lambda done, total, msg: seen.append((done, total)))
    assert (outcome.units_written, outcome.units_skipped) == (1, 17)
    assert seen[-1] == (1, 1)
    assert (copy / "pairs.csv").read_bytes() == (out / "pairs.csv").read_bytes()
    # another config into the same folder is refused, naming what differs; report-only fields may change
    with pytest.raises(ValueError, match="steps"):
        run_experiment(ExperimentConfig.from_toml(write_config(tmp_path, top={"steps": 3})), copy, tiny)
    renamed = ExperimentConfig.from_toml(write_config(tmp_path, top={"name": "renamed", "confidence": 0.9}))
    assert run_experiment(renamed, copy, tiny).units_written == 0
    assert "90% CI" in (copy / "summary.md").read_text()


def _env(threads: int) -> dict[str, str]:
    # Same thread count as the reference run: CPU kernels split work by thread, and the bits follow.
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def test_killed_run_resumes_to_the_same_result(reference, tiny, tmp_path):
    out, _, threads = reference
    config_path = write_config(tmp_path)
    run = tmp_path / "run"
    # Rewordings cached by an earlier run are reused (and spare the subprocess loading WordNet).
    shutil.copytree(out / "recaptions", run / "recaptions")
    cmd = [sys.executable, "-m", "recap", "-v", "experiment", "run", str(config_path), "--out", str(run)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env(threads))
    written, lines = 0, []
    try:
        for line in proc.stderr:  # the run logs each unit as it is written
            lines.append(line)
            written += bool(UNIT_WRITTEN.search(line))
            if written == 4:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert written == 4, "the run ended before it could be interrupted:\n" + "".join(lines[-20:])
    done_before = len(unit_records(run))
    assert 4 <= done_before < 18
    outcome = run_experiment(ExperimentConfig.from_toml(config_path), run, tiny)
    assert outcome.units_skipped == done_before and outcome.units_written == 18 - done_before
    assert len(unit_records(run)) == 18
    resumed, uninterrupted = read_csv(run / "pairs.csv"), read_csv(out / "pairs.csv")
    key = lambda r: (r["prompt_id"], r["variant"], r["seed"])  # noqa: E731
    assert len({key(r) for r in resumed}) == len(resumed) == 12
    assert sorted(resumed, key=key) == sorted(uninterrupted, key=key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_the_work_and_merge_without_duplicates(reference, tmp_path):
    out, _, threads = reference
    run = tmp_path / "run"
    shutil.copytree(out / "recaptions", run / "recaptions")
    # What `accelerate launch --num_processes 2 -m recap ...` runs on a multi-GPU machine; without
    # GPUs the processes meet over gloo on the CPU.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", str(threads), "--main_process_port", str(_free_port()),
           "-m", "recap", "-v", "experiment", "run", str(write_config(tmp_path)), "--out", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process 0/2: 3 prompt(s)" in done.stderr and "process 1/2: 3 prompt(s)" in done.stderr
    assert json.loads((run / "config.json").read_text())["processes"] == 2
    assert done.stdout.count("unit(s) written") == 1  # only the main process reports
    assert len(UNIT_WRITTEN.findall(done.stderr)) == 18  # no unit was made twice
    assert len(unit_records(run)) == 18
    assert (run / "pairs.csv").read_bytes() == (out / "pairs.csv").read_bytes()
    assert (run / "summary.csv").read_bytes() == (out / "summary.csv").read_bytes()


# ---------------------------------------------------------------------- recaptions, tokens, seeds


def test_llm_rewordings_are_cached_per_prompt_and_keys_are_not_stored(tiny, tmp_path, monkeypatch):
    from openai_stub import OpenAIStub, Reply

    from recap.rewording.base import default_system_prompt

    secret = "sk-test-never-stored-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)

    def answer(body):
        described = body["messages"][1]["content"].split("\n")[0].removeprefix("Sound description: ").rstrip(".")
        light = body["messages"][0]["content"] == default_system_prompt("light")
        return Reply.json({"rewordings": [f"{described}, heard {'up close' if light else 'from far across a valley'}"]})

    with OpenAIStub(default=None, script=[answer] * 4) as stub:
        config_path = write_config(tmp_path, prompts={"ids": ["1", "150"]}, recaption={
            "method": "llm", "base_url": stub.base_url, "model": "stub-model", "backoff_s": 0.001})
        config = ExperimentConfig.from_toml(config_path)
        run_experiment(config, tmp_path / "out", tiny)
        assert len(stub.chat_requests) == 4  # 2 prompts x 2 batches
        again = run_experiment(config, tmp_path / "out", tiny)
        assert len(stub.chat_requests) == 4 and again.units_written == 0
    pairs = read_csv(tmp_path / "out" / "pairs.csv")
    assert [p["prompt"] for p in pairs] == [
        "Wind rustling through dry leaves, heard up close", "Wind rustling through dry leaves, heard from far across a valley",
        "A clock ticking, heard up close", "A clock ticking, heard from far across a valley"]
    assert {p["method"] for p in pairs} == {"llm"}
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".md", ".html"):
            assert secret not in path.read_text(), path


def test_tokens_seed_variance_and_reconstruction(tiny, tmp_path):
    from recap.tokens.files import LearnedToken, save_token

    vectors = torch.randn(1, tiny.embedding_dim, generator=torch.Generator().manual_seed(0))
    token_path = save_token(LearnedToken("<test-bell>", vectors, {"model_id": tiny.model_id}), tmp_path / "tokens")
    config = ExperimentConfig.from_toml(write_config(
        tmp_path, top={"seeds_per_prompt": 2, "metrics": ["text_cosine", "cosine", "l2", "reconstruction"]},
        prompts={"ids": ["1", "150"]}, recaption={"distances": ["light"]},
        tokens={"files": ["tokens/test-bell.safetensors"], "templates": ["{prompt}, like {token}"]}))
    assert Path(config.path(config.tokens.files[0])) == token_path
    report = run_experiment(config, tmp_path / "out", tiny).report
    assert report.units_found == report.units_expected == 2 * 4 * 2  # prompts x variants x seeds
    token_pairs = [p for p in report.pairs if p["method"] == "token"]
    assert {(p["variant"], p["tier"]) for p in token_pairs} == {("tok1t1-baseline", 0), ("tok1t1-reword-1a", 1)}
    assert all(p["prompt"].endswith(", like <test-bell>") for p in token_pairs)
    assert all(p["mse"] is None and p["l2_raw"] is None for p in report.pairs)  # not asked for
    sets = {r.set for r in report.table("by_tier")}
    assert sets == {"synonym, tier 1", "token, tier 0", "token, tier 1"}
    seed_rows = report.table("seed_variance")
    assert {r.set for r in seed_rows} == sets | {"baseline, tier 0"}
    assert all(r.n == 2 for r in seed_rows)  # one seed pair per prompt
    recon = report.table("reconstruction")
    # Changed by this issue: waveform raw L2 joins waveform MSE (thesis Table 5.4's pair), and each
    # quantity is shown for the round trip, a seed change and the closest rewording.
    assert {r.metric for r in recon} == {"latent_mse", "latent_l2_raw", "latent_l2", "latent_cosine", "audio_mse",
                                         "audio_l2_raw"}
    assert {r.group for r in recon} == {"autoencoder round trip", "seed change", "closest rewording"}
    assert all(r.unit == "prompt" and r.n == 2 and r.ci_low is None for r in recon)  # 2 prompts: n too small
    ratio = {r.set: r for r in report.table("wording_effect")}
    assert set(ratio) == sets and all(r.mean > 0 and r.unit == "prompt" for r in ratio.values())
    clips = read_csv(tmp_path / "out" / "clips.csv")
    assert len(clips) == 16 and all(float(c["latent_mse"]) >= 0 for c in clips)
