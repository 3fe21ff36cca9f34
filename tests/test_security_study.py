"""Listening studies on a public server, attacked as a stranger would: over HTTP, with the page only.

Roles (DESIGN.md): a **visitor** reaches no experimenter function (not through the page's private
events, not through the API) until their own tab has typed the experimenter password; a **rater**
gets one study, blind — no file by path, no name, URL or byte that maps a clip to its condition or
links two raters' clips — and resumes only with their own secret code, which nobody else is ever
shown; every number and text a request carries is bounded with a sentence, and a refused request
writes nothing. One served app per kind of settings: public with a password, public without one,
and local (as today).
"""

from __future__ import annotations

import json
import math
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from attack import RawSession, disk_usage, served, upload

from recap.audio_io import write_wav
from recap.config import Settings
from recap.errors import BadInput
from recap.study.store import StudyConfig, StudyStore
from recap.study.items import MAX_REFERENCE_SECONDS
from recap.ui.experimenter import FREE_TRIES, SERVER_FAILURES, SERVER_WINDOW_S, ExperimenterGate, Unlock

PASSWORD = "correct horse battery staple"
SR = 8000
LABELS = ("baseline", "crispwording")
RUN_ID = "run-5f3a9c0d1e2b4a67"  # as unguessable as a real one, and easy to look for in an output


def make_run(home: Path) -> None:
    """A run folder of the documented shape (no model needed): two variants, three seeds, and
    prompts free of the labels, so a label seen by a rater is a leak."""
    folder = home / "runs" / RUN_ID
    t = np.arange(SR // 2) / SR
    clips = []
    for k, label in enumerate(LABELS):
        for seed in range(3):
            rel = f"audio/{label}__seed{seed}.wav"
            write_wav(folder / rel, (0.05 * (k + 1) * np.sin(2 * np.pi * (300 + 50 * seed) * t))[None], SR)
            clips.append({"variant": label, "seed": seed, "audio": rel, "latents": None, "sha256": ""})
    (folder / "manifest.json").write_text(json.dumps({
        "format": "recap.run/1", "run_id": RUN_ID, "kind": "generate", "created": "2026-01-01T00:00:00+00:00",
        "model": {"name": "tiny", "sample_rate": SR, "channels": 1}, "config": {}, "seeds": [0, 1, 2],
        "variants": [{"label": lab, "prompt": "rain on a tin roof", "method": "baseline" if k == 0 else "synonym",
                      "batch": k} for k, lab in enumerate(LABELS)], "clips": clips}))


def ab_study(home: Path) -> str:
    config = StudyConfig(kind="ab", name="Rain", pairs=[":".join(LABELS)], repeats=1, checks=0)
    store = StudyStore(home)
    store.studies()  # the database exists before the study is made, as on a server that has run a while
    return store.create(config, [RUN_ID]).code


def app_with_study(tmp_path_factory, name: str, **settings):
    home = tmp_path_factory.mktemp(name)
    make_run(home)
    code = ab_study(home)
    return served(Settings(home=home, model="tiny", **settings)), home, code


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    """A public server whose owner set an experimenter password: (url, home, study code)."""
    server, home, code = app_with_study(tmp_path_factory, "public-pw", public=True, experimenter_password=PASSWORD)
    with server as (_, url):
        yield url, home, code


@pytest.fixture(scope="module")
def public_off(tmp_path_factory):
    server, home, code = app_with_study(tmp_path_factory, "public-off", public=True)
    with server as (_, url):
        yield url, home, code


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    server, home, code = app_with_study(tmp_path_factory, "local")
    with server as (_, url):
        yield url, home, code


# -- helpers: what a visitor's tab does ------------------------------------------------------

def unlock(tab: RawSession, password: str) -> str:
    """Types ``password`` into the Experimenter panel; returns what the panel says."""
    fn = tab.event(button="Unlock")
    out = tab.call(fn, {tab.component(label="Experimenter password"): password})
    assert out.ok, out.error  # a wrong password is an answer, not a failure: its count must be kept
    return out.output[tab.outputs(fn).index(tab.component(elem_id="study-unlock"))]


def experimenter(tab: RawSession, button: str, **values) -> object:
    """Calls the experimenter event behind ``button`` with values by component label."""
    return tab.call(tab.event(button=button), {tab.component(label=k): v for k, v in values.items()})


def create(tab: RawSession, **values):
    labels = {"checks": "Obvious-answer checks (0-50)", "repeats": "Repeated items (0-50)",
              "title": "Title shown to raters", "questions": "A/B questions (one per line)",
              "pairs": "A/B pairs (one per line, e.g. baseline:reword-1a or RUN/label:RUN2/label)",
              "prompt": "Prompt shown (empty = the run's baseline prompt)", "reference": "Reference clip (optional)"}
    base = {"Runs": [RUN_ID], labels["pairs"]: ":".join(LABELS)}
    return experimenter(tab, "Create study", **{**base, **{labels[k]: v for k, v in values.items()}})


def open_as_rater(url: str, code: str, name: str = "", resume: str = "") -> tuple[RawSession, object]:
    tab = RawSession(url, query=f"?study={code}")
    fn = tab.event(api_name="study_open")
    out = tab.call(fn, {tab.component(label="Study code"): code, tab.component(label="Your name (optional)"): name,
                        tab.component(label="Resume code (optional)"): resume})
    assert out.ok, out.error
    return tab, out


def status_of(tab: RawSession, out) -> str:
    return out.output[tab.outputs(tab.event(api_name="study_open")).index(tab.component(elem_id="study-status"))]


def resume_code(tab: RawSession, out) -> str:
    return re.search(r"resume code is `([^`]+)`", status_of(tab, out)).group(1)


def clip_urls(tab: RawSession, out) -> list[str]:
    """The URLs of the clips A and B in an output of the rater's events."""
    outputs = tab.outputs(tab.event(api_name="study_open"))
    return [out.output[outputs.index(tab.component(elem_id=e))]["value"]["url"]
            for e in ("study-clip-a", "study-clip-b")]


def submit(tab: RawSession, choice: str = "A", comment: str = ""):
    return tab.call(tab.event(api_name="study_submit"), {tab.component(label="Your answer"): choice,
                                                        tab.component(label="Comment (optional)"): comment})


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def wav_samples(data: bytes) -> bytes:
    at = 12
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4:at + 8], "little")
        if data[at:at + 4] == b"data":
            return data[at + 8:at + 8 + size]
        at += 8 + size + size % 2
    raise AssertionError("no data chunk")


def is_load(dep: dict) -> bool:
    return any(trigger == "load" for _, trigger in dep.get("targets", []))


# -- the experimenter role -------------------------------------------------------------------

EXPERIMENTER_BUTTONS = ("Create study", "Progress", "Results", "Refresh lists")


def test_a_visitor_reaches_no_experimenter_event_without_the_password(public):
    url, home, code = public
    tab = RawSession(url)
    for button in EXPERIMENTER_BUTTONS:
        out = tab.call(tab.event(button=button), {})  # the dropdowns untouched: the handler itself refuses
        assert not out.ok and "experimenter password" in out.error, (button, out)
    # The page's load events hand a locked tab no run ids and no study codes either.
    lists = {tab.component(label="Runs"), tab.component(label="Study")}
    for i, dep in enumerate(tab.config["dependencies"]):
        if lists & set(dep["outputs"]) and is_load(dep):
            out = tab.call(dep.get("id", i), {})
            assert RUN_ID not in json.dumps(out.output) and code not in json.dumps(out.output)
    # The API (gradio_client) offers raters' endpoints only.
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/study_open", "/study_submit"} <= named
    assert not {n for n in named if re.search(r"create|progress|results|refresh|unlock", n)}, named
    with pytest.raises(Exception):
        client.predict(api_name="/on_create")
    assert f"Study `{code}` opened" in json.dumps(client.predict(code, "", "", api_name="/study_open"))  # raters: fine


def test_a_wrong_password_fails_and_the_right_one_unlocks_only_its_own_tab(public):
    url, home, code = public
    tab, other = RawSession(url), RawSession(url)
    assert unlock(tab, "guess") .startswith("Wrong password")
    assert "experimenter password" in tab.call(tab.event(button="Progress"), {}).error
    assert unlock(tab, PASSWORD).startswith("Unlocked")
    out = experimenter(tab, "Progress", Study=code)
    assert out.ok, out.error
    # A second tab (another visitor) is still locked, whatever the first one did.
    out = other.call(other.event(button="Progress"), {})
    assert not out.ok and "experimenter password" in out.error


def test_wrong_passwords_make_a_tab_wait_even_for_the_right_one(public):
    url, _, _ = public
    tab = RawSession(url)
    for _ in range(FREE_TRIES - 1):
        assert unlock(tab, "guess") == "Wrong password."
    assert "Wait 30 s" in unlock(tab, "guess")
    assert "Too many wrong passwords in this tab" in unlock(tab, PASSWORD)  # not even compared now
    assert "experimenter password" in tab.call(tab.event(button="Create study"), {}).error


def test_the_gate_slows_guessing_per_tab_and_bounds_it_for_the_whole_server():
    gate = ExperimenterGate("password", PASSWORD)
    assert "correct" not in repr(gate) and not gate.allowed(None) and not gate.allowed(Unlock(failures=0))
    with pytest.raises(BadInput, match="experimenter password"):
        gate.require(Unlock())
    session, now = Unlock(), 1000.0
    for _ in range(FREE_TRIES):
        session, message = gate.try_password(session, "nope", now)
    assert (session.failures, session.retry_at) == (FREE_TRIES, now + 30)
    assert "try again in 30 s" in gate.try_password(session, PASSWORD, now)[1]
    session, message = gate.try_password(session, PASSWORD, now + 31)  # the wait is over
    assert session.unlocked and gate.allowed(session)
    # Fresh sessions cost nothing, so the server counts every wrong password: past the bound,
    # no session's password is compared until the window has passed.
    gate = ExperimenterGate("password", PASSWORD)
    for k in range(SERVER_FAILURES):
        gate.try_password(Unlock(), f"guess {k}", now)
    refused, message = gate.try_password(Unlock(), PASSWORD, now + 1)
    assert not refused.unlocked and "on this server" in message
    assert gate.try_password(Unlock(), PASSWORD, now + SERVER_WINDOW_S + 1)[0].unlocked
    # Only "open" lets everyone in; "off" lets nobody in, whatever a session holds.
    assert ExperimenterGate("open").allowed(None)
    assert not ExperimenterGate("off").allowed(Unlock(unlocked=True))
    with pytest.raises(ValueError):
        ExperimenterGate("password", None)


def test_a_public_server_without_a_password_has_no_experimenter_functions_and_says_how(public_off):
    url, home, code = public_off
    tab = RawSession(url)
    for button in (*EXPERIMENTER_BUTTONS, "Unlock"):
        with pytest.raises(LookupError):
            tab.event(button=button)
    texts = " ".join(str(c.get("props", {}).get("value")) for c in tab.components.values())
    assert "are **off**" in texts and "RECAP_EXPERIMENTER_PASSWORD" in texts and "Variables and secrets" in texts
    with pytest.raises(LookupError):
        tab.component(label="Runs")
    open_as_rater(url, code)  # raters are unaffected


def test_a_local_server_without_a_password_works_as_today(local):
    url, home, code = local
    tab = RawSession(url)
    with pytest.raises(LookupError):
        tab.component(label="Experimenter password")
    refresh = experimenter(tab, "Refresh lists")
    assert refresh.ok and RUN_ID in json.dumps(refresh.output)
    out = create(tab, checks=0, repeats=0)
    assert out.ok and "Created study" in out.output[0], out.error
    assert experimenter(tab, "Progress", Study=code).ok


# -- the rater role: blind means blind -------------------------------------------------------

def test_no_study_file_can_be_fetched_by_path(public):
    url, home, code = public
    store = StudyStore(home)
    tab, out = open_as_rater(url, code)
    assert get(clip_urls(tab, out)[0])  # a clip handed to the rater is served ...
    secrets_on_disk = [store.key_path(code), store.db_path, *sorted((store.studies_dir / code).rglob("*.wav"))]
    assert store.key_path(code).is_file() and len(secrets_on_disk) > 3
    assert not list(store.studies_dir.rglob("*.json"))  # no answer key beside the copies
    for path in secrets_on_disk:  # ... no study file is, by any spelling of its path
        for spelled in (str(path), str(path.resolve()), f"{path.parent}/./{path.name}", str(path).replace("/", "//")):
            assert tab.fetch(spelled)[0] in (403, 404), spelled


def test_raters_get_urls_of_their_own_and_nothing_names_a_condition(public):
    url, home, code = public
    store = StudyStore(home)
    info = store.get(code)
    canonical = {Path(i.clip_a).name for i in info.items} | {Path(i.clip_b).name for i in info.items}
    seen: dict[str, dict[int, list[str]]] = {}
    for rater in ("r1", "r2"):
        tab, out = open_as_rater(url, code)
        rater_id, seen[rater] = resume_code(tab, out), {}
        while True:
            shown = json.dumps(out.output)
            # Nothing the rater receives names a label, the condition, the run, or the study's own copies.
            for leak in (*LABELS, ":".join(LABELS), RUN_ID, str(store.studies_dir), *canonical):
                assert leak not in shown, leak
            if "All done" in shown:
                break
            trial = store.trial(rater_id)
            urls = clip_urls(tab, out)
            # Every copy plays exactly the listening copy it stands for, in the shown order.
            assert [wav_samples(get(u)) for u in urls] == [wav_samples(c.read_bytes()) for c in trial.clips]
            seen[rater][trial.slot] = urls
            out = submit(tab)
            assert out.ok, out.error
    # A new address for every clip shown, and none shared between raters, not even for the same
    # item: Gradio names its cache folders by the bytes' hash, so the folders must differ too.
    shown = [u for slots in seen.values() for us in slots.values() for u in us]
    assert len(shown) == 2 * 2 * (len(info.items) + 1)
    assert len(set(shown)) == len({u.rsplit("/", 2)[-2] for u in shown}) == len(shown)


def test_a_name_never_resumes_another_rater_only_the_resume_code_does(public):
    url, _, code = public
    ann, out = open_as_rater(url, code, name="ann")
    code_ann = resume_code(ann, out)
    assert submit(ann).ok
    impostor, out = open_as_rater(url, code, name="ann")
    assert "item 1 of" in status_of(impostor, out) and resume_code(impostor, out) != code_ann
    again, out = open_as_rater(url, code, resume=code_ann)
    assert resume_code(again, out) == code_ann and "item 2 of" in status_of(again, out)
    tab = RawSession(url, query=f"?study={code}")
    forged = code_ann[:-1] + ("x" if code_ann[-1] != "x" else "y")
    wrong = tab.call(tab.event(api_name="study_open"), {tab.component(label="Study code"): code,
                                                        tab.component(label="Resume code (optional)"): forged})
    assert not wrong.ok and "no rater" in wrong.error


def test_progress_results_and_exports_never_show_a_resume_code(public):
    url, home, code = public
    codes = []
    for name in ("pat", ""):
        tab, out = open_as_rater(url, code, name=name)
        codes.append(resume_code(tab, out))
        assert submit(tab).ok
    lab = RawSession(url)
    assert unlock(lab, PASSWORD).startswith("Unlocked")
    progress = experimenter(lab, "Progress", Study=code)
    results = experimenter(lab, "Results", Study=code)
    assert progress.ok and results.ok, (progress.error, results.error)
    downloads = results.output[2]
    exported = b"".join(get(f["url"]) for f in downloads)
    assert len(downloads) == 5 and b"pat" in exported  # two CSVs, the JSON, the figure as PNG and SVG
    for secret in codes:
        assert secret not in json.dumps(progress.output) + json.dumps(results.output)
        assert secret.encode() not in exported


def test_the_rater_page_shows_only_the_rater_view(public):
    url, _, code = public
    for query, rater_page in ((f"?study={code}", True), ("", False), ("?study=<b>x</b>", False)):
        tab = RawSession(url, query=query)
        (load,) = [d.get("id", i) for i, d in enumerate(tab.config["dependencies"])
                   if tab.component(elem_id="recap-banner") in d["outputs"] and is_load(d)]
        out = tab.call(load, {})
        assert out.ok, out.error
        outputs = dict(zip(tab.outputs(load), out.output))
        hidden = [tab.component(elem_id=e) for e in ("recap-header", "recap-banner", "study-experimenter")]
        hidden += [cid for cid, c in tab.components.items()
                   if c.get("type") == "tabitem" and c["props"].get("label") != "Listen & rate"]
        assert len(hidden) == 7
        for cid in hidden:
            assert outputs.get(cid, {}).get("visible", True) is (not rater_page), (query, tab.components[cid])
        (tabs,) = [cid for cid, c in tab.components.items() if c.get("type") == "tabs"]
        # Gradio keeps hidden tabs' buttons, so the page's CSS hides them by this class.
        assert ("recap-rater-page" in outputs[tabs].get("elem_classes", [])) is rater_page
        assert (outputs[tabs].get("selected") == "listen") is rater_page


# -- bounds: every value a request carries ---------------------------------------------------


def test_out_of_bounds_study_inputs_are_refused_with_sentences_and_write_nothing(public, tmp_path):
    url, home, code = public
    lab = RawSession(url)
    assert unlock(lab, PASSWORD).startswith("Unlocked")
    long_ref = tmp_path / "long.wav"
    write_wav(long_ref, np.full((1, int(SR * (MAX_REFERENCE_SECONDS + 1))), 0.1, np.float32), SR, subtype="PCM_16")
    attacks = {
        "obvious-answer checks must be a whole number from 0 to 50": dict(checks=10**9),
        "obvious-answer checks must be a whole number from 0 to 50, got nan": dict(checks=math.nan),
        "obvious-answer checks must be a whole number from 0 to 50, got -1": dict(checks=-1),
        "repeated items must be a whole number from 0 to 50, got 2.5": dict(repeats=2.5),
        "the title is 100,000 characters long": dict(title="x" * 100_000),
        "the questions is 100,000 characters long": dict(questions="q\n" * 50_000),
        "an A/B question is 600 characters long": dict(questions="q" * 600),
        "the pairs is 70,000 characters long": dict(pairs="a:b," * 17_500),
        "would have more than 500 items": dict(pairs="\n".join([":".join(LABELS)] * 200)),
        "the prompt is 5,000 characters long": dict(prompt="p" * 5000),
        f"{MAX_REFERENCE_SECONDS + 1:.0f} s long; the limit is {MAX_REFERENCE_SECONDS:.0f} s":
            dict(reference=upload(url, long_ref, "audio/wav")),
    }
    before = disk_usage(home)
    studies = len(StudyStore(home).studies())
    for sentence, values in attacks.items():
        out = create(lab, **values)
        assert not out.ok and sentence in out.error, (values.keys(), out.error[:300])
    assert disk_usage(home) == before and len(StudyStore(home).studies()) == studies
    # A rater's inputs too: a huge comment, an answer that is not one, a forged scale value.
    tab, _ = open_as_rater(url, code)
    before = disk_usage(home)
    out = submit(tab, comment="c" * 100_000)
    assert not out.ok and "the comment is 100,000 characters long" in out.error
    out = submit(tab, choice="A' OR 1=1")
    assert not out.ok
    assert disk_usage(home) == before


def test_the_core_bounds_what_the_cli_and_the_api_share(tmp_path):
    from recap.ui.rater import open_study, submit_answer

    make_run(tmp_path)
    store = StudyStore(tmp_path)
    bad = {"checks": (10**9, "obvious-answer checks must be a whole number from 0 to 50"),
           "repeats": (-1, "repeated items must be"), "max_failed_checks": (math.inf, "failed checks allowed must"),
           "target_lufs": (math.nan, "target loudness (LUFS) must be a number"),
           "name": ("x\x00y", "the title contains control characters"),
           "questions": (["q"] * 21, "21 A/B questions are too many"),
           "pairs": ([":".join(LABELS)] * 501, "501 pairs are too many"),
           "scales": (["OVL"] * 3, "3 rating scales are too many"),
           "prompt": ("p" * 4001, "the prompt shown is 4,001 characters long"),
           "hide_prompt": ("yes", "hide_prompt must be true or false"), "seed": (-5, "seed must be"),
           "kind": ("mos", "study type must be 'ab' or 'rating'")}
    before = disk_usage(tmp_path)
    for field, (value, sentence) in bad.items():
        with pytest.raises(BadInput, match=re.escape(sentence)):
            store.create(StudyConfig(**{"kind": "ab", "pairs": [":".join(LABELS)], field: value}), [RUN_ID])
    with pytest.raises(BadInput, match="from 1 to 64 runs"):
        store.create(StudyConfig(kind="ab", pairs=[":".join(LABELS)]), [RUN_ID] * 65)
    assert disk_usage(tmp_path) == before
    rating = store.create(StudyConfig(kind="rating", checks=0, repeats=0), [RUN_ID])
    view = open_study(tmp_path, rating.code)
    for value in (math.nan, 0, 6, 2.5, "three", None, [3]):
        with pytest.raises(BadInput):
            submit_answer(tmp_path, view.state, None, {"OVL": value, "REL": 3})
    with pytest.raises(BadInput, match="at most 80"):
        store.join(rating.code, name="n" * 81)
    with pytest.raises(BadInput, match="no rater"):
        store.join(rating.code, rater_id="x" * 10_000)
    assert store.answers(rating.code) == []
