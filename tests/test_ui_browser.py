"""The app in a real browser (Debian's Chromium driven by Playwright): type, generate, look.

Leaves a full-page screenshot in ``test-artifacts/ui-compare.png``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import NEEDS_CHROMIUM, chromium, running_app
from recap.config import Settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

# A walk through the app in a browser: a slow check, run by .ci/run as its own bounded step.
pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from recap.ui.context import AppContext

    with running_app(AppContext.create(Settings(home=tmp_path_factory.mktemp("browser-home"), model="tiny"))) as demo:
        yield demo.local_url


@pytest.fixture(scope="module")
def page(app_url):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(app_url)
        yield page


def test_type_a_prompt_generate_and_see_players_and_spectrograms(page):
    from playwright.sync_api import expect

    # The offline model is labelled as such before anything runs.
    expect(page.locator("#recap-banner")).to_contain_text("random weights")
    # Prompt tab: a baseline and one prompt written by hand.
    page.get_by_label("Baseline prompt").fill("rain on a tin roof")
    page.get_by_label("Baseline prompt").press("Enter")
    expect(page.locator("#variants-table")).to_contain_text("rain on a tin roof")
    page.get_by_label("Add a prompt").fill("drizzle on a metal roof")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#variants-table")).to_contain_text("manual-1")
    # Generate & compare: both variants are ticked; two seeds by default -> a 2 x 2 grid.
    page.get_by_role("tab", name="Generate & compare").click()
    expect(page.get_by_label("manual-1")).to_be_checked()
    page.get_by_label("range slider for Steps").fill("2")  # quick: the tiny model's audio is noise anyway
    page.get_by_label("range slider for Seconds").fill("1")
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.locator("#run-status")).to_contain_text("4 clips", timeout=120_000)
    page.get_by_text("Every cell, full size").click()  # the long view, one accordion below the matrix
    expect(page.locator(".recap-cell-spec")).to_have_count(4, timeout=120_000)
    page.locator(".recap-cell-spec").last.scroll_into_view_if_needed()  # plots draw when in view
    cells = page.locator(".recap-cell-spec .js-plotly-plot")
    expect(cells).to_have_count(4)
    expect(page.locator(".recap-clip")).to_have_count(4)
    expect(page.locator("#run-status")).to_contain_text("2 variant(s) × 2 seed(s) = 4 clips")
    expect(page.locator("#run-status")).to_contain_text("Random weights")
    expect(page.get_by_text("vs baseline seed 1: cos")).to_be_visible()
    # The whole band by default (the axis is Hz: the tiny model makes 16 kHz, bin k is k * 16000 / 1022 Hz)
    assert cells.first.evaluate("e => e._fullLayout.yaxis.range[1]") > 7900
    # The thesis's bins 100-150 are a preset; a new range redraws every cell from the saved audio.
    page.get_by_label("thesis: bins 100–150").check()
    page.wait_for_function(
        "() => { const e = document.querySelector('.recap-cell-spec .js-plotly-plot');"
        " return e && Math.round(e._fullLayout.yaxis.range[1] * 1022 / 16000) === 150; }", timeout=60_000)
    assert round(cells.first.evaluate("e => e._fullLayout.yaxis.range[0]") * 1022 / 16000) == 100
    expect(page.locator("#bins-caption")).to_contain_text("bins 100–149 = 1,566–")
    slider = page.get_by_label("range slider for Lowest bin shown")
    slider.fill("40")
    page.wait_for_function(
        "() => { const e = document.querySelector('.recap-cell-spec .js-plotly-plot');"
        " return e && Math.round(e._fullLayout.yaxis.range[0] * 1022 / 16000) === 40; }", timeout=60_000)
    expect(page.get_by_text("bins 40–149")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-compare.png"), full_page=True)


def test_the_download_offers_only_the_run_on_screen(page):
    from playwright.sync_api import expect

    # continues on the page of the test above: a run is on screen
    page.get_by_role("button", name="Download the run (.zip)").click()
    archive = page.locator("#run-archive")
    expect(archive).to_contain_text("recap-run-", timeout=60_000)
    shown = archive.inner_text()
    # a new run replaces the one on screen: the old archive is no longer offered
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(archive).to_be_hidden(timeout=120_000)
    assert "recap-run-" in shown
