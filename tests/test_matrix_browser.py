"""The compare tab's one-screen view in a real browser (Debian's Chromium, Playwright) at 1366x768.

A 4-variant x 3-seed run of the toy model (trained: its scores differ) is opened through the page; the matrix of players
must fit the laptop screen, and the A/B toggle must keep the playback position. With
``RECAP_SCREENSHOTS=1`` the screen is saved as ``docs/matrix.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser import NEEDS_CHROMIUM, chromium, running_app
from recap.config import Settings
from recap.variants import Variant

SCREEN = {"width": 1366, "height": 768}
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "matrix.png"

pytestmark = [NEEDS_CHROMIUM, pytest.mark.slow]

# The player the A/B area shows (the other one is hidden by the page's CSS).
VARIANTS = [Variant("baseline", "a high repeating beep", "baseline", 0),
            Variant("light-1", "a high repeated beep", "llm", 1),
            Variant("strong-1", "a low continuous hum", "llm", 2),
            Variant("manual-1", "a mid repeating siren", "manual", 4)]
SHOWN = "() => [...document.querySelectorAll('#recap-ab audio')].find(a => a.offsetParent !== null)"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The page at 1366x768 with a 4 x 3 run of the toy model open on the compare tab.

    The run is made by the core (as Generate makes it) and opened through the page's run browser.
    """
    from playwright.sync_api import expect

    from recap.backends.loading import load_backend
    from recap.generation.grid import GenerationConfig, generate_grid, save_run
    from recap.ui.context import AppContext

    ctx = AppContext.create(Settings(home=tmp_path_factory.mktemp("matrix-home"), model="toy"))
    toy = load_backend("toy")
    result = generate_grid(toy, VARIANTS, GenerationConfig(seconds=1.0, steps=10, seeds=[0, 1, 2]))
    with running_app(ctx) as demo, chromium() as browser:
        page = browser.new_page(viewport=SCREEN)
        page.set_default_timeout(60_000)
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Generate & compare").click()
        expect(page.locator("#compare-empty")).to_be_visible()
        page.get_by_label("Saved runs").click()  # nothing saved yet: an empty list
        expect(page.get_by_role("option")).to_have_count(0)
        page.keyboard.press("Escape")
        page.get_by_role("heading", name="Scores").click()  # focus leaves the list
        # saved while the page is open: opening the list again reads it, no Refresh needed
        run_id = save_run(result, toy, ctx.settings.runs_dir).run_id
        page.get_by_label("Saved runs").click()
        page.get_by_role("option", name=run_id).click()
        page.get_by_role("button", name="Open", exact=True).click()
        expect(page.locator("#run-status")).to_contain_text("4 variant(s) × 3 seed(s) = 12 clips", timeout=180_000)
        yield page


def test_a_four_by_three_matrix_fits_a_laptop_screen(page):
    from playwright.sync_api import expect

    matrix = page.locator("#recap-matrix")
    players = matrix.locator(".recap-mini audio")
    expect(players).to_have_count(12, timeout=60_000)  # drawn once the run is measured
    matrix.evaluate("e => e.scrollIntoView({block: 'start'})")
    box = matrix.bounding_box()
    assert box["height"] <= SCREEN["height"], f"the matrix is {box['height']:.0f} px tall"
    for i in range(12):
        expect(players.nth(i)).to_be_in_viewport()
    # every row names its variant and tier; the prompt is in the tooltip
    expect(matrix.locator(".recap-mini-label")).to_have_count(4)
    expect(matrix.locator(".recap-mini-label").nth(1)).to_contain_text("tier 1 · light rewording")
    assert matrix.locator(".recap-mini-label").nth(1).get_attribute("title") == "a high repeated beep"
    # the heatmap of the chosen score and the seed band, with n stated
    expect(page.locator("#recap-heatmap .js-plotly-plot")).to_have_count(1, timeout=60_000)
    expect(page.locator("#recap-band-caption")).to_contain_text("n = 3 seed(s)")
    if os.environ.get("RECAP_SCREENSHOTS") == "1":
        page.screenshot(path=str(SCREENSHOT))


def test_the_ab_toggle_keeps_the_playback_position(page):
    from playwright.sync_api import expect

    # A new run picks its first variant at its first seed: A is the baseline, B that cell.
    expect(page.locator("#recap-pick-caption")).to_contain_text("light-1", timeout=60_000)
    page.locator("#recap-ab-toggle").scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('#recap-ab audio')].filter(a => a.src).length === 2")
    before = page.evaluate_handle(SHOWN)
    src_a = before.evaluate("a => a.src")
    assert "baseline" in src_a
    # Paused at 0.5 s: the other clip is shown at 0.5 s, still paused.
    before.evaluate("a => { a.currentTime = 0.5; }")
    page.wait_for_function("a => a.readyState >= 1 && Math.abs(a.currentTime - 0.5) < 1e-3", arg=before)
    page.locator("#recap-ab-toggle").click()
    page.wait_for_function(f"() => ({SHOWN})().src !== {src_a!r}")
    after = page.evaluate_handle(SHOWN)
    page.wait_for_function("a => Math.abs(a.currentTime - 0.5) < 0.05", arg=after)
    assert after.evaluate("a => a.paused") and "light-1" in after.evaluate("a => a.src")
    # Playing (1 s clips): the baseline starts where the variant was, and keeps playing.
    after.evaluate("a => { a.currentTime = 0; a.play(); }")
    page.wait_for_function("a => !a.paused && a.currentTime > 0", arg=after)
    after.evaluate("a => { a.currentTime = 0.25; }")
    page.locator("#recap-ab-toggle").click()
    page.wait_for_function(f"() => ({SHOWN})().src === {src_a!r}")
    back = page.evaluate_handle(SHOWN)
    page.wait_for_function("a => !a.paused", arg=back)
    t = back.evaluate("a => a.currentTime")
    assert 0.25 <= t < 1.0, t  # from 0.25 s on, not from the start
    assert after.evaluate("a => a.paused")
    back.evaluate("a => a.pause()")
