"""A stranger at a public recap: generation, style transfer, the run browser and the CLI.

One app is served for the module, as a public Space would be (``public=True``, the tiny model).
Each attack is sent twice, as ``gradio_client`` sends it and as the browser's queue protocol
does (:class:`attack.RawSession`, which reaches the raw values past the form), and must come
back as a sentence that names the field, having written nothing under RECAP_HOME. Legitimate
runs use 1 s clips and 1 step.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from attack import RawSession, disk_usage, served

from recap.config import Settings

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

HEADERS = ["label", "method", "tier", "prompt", "text cosine", "word edits", "flags"]
NAN, INF = float("nan"), float("inf")
HUGE = "rain " * 200_000  # a million characters


def table(*rows: list) -> dict:
    return {"headers": HEADERS, "data": [list(r) + [None, None, ""] for r in rows]}


RAIN = table(["baseline", "baseline", 0, "rain on a tin roof"])
# The /generate form in order: model, table, ticked, baseline, seeds, seconds, steps, guidance, negative,
# reconstruction, music (then the session's states).
FORM = {"model": "tiny", "rows": RAIN, "ticked": [], "baseline": "", "seeds": "0", "seconds": 1.0, "steps": 1,
        "guidance": 7.0, "negative": "", "reconstruction": False, "music": False}


def strict(text: str):
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON."""
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    home = tmp_path_factory.mktemp("public-home")
    with served(Settings(home=home, model="tiny", public=True)) as (ctx, url):
        yield ctx, url


@pytest.fixture(scope="module")
def stranger(public):
    """(gradio_client session, raw queue session) that only attack: one of each serves every attack
    (a refused request leaves their state as it was)."""
    _, url = public
    return Client(url, verbose=False), RawSession(url)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clips") / "beep.wav"
    t = np.arange(16000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return str(path)


@pytest.fixture(scope="module")
def alice(public):
    """A visitor who made one grid; (client, run id)."""
    _, url = public
    client = Client(url, verbose=False)
    status, *_ = client.predict(*FORM.values(), api_name="/generate")
    return client, re.search(r"Run `([^`]+)`", status).group(1)


def _finite(values) -> bool:
    return all(not isinstance(v, float) or math.isfinite(v) for v in values)


def refused_everywhere(public, values, call_client, call_raw, *words: str) -> None:
    """Both clients get a sentence holding ``words``, no apology for a bug, and nothing is written.

    gradio_client (httpx) refuses to encode NaN or infinity at all, so such a value reaches the
    server only the way the raw queue client (or a hand-written request) sends it.
    """
    ctx, _ = public
    before = disk_usage(ctx.home)
    messages = []
    if _finite(values):
        with pytest.raises(AppError) as info:
            call_client()
        messages.append(str(info.value))
    else:
        with pytest.raises(ValueError, match="not JSON compliant"):
            call_client()
    raw = call_raw()
    assert not raw.ok
    messages.append(raw.error)
    for message in messages:
        assert "Something went wrong" not in message, message
        for word in words:
            assert word in message, (word, message[:300])
        assert len(message) < 1000  # the rejected value is not echoed back in full
    assert disk_usage(ctx.home) == before


# ----------------------------------------------------------------------------- Generate & compare
GENERATE_ATTACKS = [
    ({"steps": 10**6}, ["steps", "1 to 500"]),
    ({"steps": NAN}, ["steps"]),
    ({"guidance": NAN}, ["guidance"]),
    ({"guidance": -INF}, ["guidance"]),
    ({"seconds": INF}, ["seconds", "tiny"]),
    ({"seconds": 0}, ["seconds"]),
    ({"seeds": str(2**32)}, ["seed", "4294967295"]),
    ({"seeds": "10" * 12}, ["seed"]),
    ({"seeds": ", ".join(map(str, range(1000)))}, ["seeds"]),
    ({"seeds": "0-999"}, ["seed range"]),
    ({"model": "cvssp/audioldm-evil"}, ["model", "cvssp/audioldm-evil"]),
    ({"rows": table(["baseline", "baseline", 0, HUGE])}, ["prompt", "1,000,000 characters"]),
    ({"rows": None, "baseline": HUGE}, ["baseline prompt", "1,000,000 characters"]),
    ({"negative": HUGE}, ["negative prompt", "1,000,000 characters"]),
    ({"rows": table(*[[f"v{i}", "manual", 4, "hail"] for i in range(65)])}, ["65 rows", "64"]),
    ({"ticked": ["baseline", "ghost"]}, ["ghost", "not in the table"]),
    ({"seeds": "0-15", "steps": 500}, ["8,000 denoising steps", "at most 6,400"]),
    ({"reconstruction": "yes"}, ["reconstruction"]),
]


@pytest.mark.parametrize(("over", "words"), GENERATE_ATTACKS, ids=[
    "steps-1e6", "steps-nan", "guidance-nan", "guidance-inf", "seconds-inf", "seconds-0", "seed-2^32", "seed-huge",
    "1000-seeds", "seed-range", "model", "prompt-1e6", "baseline-1e6", "negative-1e6", "65-rows", "ghost-variant",
    "work", "checkbox"])
def test_every_generate_field_is_bounded_with_a_sentence_naming_it(public, stranger, over, words):
    client, tab = stranger
    form = {**FORM, **over}
    fn = tab.event(api_name="generate")
    states = [None] * (len(tab.inputs(fn)) - len(form))
    refused_everywhere(public, form.values(), lambda: client.predict(*form.values(), api_name="/generate"),
                       lambda: tab.call(fn, list(form.values()) + states), *words)


def test_bin_ranges_of_the_figures_and_the_zip_are_bounded(public, alice):
    ctx, url = public
    client, _ = alice
    tab = RawSession(url)
    for lo, hi, word in ((NAN, 150, "lowest bin"), (100, INF, "highest bin"), (100, 9999, "highest bin"),
                         (60, 20, "bin range 60-20"), (1.5, 20, "lowest bin")):
        for api in ("spectrograms", "download_run"):
            fn = tab.event(api_name=api)
            out = tab.call(fn, [None, lo, hi] + [None] * (len(tab.inputs(fn)) - 3))
            assert not out.ok and word in out.error, (api, out.error)
            if math.isfinite(lo) and math.isfinite(hi):
                with pytest.raises(AppError, match=word):
                    client.predict(lo, hi, api_name=f"/{api}")


def test_the_zip_download_keeps_one_archive_per_session(public, alice):
    client, rid = alice
    for _ in range(2):
        assert Path(client.predict(100, 150, api_name="/download_run")).name == f"recap-run-{rid}.zip"
    # Clicking again replaces the session's archive instead of piling up copies of the run.
    copies = list(Path(tempfile.gettempdir()).glob(f"recap-session-*/run-archive/recap-run-{rid}.zip"))
    assert len(copies) == 1, copies


# ----------------------------------------------------------------------------- style transfer
TRANSFER = {"model": "tiny", "prompt": "a warm drone", "strengths": "0, 1", "seeds": "0", "steps": 1}
TRANSFER_ATTACKS = [
    ({"steps": 10**6}, ["steps", "1 to 500"]),
    ({"steps": NAN}, ["steps"]),
    ({"strengths": "0, 1.5"}, ["strength", "1.5"]),
    ({"strengths": "nan"}, ["strength", "nan"]),
    ({"strengths": ", ".join(f"{i / 20:.2f}" for i in range(20))}, ["strengths", "16"]),
    ({"seeds": str(10**12)}, ["seed"]),
    ({"prompt": HUGE}, ["prompt", "characters; the limit is 1000"]),
    ({"strengths": "0.5, 1", "seeds": "0-15", "steps": 500}, ["denoising steps", "6,400"]),
    ({"model": "stabilityai/evil"}, ["stabilityai/evil"]),
]


@pytest.mark.parametrize(("over", "words"), TRANSFER_ATTACKS, ids=[
    "steps-1e6", "steps-nan", "strength-1.5", "strength-nan", "20-strengths", "seed-1e12", "prompt-1e6", "work",
    "model"])
def test_every_transfer_field_is_bounded_with_a_sentence_naming_it(public, stranger, source, over, words):
    client, tab = stranger
    form = {**TRANSFER, **over}
    fn = tab.event(api_name="transfer")
    # model, source, targets, prompt, strengths, seeds, steps, then states; the raw tab sends no clip
    # at all: every other field is checked before the source is asked for.
    raw = [form["model"], None, None, form["prompt"], form["strengths"], form["seeds"], form["steps"]]
    raw += [None] * (len(tab.inputs(fn)) - len(raw))
    refused_everywhere(
        public, form.values(),
        lambda: client.predict(form["model"], handle_file(source), [], form["prompt"],
                                                   form["strengths"], form["seeds"], form["steps"], api_name="/transfer"),
        lambda: tab.call(fn, raw), *words)


# ----------------------------------------------------------------------------- runs: privacy, listings, JSON
def _choices(outcome) -> list[str]:
    (update,) = outcome.output
    return [c[1] if isinstance(c, (list, tuple)) else c for c in update.get("choices", [])]


def test_a_visitor_lists_and_opens_only_their_own_runs(public, alice):
    ctx, url = public
    client, rid = alice
    assert (ctx.settings.runs_dir / rid / "manifest.json").is_file()
    bob = RawSession(url)
    fn = bob.event(api_name="generate")
    made = bob.call(fn, list(FORM.values()) + [None] * (len(bob.inputs(fn)) - len(FORM)))
    assert made.ok, made.error
    his = re.search(r"Run `([^`]+)`", next(o for o in made.output if isinstance(o, str) and "Run `" in o)).group(1)
    listed = bob.call(bob.event(api_name="list_runs"))
    assert listed.ok and _choices(listed) == [his]
    assert rid not in json.dumps(listed.output)
    opened = bob.call(bob.event(api_name="open_run"), {bob.inputs(bob.event(api_name="open_run"))[0]: rid})
    assert not opened.ok and "Something went wrong" not in opened.error
    with pytest.raises(AppError):
        Client(url, verbose=False).predict(rid, False, api_name="/open_run")
    # The maker lists it (as the page does after Generate) and opens it.
    client.predict(api_name="/list_runs")
    assert client.predict(rid, False, api_name="/open_run")[0].startswith(f"Run `{rid}`")


def test_opening_a_run_is_checked_against_the_session_not_only_the_list(tmp_path, alice, public):
    from recap.errors import BadInput
    from recap.ui.runview import session_run_dir, visible_runs

    ctx, _ = public
    _, rid = alice
    runs = ctx.settings.runs_dir
    with pytest.raises(BadInput, match="not made in this browser session"):
        session_run_dir(runs, rid, ["20260101-000000-0123456789abcdef"], public=True)
    assert session_run_dir(runs, rid, [rid], public=True) == (runs / rid).resolve()
    assert session_run_dir(runs, rid, [], public=False) == (runs / rid).resolve()  # a local server: every run
    assert [r for _, r in visible_runs(runs, [], public=True)] == []
    assert rid in [r for _, r in visible_runs(runs, [], public=False)]


def _broken_runs(runs: Path, good: Path) -> list[str]:
    """Folders beside the good run that are not runs: each must be skipped, not break the list."""
    manifest = strict((good / "manifest.json").read_text())
    cases = {
        "no-clips": {k: v for k, v in manifest.items() if k != "clips"},
        "wrong-types": {**manifest, "variants": ["baseline"], "model": ["tiny"]},
        "outside": {**manifest, "clips": [{**manifest["clips"][0], "audio": "../../../../etc/passwd"}]},
        "bad-seed": {**manifest, "clips": [{**manifest["clips"][0], "seed": "zero"}]},
        "unknown-variant": {**manifest, "clips": [{**manifest["clips"][0], "variant": "ghost"}]},
        "list": [1, 2, 3],
    }
    names = []
    for i, (name, data) in enumerate(cases.items()):
        folder = runs / f"29990101-00000{i}-{name}"
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(data))
        names.append(folder.name)
    for name, text in (("invalid-json", "{not json"), ("nan", '{"format": "recap.run/1", "x": NaN}'),
                       ("empty", "")):
        folder = runs / f"29990102-000000-{name}"
        folder.mkdir()
        (folder / "manifest.json").write_text(text)
        names.append(folder.name)
    (runs / "29990103-000000-not-a-folder").write_text("x")
    return names


def test_folders_that_are_not_runs_never_break_the_run_list(public, alice, caplog):
    from recap.generation.runs import list_runs
    from recap.ui.runview import visible_runs

    ctx, url = public
    client, rid = alice
    broken = _broken_runs(ctx.settings.runs_dir, ctx.settings.runs_dir / rid)
    with caplog.at_level(logging.WARNING, logger="recap.generation.runs"):
        listed = [r.run_id for r in list_runs(ctx.settings.runs_dir)]
    assert rid in listed and not set(listed) & set(broken)
    assert {name for name in broken if any(name in m for m in caplog.messages)} == set(broken)
    assert rid in [r for _, r in visible_runs(ctx.settings.runs_dir, [], public=False)]  # the local page's list
    tab = RawSession(url)  # the public page still loads its list, and Alice's still holds her run
    assert tab.call(tab.event(api_name="list_runs")).ok
    client.predict(api_name="/list_runs")
    assert client.predict(rid, False, api_name="/open_run")[0].startswith(f"Run `{rid}`")


def test_every_json_file_recap_writes_is_strict_json(public, alice, source):
    ctx, _ = public
    client, _ = alice
    status, *_ = client.predict("tiny", handle_file(source), [], "a warm drone", "0, 1", "0", 1, api_name="/transfer")
    rid = re.search(r"Run `([^`]+)`", status).group(1)
    assert json.loads((ctx.settings.runs_dir / rid / "manifest.json").read_text())["kind"] == "transfer"
    written = [p for p in ctx.home.rglob("*.json") if not p.parent.name.startswith("2999")]
    assert len(written) >= 4  # two manifests, metrics.json, transfer.json
    for path in written:
        strict(path.read_text())


def test_a_number_that_is_not_finite_is_stored_as_null(tiny, tmp_path):
    from recap.generation.grid import GenerationConfig, generate_grid, make_variants, save_run
    from recap.paths import json_bytes
    from recap.generation.runs import load_run

    assert strict(json_bytes({"a": NAN, "b": [INF, 1.5], "c": {"d": -INF}, "e": np.float32("nan")}).decode()) == \
        {"a": None, "b": [None, 1.5], "c": {"d": None}, "e": None}
    grid = generate_grid(tiny, make_variants("rain", []), GenerationConfig(seconds=1.0, steps=1))
    manifest = save_run(grid, tiny, tmp_path, extra={"score": NAN, "scores": [INF]})
    text = (manifest.path / "manifest.json").read_text()
    assert strict(text)["extra"] == {"score": None, "scores": [None]}
    assert load_run(manifest.path).run_id == manifest.run_id


def test_the_core_refuses_the_same_values_for_every_caller(tiny):
    """What the UI, the API and the CLI share: the checks in recap.generation.grid and recap.generation.transfer."""
    from recap.errors import BadInput
    from recap.generation.grid import GenerationConfig, Variant, generate_grid
    from recap.generation.transfer import TransferConfig, transfer
    from recap.audio_io import Clip

    one = [Variant("baseline", "rain")]
    for cfg, word in ((GenerationConfig(steps=10**6), "steps"), (GenerationConfig(guidance=NAN), "guidance"),
                      (GenerationConfig(seconds=INF), "seconds"), (GenerationConfig(seeds=[2**32]), "seed"),
                      (GenerationConfig(seeds=list(range(17))), "seeds"), (GenerationConfig(max_batch=0), "max_batch"),
                      (GenerationConfig(seconds=1.0, steps=500, seeds=list(range(16))), "denoising steps")):
        with pytest.raises(BadInput, match=word):
            generate_grid(tiny, one, cfg)
    with pytest.raises(BadInput, match="65 variants"):
        generate_grid(tiny, [Variant(f"v{i}", "rain") for i in range(65)], GenerationConfig(steps=1))
    clip = Clip(np.zeros((1, 16000), np.float32) + 0.1, 16000, "x")
    for cfg, word in ((TransferConfig(strengths=[0.5] * 17), "17 transfer strengths"),
                      (TransferConfig(strengths=[INF]), "strength"), (TransferConfig(steps=10**6), "steps")):
        with pytest.raises(BadInput, match=word):
            transfer(tiny, clip, "rain", cfg)


# ----------------------------------------------------------------------------- the command line
CLI_ATTACKS = [
    (["generate", "--prompt", "rain", "--steps", "1000000"], "steps must be a whole number from 1 to 500"),
    (["generate", "--prompt", "rain", "--guidance", "nan"], "guidance must be a number from 0 to 30"),
    (["generate", "--prompt", "rain", "--seconds", "inf"], "seconds must be in"),
    (["generate", "--prompt", "rain", "--seeds", "4294967296"], "seed must be a whole number from 0 to 4294967295"),
    (["generate", "--prompt", "rain", "--seeds", *map(str, range(1000))], "1,000 seeds is too many"),
    (["generate", "--prompt", HUGE], "1,000,000 characters"),
    (["generate", "--prompt", "rain", "--seeds", *map(str, range(16)), "--steps", "500"], "at most 6,400"),
    (["generate", "--prompt", "rain", "--model", "evil-model"], "evil-model"),
    (["transfer", "--source", "missing.wav", "--prompt", "drone", "--strengths", "0", "1.5"], "strength must be in [0, 1]"),
    (["transfer", "--source", "missing.wav", "--prompt", "drone", "--steps", "1000000"], "steps must be"),
    (["transfer", "--source", "missing.wav", "--prompt", "drone", "--strengths", *(["0.5"] * 20)], "20 transfer strengths"),
    (["analyze", "no-run", "--bins", "0", "9999"], "highest bin must be a whole number from 1 to 512"),
    (["analyze", "no-run", "--hz", "nan", "100"], "lowest Hz"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_ATTACKS, ids=[
    "steps", "guidance", "seconds", "seed", "1000-seeds", "prompt", "work", "model", "strength", "transfer-steps",
    "strength-count", "bins", "hz"])
def test_the_cli_refuses_the_same_values_with_the_same_sentences(tmp_path, capsys, argv, message):
    from recap.cli import main

    out = tmp_path / "runs"
    if argv[0] in ("generate", "transfer"):
        argv = argv + ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(("line", "word"), [("steps = 1000000", "steps"), ("guidance = nan", "guidance"),
                                            ("seconds = inf", "seconds"), ("seeds_per_prompt = 1000", "seeds_per_prompt"),
                                            ("first_seed = 4294967295\nseeds_per_prompt = 2", "first_seed")])
def test_experiment_configs_are_bounded(tmp_path, capsys, line, word):
    from recap.cli import main

    config = tmp_path / "exp.toml"
    config.write_text(f'model = "tiny"\n{line}\n\n[prompts]\nfile = "prompts.csv"\n')
    assert main(["experiment", "run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and word in err
    assert not (tmp_path / "out").exists()


def test_an_experiment_too_large_in_all_is_refused_before_it_starts(tmp_path):
    from recap.errors import BadInput
    from recap.experiment.config import MAX_UNITS, ExperimentConfig

    big = ExperimentConfig.from_dict({"seeds_per_prompt": 16, "recaption": {"n": 20, "distances": ["light", "strong"]}})
    assert big.max_variants == 41
    with pytest.raises(BadInput, match="units"):
        big.check_size(math.ceil(MAX_UNITS / (41 * 16)) + 1)
    with pytest.raises(BadInput, match="variants"):
        ExperimentConfig.from_dict({"recaption": {"n": 20, "distances": ["light", "strong"]},
                                    "tokens": {"files": ["a.safetensors"], "templates": ["{prompt} {token}"]}})
