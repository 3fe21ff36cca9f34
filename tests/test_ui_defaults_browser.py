"""Every tab's default submit, in a real browser (Debian's Chromium driven by Playwright), on a
laptop (1366 × 768): it works, or it names the missing input next to the
field. And the spectrogram a first-time user sees shows the sound: a high toy beep has its
energy where the toy world puts "high" (recap.toy.world.PITCHES), with the defaults.

Writes docs/compare.png and docs/spectrogram.png (the README shows them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from browser import NEEDS_CHROMIUM, chromium, running_app
from recap.config import Settings
from recap.toy.world import PITCHES

DOCS = Path(__file__).resolve().parents[1] / "docs"
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}

# A walk through every tab on the toy model: a slow check, run by .ci/run as its own bounded step.
pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]

# The row (Hz) of a plot's first trace with the most energy, averaged over time, read from the page.
PEAK_HZ = """e => {
  const t = e.calcdata[0][0];
  const ys = Array.from(e._fullData[0].y);
  const means = t.z.map(row => { const v = Array.from(row).filter(Number.isFinite);
                                 return v.reduce((a, b) => a + b, 0) / Math.max(v.length, 1); });
  return ys[means.indexOf(Math.max(...means))];
}"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from recap.ui.context import AppContext

    with running_app(AppContext.create(Settings(home=tmp_path_factory.mktemp("defaults-home"), model="toy"))) as demo:
        yield demo.local_url


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def open_page(browser, url, viewport):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(60_000)
    page.goto(url)
    return page


@pytest.fixture(scope="module")
def beep(tmp_path_factory) -> str:
    """A 1 s high beep at 8 kHz, as a source clip."""
    path = tmp_path_factory.mktemp("source") / "beep.wav"
    t = np.arange(8000) / 8000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 1800.0 * t)).astype(np.float32), 8000)
    return str(path)


def test_a_high_beep_shows_at_its_frequency_with_the_default_spectrogram(browser, app_url):
    from playwright.sync_api import expect

    page = open_page(browser, app_url, LAPTOP)
    page.get_by_label("Baseline prompt").fill("a high continuous beep")
    page.get_by_label("Baseline prompt").press("Enter")
    expect(page.locator("#variants-table")).to_contain_text("a high continuous beep")
    page.get_by_role("tab", name="Generate & compare").click()
    # before any run: the empty state says what to do, and the bins are already given in Hz
    expect(page.locator("#compare-empty")).to_contain_text("Nothing generated yet")
    expect(page.locator("#bins-caption")).to_contain_text("bins 0–511 = 0–4,000 Hz at 8,000 Hz")
    page.get_by_role("button", name="Generate", exact=True).click()  # every setting as it opens
    expect(page.locator("#run-status")).to_contain_text("clips", timeout=120_000)
    page.get_by_text("Every cell, full size").click()  # the long view, one accordion below the matrix
    cells = page.locator(".recap-cell-spec .js-plotly-plot")
    expect(cells).to_have_count(2, timeout=120_000)  # 1 prompt × seeds 0, 1
    expect(page.locator("#compare-empty")).to_be_hidden()
    page.locator(".recap-cell-spec").first.scroll_into_view_if_needed()
    page.wait_for_function("() => { const e = document.querySelector('.recap-cell-spec .js-plotly-plot');"
                           " return e && e.calcdata && e.calcdata.length; }")
    first = cells.first
    assert first.evaluate("e => e._fullLayout.yaxis.title.text") == "frequency (Hz)"
    low, high = PITCHES["high"]
    peak = first.evaluate(PEAK_HZ)
    assert low * 0.9 <= peak <= high * 1.1, f"the beep's energy is at {peak:.0f} Hz, not in {low}-{high} Hz"
    top = first.evaluate("e => e._fullLayout.yaxis.range[1]")
    assert top > 3900  # the whole range up to Nyquist (4 kHz), not bins 100-150 (783-1,166 Hz)
    page.screenshot(path=str(DOCS / "compare.png"))
    # the whole grid and the difference view
    page.get_by_text("Whole grid on one figure, and differences to the baseline").click()
    figure = page.locator(".js-plotly-plot").filter(has_text="Run ").first
    expect(figure).to_be_visible()
    figure.scroll_into_view_if_needed()
    figure.screenshot(path=str(DOCS / "spectrogram.png"))
    # the thesis's rows stay one click away, and the caption says what they are here
    page.get_by_label("thesis: bins 100–150").check()
    expect(page.locator("#bins-caption")).to_contain_text("bins 100–149 = 783–1,166 Hz at 8,000 Hz")
    # the tables say why they are empty
    page.get_by_label("CLAP", exact=True).check()
    expect(page.locator("#table-note")).to_contain_text("CLAP scores are off in the app")
    page.close()


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_every_tabs_default_submit_works_or_names_the_missing_input(browser, app_url, beep, viewport):
    from playwright.sync_api import expect

    page = open_page(browser, app_url, viewport)
    # every tab is one tap away: wrapped, never folded into a "More tabs" menu
    for name in ("Prompt", "Token", "Generate & compare", "Listen & rate", "About"):
        expect(page.get_by_role("tab", name=name)).to_be_visible()
    expect(page.get_by_role("button", name="More tabs")).to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1  # no sideways scrolling
    # the toy's words are listed, and an example prompt is one click
    expect(page.locator("#model-words")).to_contain_text("words this model reads")
    page.locator("#prompt-examples").get_by_text("a low continuous hum").click()
    expect(page.get_by_label("Baseline prompt")).to_have_value("a low continuous hum")
    page.locator("#prompt-examples").get_by_text("a high repeating beep").click()
    # Prompt: Reword as it opens (the baseline box holds a prompt the model follows)
    expect(page.get_by_label("Baseline prompt")).to_have_value("a high repeating beep")
    page.get_by_role("button", name="Reword", exact=True).click()
    # (the toy reads only its own words, so the synonyms it keeps may be none: the summary says how many)
    expect(page.get_by_text("by the offline synonym rewriter")).to_be_visible(timeout=60_000)
    expect(page.locator("#variants-table")).to_contain_text("a high repeating beep")
    # Token: Train without clips names them
    page.get_by_role("tab", name="Token").click()
    page.locator("#train-btn").click()
    expect(page.locator("#train-message")).to_contain_text("upload at least one clip of the sound to learn")
    # Generate & compare: Generate as it opens
    page.get_by_role("tab", name="Generate & compare").click()
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.locator("#run-status")).to_contain_text("clips", timeout=120_000)
    expect(page.locator("#generate-message")).to_have_text("")
    # Style transfer: without a source it names the source next to the button; with one it runs
    page.get_by_text("Style transfer", exact=True).click()
    page.locator("#transfer-btn").click()
    expect(page.locator("#transfer-message")).to_contain_text("upload a source clip first")
    expect(page.locator("#transfer-steps input")).to_have_value("25")  # the toy's own steps, not 0
    page.locator("#transfer-source input[type=file]").set_input_files(beep)
    expect(page.locator("#transfer-source audio, #transfer-source .waveform-container").first).to_be_attached()
    page.locator("#transfer-btn").click()
    expect(page.locator("#transfer-status")).to_contain_text("kind transfer", timeout=120_000)
    expect(page.locator("#transfer-message")).to_have_text("")
    page.close()
