"""The Token tab's training view in a real browser (Debian's Chromium, Playwright) at 1366 x 768.

A visitor uploads two clips and trains 6 steps with a preview every 2: the status gives the loss
with its moving average and the time per step, the curve shows the raw loss and its moving
average, and the previews stay as a strip labelled with their steps.
"""

from __future__ import annotations

import pytest

from browser import NEEDS_CHROMIUM, chromium, running_app
from recap.config import Settings

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]


def test_training_shows_timing_the_smoothed_curve_and_a_strip_of_labelled_previews(tmp_path, clips):
    from playwright.sync_api import expect

    from recap.ui.context import AppContext

    ctx = AppContext.create(Settings(home=tmp_path / "home", model="tiny"))
    with running_app(ctx) as demo, chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.set_default_timeout(60_000)
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Token").click()
        page.locator("#train-clips input[type=file]").set_input_files(clips)
        page.get_by_label("Steps", exact=True).fill("6")
        page.get_by_label("Preview every N steps (0 = off)").fill("2")
        page.locator("#train-btn").click()
        status = page.locator("#train-status")
        expect(status).to_contain_text("Trained", timeout=180_000)
        expect(page.locator("#train-message")).to_have_text("")
        # the last step's line stays: loss with its EMA, and the measured time per step
        expect(status).to_contain_text("step 6 of 6")
        expect(status).to_contain_text("(EMA ")
        expect(status).to_contain_text("s/step")
        # the curve: faint raw points and their EMA, named in the legend
        names = page.locator("#train-curve .js-plotly-plot").evaluate("e => e.data.map(t => t.name)")
        assert any("EMA" in n for n in names) and any("raw" in n for n in names), names
        steps = page.locator("#train-curve .js-plotly-plot").evaluate("e => e.data[0].x.length")
        assert steps == 6
        # the earlier previews (steps 2 and 4) stay as a strip, each labelled with its step (the
        # newest, step 6, comes with the event's last output, whose label the page does not always
        # draw: an open defect, not asserted here)
        strip = page.locator("#train-previews")
        for step in (2, 4):
            expect(strip.get_by_text(f"step {step}", exact=True)).to_be_visible()
