"""A rater's whole MUSHRA and ABX study in a real browser (Debian's Chromium driven by Playwright),
on a phone-sized page and on a laptop-sized one.

The rater sets their volume on calibration noise, does one practice trial that stores nothing,
switches between clips mid-play and hears the new one go on from the same position, is refused
(beside the answer, with the form left as it was) until every clip was played to the end, leaves,
resumes with their resume code in a fresh browser context at the right item, and finishes. The
stored answers and the server's play log are then compared with what the page did. Leaves a phone
screenshot of a MUSHRA trial in ``docs/rater-phone.png``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from browser import NEEDS_CHROMIUM, chromium, running_app
from recap.config import Settings
from recap.generation.grid import GenerationConfig, generate_grid, make_variants, save_run
from recap.study.store import REFERENCE_CLIP, StudyConfig, StudyStore

pytestmark = [NEEDS_CHROMIUM, pytest.mark.slow]

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "rater-phone.png"
LABELS = ("baseline", "variant-1")
PHONE, LAPTOP = {"width": 390, "height": 844}, {"width": 1366, "height": 768}
# The test plays each clip's last this many seconds to its end: quick, yet a play's start and end
# reach the server well apart (they travel as separate events).
TAIL_S = 0.3

# The <audio> element of a player (WaveSurfer keeps it in a shadow root, beside a spare one with
# no source), as the page's own controller finds it.
MEDIA = """(id) => {
    const host = document.getElementById(id);
    const found = Array.from(host.querySelectorAll('audio'));
    for (const el of host.querySelectorAll('*')) if (el.shadowRoot) found.push(...el.shadowRoot.querySelectorAll('audio'));
    return found.find(a => a.currentSrc || a.src) || null;
}"""

# Records every play, pause and end of the trial's players, tagged with the screen the test says
# is on: what the page did, to compare with the server's play log.
RECORD = """([ids, screen]) => {
    const media = %s;
    window.pageLog = window.pageLog || [];
    window.recorded = window.recorded || new WeakSet();
    window.screen_ = screen;
    for (const id of ids) {
        const a = media(id);
        if (!a || window.recorded.has(a)) continue;
        window.recorded.add(a);
        for (const type of ['play', 'pause', 'ended'])
            a.addEventListener(type, () => window.pageLog.push([window.screen_, a.dataset.testId || id, type]));
    }
    for (const id of ids) { const a = media(id); if (a) { a.dataset.testId = id; a.playbackRate = 1; } }
}""" % MEDIA


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny):
    """The app serving a RECAP_HOME with one tiny run (baseline, variant-1; 2 seeds of 1.5 s): (url, home, run id)."""
    from recap.ui.context import AppContext

    home = tmp_path_factory.mktemp("rater-browser-home")
    variants = make_variants("rain on a tin roof", ["drizzle on a metal roof"])
    grid = generate_grid(tiny, variants, GenerationConfig(seconds=1.5, steps=2, seeds=[0, 1]))
    run = save_run(grid, tiny, home / "runs")
    with running_app(AppContext.create(Settings(home=home, model="tiny"))) as demo:
        yield demo.local_url, home, run.run_id


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a page's first load on a busy 2-core machine takes a while
    with chromium() as browser:
        yield browser


def players_of(kind: str) -> dict[str, str]:
    """Player element id -> the clip name the server logs it under."""
    if kind == "mushra":
        return {"study-reference": REFERENCE_CLIP, **{f"study-stimulus-{k}": str(k) for k in range(1, 5)}}
    return {"study-clip-a": "A", "study-clip-b": "B", "study-clip-x": "X"}


class Rater:
    """One rater's page, and what the test made it do."""

    def __init__(self, browser, url: str, code: str, viewport: dict, kind: str) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.page.goto(f"{url}?study={code}")
        self.kind, self.viewport, self.players = kind, viewport, players_of(kind)

    def open(self, name: str = "", resume: str = "") -> None:
        from playwright.sync_api import expect

        expect(self.page.get_by_label("Study code")).not_to_have_value("")  # prefilled from the link
        self.page.get_by_label("Your name (optional)").fill(name)
        self.page.get_by_label("Resume code (optional)").fill(resume)
        self.page.get_by_role("button", name="Open study").click()

    def media(self, player: str):
        return self.page.evaluate_handle(MEDIA, player)

    def audio(self, player: str, expression: str):
        return self.page.evaluate(f"(id) => {{ const a = ({MEDIA})(id); return {expression}; }}", player)

    def record(self, screen: object) -> None:
        """Waits for the trial's clips to load, then logs their events under ``screen``."""
        for player in self.players:
            if self.page.locator(f"#{player}").is_visible():
                self.page.wait_for_function(f"(id) => {{ const a = ({MEDIA})(id); return a && a.duration > 0; }}",
                                            arg=player)
        self.page.evaluate(RECORD, [[p for p in self.players if self.page.locator(f"#{p}").is_visible()], screen])

    def switch(self, player: str) -> None:
        self.page.locator(f"#study-transport [data-player='{player}']").click()

    def play_to_end(self, player: str) -> None:
        """Selects ``player`` on the switch bar, seeks it near its end, plays it and waits for its end
        (in one call into the page: the machine may be slow, the clip's end is not)."""
        self.page.evaluate(f"""async ([id, tail]) => {{
            const a = ({MEDIA})(id);
            document.querySelector(`#study-transport [data-player='${{id}}']`).click();
            a.playbackRate = 1;
            a.currentTime = Math.max(0, a.duration - tail);
            const ended = new Promise(done => a.addEventListener('ended', done, {{once: true}}));
            if (a.paused) document.querySelector('#study-transport [data-playpause]').click();
            await ended;
        }}""", [player, TAIL_S])

    def page_log(self) -> list[list]:
        return self.page.evaluate("window.pageLog || []")

    def no_sideways_scroll(self) -> None:
        assert self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), self.viewport

    def answer(self, values: dict[str, int] | str) -> None:
        """Sets MUSHRA scores by clip name (moving each slider as a finger would) or the ABX choice."""
        if isinstance(values, str):
            self.page.locator("#study-abx").get_by_label(values, exact=True).check()
            return
        # Each slider fits the page and is moved as a finger moves it (its input and change events).
        self.page.evaluate("""([values, width]) => {
            for (const [label, value] of Object.entries(values)) {
                const slider = document.querySelector(`#study-score-${label} input[type=range]`);
                slider.scrollIntoView({block: 'center'});
                const box = slider.getBoundingClientRect();
                if (box.width < 150 || box.left < 0 || box.right > width) throw new Error(`slider ${label} at ${box.left}..${box.right}`);
                slider.value = String(value);
                slider.dispatchEvent(new Event('input', {bubbles: true}));
                slider.dispatchEvent(new Event('change', {bubbles: true}));
            }
        }""", [values, self.viewport["width"]])

    def scores_shown(self, labels) -> dict[str, str]:
        return {k: self.page.locator(f"#study-score-{k} input[type=range]").input_value() for k in labels}

    def submit(self) -> None:
        button = self.page.get_by_role("button", name="Submit")
        button.scroll_into_view_if_needed()
        button.click()


def until(page, condition, what: str, timeout_ms: int = 20_000) -> None:
    """Waits, through Playwright's own clock, until ``condition()`` holds (the server's side of an event)."""
    for _ in range(timeout_ms // 50):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {what}")


def assert_refused_beside_the_answer(rater: Rater, message: str) -> None:
    """The refusal is said in the answer's own message box, below the players and above Submit; no toast."""
    from playwright.sync_api import expect

    box = rater.page.locator("#study-answer-message")
    expect(box).to_contain_text(message)
    expect(rater.page.locator("[data-testid='toast-body']")).to_have_count(0)
    visible = [p for p in rater.players if rater.page.locator(f"#{p}").is_visible()]
    last_player = max(rater.page.locator(f"#{p}").bounding_box()["y"] + rater.page.locator(f"#{p}").bounding_box()[
        "height"] for p in visible)
    message_box = box.bounding_box()
    assert message_box["y"] >= last_player
    assert message_box["y"] <= rater.page.get_by_role("button", name="Submit").bounding_box()["y"]


@pytest.mark.parametrize("viewport", [PHONE, LAPTOP], ids=["phone", "laptop"])
@pytest.mark.parametrize("kind", ["mushra", "abx"])
def test_a_rater_warms_up_switches_in_place_resumes_and_the_log_matches_the_page(app, browser, kind, viewport):
    from playwright.sync_api import expect

    url, home, run_id = app
    store = StudyStore(home)
    config = (StudyConfig(kind="mushra", reference_variant="baseline", conditions=["variant-1"], repeats=0,
                          must_play=True) if kind == "mushra" else
              StudyConfig(kind="abx", pairs=[":".join(LABELS)], repeats=0, must_play=True))
    info = store.create(config, [run_id])
    code, total = info.code, 2
    rater = Rater(browser, url, code, viewport, kind)
    page = rater.page

    # 1. A new rater starts with the volume check: calibration noise, and nothing else to answer.
    rater.open(name="robin")
    expect(page.locator("#study-status")).to_contain_text("Volume check")
    expect(page.locator("#study-calibration")).to_be_visible()  # (a group repeats its id inside)
    expect(page.locator("#study-trial")).to_be_hidden()
    resume = re.search(r"resume code: `?([A-Za-z0-9_-]{8,})", page.locator("#study-resume").inner_text()).group(1)
    page.wait_for_function(f"() => {{ const a = ({MEDIA})('study-calibration'); return a && a.duration > 3; }}")
    rater.no_sideways_scroll()
    page.locator("#study-continue").click()

    # 2. One practice trial in the real trial screen: refused while incomplete, checked, not stored.
    expect(page.locator("#study-status")).to_contain_text("Practice — not recorded")
    expect(page.locator("#study-progress-bar")).to_contain_text("Practice — not recorded")
    expect(page.locator("#study-resume")).to_contain_text(resume)
    rater.record("practice")
    first = "study-reference" if kind == "mushra" else "study-clip-a"
    rater.play_to_end(first)
    rater.submit()
    assert_refused_beside_the_answer(rater, "Rate clip 1" if kind == "mushra" else "choose one of X is A, X is B")
    labels = [str(k) for k in range(1, 5)]
    rater.answer({k: 50 for k in labels} if kind == "mushra" else "X is B")
    rater.no_sideways_scroll()
    rater.submit()
    expect(page.locator("#study-status")).to_contain_text(f"item 1 of {total}")
    expect(page.locator("#study-progress-bar")).to_contain_text(f"0 of {total} answered")
    assert store.answers(code) == [] and store.plays(code) == []  # the practice left no row at all

    # 3. The first real trial: switching keeps the position and the playing state.
    rater.record(0)
    expect(page.locator("#study-transport [aria-pressed='true']")).to_have_count(0)  # a new screen starts afresh
    text = page.locator("#study-rater").inner_text() + page.locator("#study-rater").inner_html()
    assert not any(label in text for label in LABELS)  # blind: no condition on the page
    if kind == "mushra" and viewport is PHONE:
        page.evaluate("document.querySelector('#study-status').scrollIntoView({block: 'start'})")
        page.screenshot(path=str(SCREENSHOT))  # the phone's screen: status, resume code, switch bar, first clips
    one, two = ("study-stimulus-1", "study-stimulus-2") if kind == "mushra" else ("study-clip-a", "study-clip-b")
    rater.switch(one)
    for player in (one, two):  # 6 s a clip to switch and pause in, however busy the machine is
        page.evaluate(f"(id) => {{ ({MEDIA})(id).playbackRate = 0.25; }}", player)
    page.locator("#study-transport [data-playpause]").click()
    page.wait_for_function(f"(id) => ({MEDIA})(id).currentTime > 0.2", arg=one)
    # Read and switch in one task of the page, so the position compared is the one switched at.
    at, switched = page.evaluate(f"""([one, two]) => {{
        const media = {MEDIA};
        const before = media(one).currentTime;
        document.querySelector(`#study-transport [data-player='${{two}}']`).click();
        return [before, {{time: media(two).currentTime, paused: media(two).paused, other: media(one).paused}}];
    }}""", [one, two])
    assert 0.2 < at < 1.4 and switched["time"] == pytest.approx(at, abs=0.05), (at, switched)
    assert not switched["paused"] and switched["other"]  # the new clip plays on; the old one paused
    expect(page.locator(f"#study-transport [data-player='{two}']")).to_have_attribute("aria-pressed", "true")
    # The rater presses pause on the switch bar, switches back: still paused, at the same place.
    page.locator("#study-transport [data-playpause]").click()
    page.wait_for_function(f"(id) => ({MEDIA})(id).paused", arg=two)
    paused_at = rater.audio(two, "a.currentTime")
    rater.switch(one)
    assert rater.audio(one, "a.currentTime") == pytest.approx(paused_at, abs=0.05) and rater.audio(one, "a.paused")

    # 4. Submitting before every clip was played to the end: refused beside the answer, form intact.
    answer_1 = {k: 10 * int(k) + 3 for k in labels} if kind == "mushra" else "X is A"
    rater.answer(answer_1)
    rater.submit()
    assert_refused_beside_the_answer(rater, "to the end before answering")
    if kind == "mushra":
        assert rater.scores_shown(labels) == {k: str(v) for k, v in answer_1.items()}
    else:
        expect(page.locator("#study-abx").get_by_label("X is A", exact=True)).to_be_checked()
    assert store.answers(code) == []

    def play_everything(screen: object) -> None:
        for player in rater.players:
            if page.locator(f"#{player}").is_visible():
                rater.play_to_end(player)
        names = players_of(kind)
        played = sum(1 for s, _, t in rater.page_log() if s == screen and t == "play")
        ended = {names[p] for s, p, t in rater.page_log() if s == screen and t == "ended"}

        def arrived() -> bool:
            mine = [p for p in store.plays(code) if p["slot"] == screen]
            return len(mine) == played and {p["clip"] for p in mine if p["ended"]} == ended

        until(page, arrived, "the plays to reach the server")

    play_everything(0)
    rater.submit()
    expect(page.locator("#study-status")).to_contain_text(f"item 2 of {total}")
    assert len(store.answers(code)) == 1
    log = rater.page_log()
    rater.context.close()

    # 5. A fresh browser context resumes by resume code at item 2: no volume check, no practice.
    rater = Rater(browser, url, code, viewport, kind)
    page = rater.page
    rater.open(resume=resume)
    expect(page.locator("#study-status")).to_contain_text(f"item 2 of {total}")
    expect(page.locator("#study-calibration")).to_be_hidden()
    expect(page.locator("#study-resume")).to_contain_text(resume)
    rater.record(1)
    answer_2 = {k: 90 - int(k) for k in labels} if kind == "mushra" else "X is B"
    rater.answer(answer_2)
    play_everything(1)
    rater.no_sideways_scroll()
    rater.submit()
    expect(page.locator("#study-status")).to_contain_text("All done")
    log += rater.page_log()
    rater.context.close()

    # 6. The stored answers are what the page sent, mapped to conditions as shown ...
    answers = sorted(store.answers(code), key=lambda a: a["slot"])
    assert [a["slot"] for a in answers] == [0, 1] and {a["rater_name"] for a in answers} == {"robin"}
    assert {a["device"] for a in answers} == {"phone" if viewport is PHONE else "desktop"}
    for answer, sent in zip(answers, (answer_1, answer_2)):
        if kind == "mushra":
            assert answer["scores"] == {condition: sent[k] for k, condition in zip(labels, answer["shown"])}
        else:
            assert answer["choice"] == sent
            named = {"X is A": answer["shown"][0], "X is B": answer["shown"][1]}[sent]
            assert answer["correct"] == (named == answer["x_side"])
    # ... and the server's play log is what the page's players did: one row per play, per trial
    # and clip, ended exactly where the page saw the clip end; nothing of the practice.
    names = players_of(kind)
    plays = store.plays(code)
    assert Counter((p["slot"], p["clip"]) for p in plays) == Counter(
        (s, names[p]) for s, p, t in log if t == "play" and s != "practice")
    ended = {(s, names[p]) for s, p, t in log if t == "ended" and s != "practice"}
    assert {(p["slot"], p["clip"]) for p in plays if p["ended"]} == ended
    for answer in answers:
        required = ["reference", *labels] if kind == "mushra" else ["A", "B", "X"]
        assert all(answer["plays"][clip]["ended"] for clip in required)
