"""A blind A/B study in a real browser (Debian's Chromium driven by Playwright).

An experimenter builds an A/B study from a tiny run in the "Listen & rate" tab, two raters in two
separate browser contexts (own cookies, own Gradio session) open its link — a page with nothing
but the rater's view — and answer it blind, and the experimenter's results table shows the counts
the stored answers imply. Leaves a screenshot of a rater's page in
``test-artifacts/study-rater.png``.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import Counter
from pathlib import Path

import pytest

from browser import NEEDS_CHROMIUM, chromium, running_app
from recap.config import Settings
from recap.generation.grid import GenerationConfig, generate_grid, make_variants, save_run
from recap.study.store import StudyStore
from recap.study.stats import summarize

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SEEDS = [0, 1, 2]
QUESTION = "Which sounds more like rain?"
LABELS = ("baseline", "variant-1")

# A walk through the app in a browser: a slow check, run by .ci/run as its own bounded step.
pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]


@pytest.fixture(scope="module")
def study_app(tmp_path_factory, tiny):
    """The app serving a RECAP_HOME that holds one tiny run (baseline + variant-1, 3 seeds): (url, home, run id)."""
    from recap.ui.context import AppContext

    home = tmp_path_factory.mktemp("study-browser-home")
    # Prompts free of the variant labels, so finding a label on the rater's page means a leak.
    variants = make_variants("rain on a tin roof", ["drizzle on a metal roof"])
    grid = generate_grid(tiny, variants, GenerationConfig(seconds=1.0, steps=2, seeds=SEEDS))
    run = save_run(grid, tiny, home / "runs")
    with running_app(AppContext.create(Settings(home=home, model="tiny"))) as demo:
        yield demo.local_url, home, run.run_id


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def new_page(browser, url: str, tab: bool = True):
    """A page in a fresh browser context: its own cookies and storage, so its own Gradio session."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    if tab:
        page.get_by_role("tab", name="Listen & rate").click()
    return page


# Each rater gets copies with bytes of their own (a random chunk after the audio), so a clip is
# recognised by the SHA-256 of its WAV "data" chunk: the samples the player plays.
SHA256_OF_SRC = """async (audio) => {
    const buf = await (await fetch(audio.src)).arrayBuffer();
    const view = new DataView(buf);
    for (let at = 12; at + 8 <= buf.byteLength; ) {
        const id = String.fromCharCode(...new Uint8Array(buf, at, 4)), size = view.getUint32(at + 4, true);
        if (id === "data") {
            const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buf.slice(at + 8, at + 8 + size)));
            return Array.from(digest, b => b.toString(16).padStart(2, "0")).join("");
        }
        at += 8 + size + (size % 2);
    }
    return "no data chunk";
}"""


def shown_clips(page, before: list[str | None]) -> tuple[list[str], list[str]]:
    """What the rater's page plays at A and B: (SHA-256 of each clip's samples, the players' sources).

    The player loads its clip as a ``blob:`` URL (inside the waveform's shadow root, which
    Playwright's CSS pierces) once the trial is drawn; waiting for URLs other than ``before``
    (the previous trial's) makes sure the bytes are this trial's.
    """
    from playwright.sync_api import expect

    digests, sources = [], []
    for side, old in zip(("#study-clip-a", "#study-clip-b"), before):
        player = page.locator(f"{side} audio[src^='blob:']")
        if old:
            expect(player).not_to_have_attribute("src", old)
        expect(player).to_have_count(1)
        sources.append(player.get_attribute("src"))
        digests.append(player.evaluate(SHA256_OF_SRC))
    return digests, sources


def sha256(path: Path) -> str:
    """SHA-256 of a WAV file's "data" chunk (as SHA256_OF_SRC computes it in the page)."""
    data = path.read_bytes()
    at = 12
    while at + 8 <= len(data):
        size = struct.unpack("<I", data[at + 4:at + 8])[0]
        if data[at:at + 4] == b"data":
            return hashlib.sha256(data[at + 8:at + 8 + size]).hexdigest()
        at += 8 + size + size % 2
    raise AssertionError(f"{path} has no data chunk")


def test_experimenter_creates_ab_study_two_raters_answer_blind_results_match(study_app, browser):
    from playwright.sync_api import expect

    url, home, run_id = study_app

    # -- Experimenter: pick the run, pair baseline with variant-1, one question, no repeats or checks.
    lab = new_page(browser, url)
    lab.get_by_text("Experimenter", exact=True).click()
    lab.get_by_label("Runs").click()
    lab.get_by_role("option", name=re.compile(re.escape(run_id))).click()
    # Picking the run fills the builder: the first variant against each of the others
    expect(lab.get_by_label("A/B pairs")).to_have_value("baseline:variant-1")
    lab.get_by_label("A/B questions").fill(QUESTION)
    lab.get_by_label("Repeated items").fill("0")
    lab.get_by_label("Obvious-answer checks").fill("0")
    lab.get_by_role("button", name="Create study").click()
    expect(lab.locator("#study-created")).to_contain_text("Created study", timeout=120_000)
    code = re.search(r"Created study (\w{4}-\w{4})", lab.locator("#study-created").inner_text()).group(1)
    # the link to hand raters is this page's own address with the code
    expect(lab.locator("#study-link textarea, #study-link input")).to_have_value(f"{url.rstrip('/')}/?study={code}")
    info = StudyStore(home).get(code)
    items = len(info.items)
    assert items == len(SEEDS) and {i.condition for i in info.items} == {"baseline:variant-1"}

    # -- Two raters, each in a separate context, open the study from its link.
    raters = {"ann": "A", "bob": "B"}
    pages, fetched, practices = {}, {name: [] for name in raters}, {}
    for name in raters:
        page = new_page(browser, f"{url}?study={code}", tab=False)
        page.on("request", lambda request, name=name: fetched[name].append(request.url))
        expect(page.get_by_label("Study code")).to_have_value(code, timeout=30_000)  # prefilled from the link
        # The link opens the rater's page: no other tab, model picker, banner or experimenter panel.
        for other in ("Prompt", "Token", "Generate & compare", "About"):
            expect(page.get_by_role("tab", name=other)).to_be_hidden()
        for part in ("#model-picker", "#recap-banner", "#study-experimenter"):
            expect(page.locator(part)).to_be_hidden()
        page.get_by_label("Your name (optional)").fill(name)
        page.get_by_role("button", name="Open study").click()
        # A new rater sets their volume, then answers one practice trial, which is not stored.
        expect(page.locator("#study-status")).to_contain_text("Volume check")
        expect(page.locator("#study-status")).to_contain_text(f"as {name}")
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#study-status")).to_contain_text("Practice — not recorded")
        practice = shown_clips(page, [None, None])[1]
        page.locator("#study-choice").get_by_label("A", exact=True).check()
        page.get_by_role("button", name="Submit").click()
        expect(page.locator("#study-status")).to_contain_text(f"item 1 of {items}")
        pages[name], practices[name] = page, practice

    # Answer in turns, so each session's state must stay its own while the other one moves on.
    shown: dict[tuple[str, int], list[str]] = {}
    sources: dict[str, list[str | None]] = {name: practices[name] for name in raters}
    for slot in range(items):
        for name, answer in raters.items():
            page = pages[name]
            rater_box = page.locator("#study-rater")
            expect(page.locator("#study-status")).to_contain_text(f"item {slot + 1} of {items}")
            shown[name, slot], sources[name] = shown_clips(page, sources[name])
            # Blind: nothing in the rater's section names the variants, in its text or its markup.
            text = rater_box.inner_text() + rater_box.inner_html()
            assert not any(label in text for label in LABELS), text
            if name == "ann" and slot == 0:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "study-rater.png"), full_page=True)
            page.locator("#study-choice").get_by_label(answer, exact=True).check()
            page.get_by_role("button", name="Submit").click()
    for page in pages.values():
        expect(page.locator("#study-status")).to_contain_text("All done")
        expect(page.locator("#study-trial")).to_be_hidden()
    # ... nor any address the raters' browsers fetched (the clips are served under opaque names),
    # and no two raters were handed the same address (each gets copies of their own).
    wavs = {name: {u for u in urls if ".wav" in u} for name, urls in fetched.items()}
    assert all(len(w) >= 2 * items for w in wavs.values())
    assert not [u for w in wavs.values() for u in w if any(label in u for label in LABELS)]
    assert not wavs["ann"] & wavs["bob"]

    # -- Stored answers: one per (rater, slot), and the shown sides map back to the real clips.
    answers = StudyStore(home).answers(code)
    assert len(answers) == items * len(raters)
    assert Counter((a["rater_name"], a["slot"]) for a in answers) == {
        (name, slot): 1 for name in raters for slot in range(items)}
    by_item = {i.item_id: i for i in info.items}
    for a in answers:
        item = by_item[a["item_id"]]
        real_order = [item.clip_b, item.clip_a] if a["swapped"] else [item.clip_a, item.clip_b]
        assert shown[a["rater_name"], a["slot"]] == [sha256(info.folder / c) for c in real_order]
        assert a["choice"] == raters[a["rater_name"]]
        # "A" is the real side a unless the sides were swapped for this rater, and vice versa.
        assert a["preferred"] == {("A", False): "a", ("A", True): "b", ("B", False): "b",
                                  ("B", True): "a"}[a["choice"], a["swapped"]]
    for name in raters:  # each rater saw every item once
        assert sorted(a["item_id"] for a in answers if a["rater_name"] == name) == sorted(by_item)
    won = Counter(by_item[a["item_id"]].name_a if a["preferred"] == "a" else by_item[a["item_id"]].name_b
                  for a in answers)
    assert won["baseline"] + won["variant-1"] == items * len(raters)
    results = summarize(info, answers)
    (pref,) = results.preferences
    assert pref.n == items * len(raters)
    assert {s.answer: s.count for s in pref.shares} == {
        "baseline": won["baseline"], "variant-1": won["variant-1"], "None": 0, "Cannot decide": 0}

    # -- The experimenter's results table shows the same counts.
    lab.get_by_role("button", name="Progress").click()
    for name in raters:  # name, answered, of
        expect(lab.locator("#study-progress")).to_contain_text(re.compile(rf"{name}\s+{items}\s+{items}\s"))
    lab.get_by_role("button", name="Results").click()
    table = lab.locator("#study-results")
    total = items * len(raters)
    for answer in ("baseline", "variant-1", "None", "Cannot decide"):
        # The table draws its rows as text cells in column order: section, question, condition,
        # answer, n, count, value, ...
        cells = ["preference", QUESTION, "baseline:variant-1", answer, str(total), str(won.get(answer, 0))]
        expect(table).to_contain_text(re.compile(r"\s+".join(map(re.escape, cells)) + r"\s"))
    for name in raters:
        expect(table).to_contain_text(re.compile(rf"{name}\s+included: failed 0 of 0 checks, changed 0 of 0 repeats\s+{items}"))
    for context in {p.context for p in [lab, *pages.values()]}:
        context.close()
