"""The compare tab's one-screen view (recap.ui.matrix): its handlers on a real tiny run, no browser."""

from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
import pytest

from recap.errors import BadInput
from recap.ui import matrix, runview
from recap.ui.runview import PAIR_HEADERS
from recap.variants import Variant

VARIANTS = [Variant("baseline", "rain on a tin roof", "baseline", 0),
            Variant("light-1", "rain on a metal roof", "llm", 1),
            Variant("strong-1", "a storm drums on sheet metal", "llm", 2)]


def make_view(tiny, tmp_path: Path, seeds: list[int]) -> dict:
    from recap.analysis.scoring import AnalysisConfig, analyze_run
    from recap.generation.grid import GenerationConfig, generate_grid, save_run

    result = generate_grid(tiny, VARIANTS, GenerationConfig(seconds=1.0, steps=2, seeds=seeds))
    manifest = save_run(result, tiny, tmp_path / "runs")
    return runview.run_view(manifest, analyze_run(manifest.path, tiny, AnalysisConfig(reconstruction=False)))


@pytest.fixture(scope="module")
def view(tiny, tmp_path_factory):
    """3 variants x 3 seeds."""
    return make_view(tiny, tmp_path_factory.mktemp("matrix"), [0, 1, 2])


@pytest.fixture(scope="module")
def two_seeds(tiny, tmp_path_factory):
    return make_view(tiny, tmp_path_factory.mktemp("matrix2"), [5, 7])


def test_the_heatmap_shows_the_pairs_tables_numbers(view):
    for name, column in matrix.SCORES:
        grid = matrix.score_grid(view, column)
        assert grid.rows == ["light-1", "strong-1"] and grid.seeds == [0, 1, 2]  # the baseline has no row
        table = {(r[0], r[1]): r[PAIR_HEADERS.index(column)] for r in view["pairs"]}
        assert {(label, seed): grid.values[i][j] for i, label in enumerate(grid.rows)
                for j, seed in enumerate(grid.seeds)} == table
        fig = matrix.heatmap_figure(view, column)
        assert [list(row) for row in fig.data[0].z] == grid.values
        assert list(fig.data[0].y) == grid.rows and list(fig.data[0].x) == ["seed 0", "seed 1", "seed 2"]
        title = fig.layout.title.text
        assert name in title and "clip latent" in title and "VAE latents" in title
    cos = matrix.score_grid(view, "cosine").values
    l2 = matrix.score_grid(view, "L2 (unit)").values
    # the two scores are one quantity: unit-L2 = sqrt(2 - 2 cos) (rounded to 4 places in the table)
    assert all(abs(b - math.sqrt(max(2 - 2 * a, 0))) < 2e-3 for ra, rb in zip(cos, l2) for a, b in zip(ra, rb))


def test_the_seed_band_gives_an_interval_from_three_seeds_and_only_the_range_below(view, two_seeds):
    rows = matrix.seed_band(view, "cosine")
    assert [r[:2] for r in rows] == [["light-1", 3], ["strong-1", 3]]
    label, n, mean, sd, lo, hi, interval = rows[0]
    values = matrix.score_grid(view, "cosine").values[0]
    assert mean == pytest.approx(sum(values) / 3, abs=1e-3)
    assert (lo, hi) == (round(min(values), 3), round(max(values), 3))
    assert sd is not None and "n too small" not in interval
    low, high = (float(x) for x in interval.split(" to "))
    assert low <= mean <= high and rows[0][2] == round(mean, 3)
    assert "n = 3 seed(s), a 95 % t-interval" in matrix.band_caption(view, "cosine")

    rows = matrix.seed_band(two_seeds, "L2 (unit)")
    assert all(r[1] == 2 and r[6].startswith("n too small (n = 2 < 3): range ") for r in rows)
    values = matrix.score_grid(two_seeds, "L2 (unit)").values[0]
    assert rows[0][6] == f"n too small (n = 2 < 3): range {min(values):.3f} to {max(values):.3f}"
    assert "no interval with 2 seed(s) (3 needed): the range" in matrix.band_caption(two_seeds, "L2 (unit)")


def test_the_cell_picker_returns_the_cell_and_the_baseline_of_its_seed(view):
    pick = matrix.pick_cell(view, "strong-1", 2)
    assert Path(pick.variant_audio).name == "strong-1__seed2.wav"
    assert Path(pick.reference_audio).name == "baseline__seed2.wav"
    assert Path(pick.variant_audio).is_file() and Path(pick.reference_audio).is_file()
    assert matrix.pick_cell(view, "strong-1", "2") == pick  # a dropdown may send the seed as text
    fig_v, fig_b, a, b, caption = matrix.show_cell(view, "strong-1", 2, 0, runview.N_BINS)
    assert a["value"] == pick.reference_audio and b["value"] == pick.variant_audio
    assert a["label"] == "A · baseline · seed 2" and b["label"] == "B · strong-1 · seed 2"
    assert fig_v.data[0].name == "strong-1__seed2" and fig_b.data[0].name == "baseline__seed2"
    # the whole band by default, in Hz (16 kHz: bin k is k * 16000 / 1022 Hz), seconds across
    assert max(fig_v.data[0].y) > 7900 and fig_v.layout.xaxis.title.text == "time (s)"
    assert fig_v.layout.coloraxis.cmax == fig_b.layout.coloraxis.cmax  # one dB scale for the pair
    assert "cos " in caption and "seed 2" in caption
    # a new bin range redraws the pair (bins 100-149 here); a bad one leaves it as drawn
    fig_v, _ = matrix.pick_figures(view, "strong-1", 2, 100, 150)
    assert round(min(fig_v.data[0].y) * 1022 / 16000) == 100 and round(max(fig_v.data[0].y) * 1022 / 16000) == 149
    assert matrix.pick_figures(view, "strong-1", 2, 150, 100) == (gr.skip(), gr.skip())
    variants, seeds = matrix.cell_choices(view)
    assert variants["choices"] == ["light-1", "strong-1"] and seeds["choices"] == [0, 1, 2]


def test_row_labels_carry_the_tier_and_the_prompt_escaped(view):
    hostile = dict(view, prompts={**view["prompts"], "light-1": '"><script>alert(1)</script>'})
    label = matrix.row_label(hostile, "light-1")
    assert "tier 1 · light rewording" in label and "<script>" not in label and "&lt;script&gt;" in label


@pytest.mark.parametrize(("variant", "seed", "message"), [
    ("light-1", 9, "seed '9' is not a seed of this run (its seeds: 0, 1, 2)"),
    ("light-1", float("nan"), "seed 'nan' is not a seed of this run"),
    ("light-1", "../../etc/passwd", "seed '../../etc/passwd' is not a seed of this run"),
    ("light-1", True, "seed 'True' is not a seed of this run"),
    ("nope", 0, "variant 'nope' is not a variant of this run (choose one of light-1, strong-1)"),
    ("/etc/passwd", 0, "variant '/etc/passwd' is not a variant of this run"),
    ("baseline", 0, "variant 'baseline' is not a variant of this run"),
    (float("nan"), 0, "variant 'nan' is not a variant of this run"),
])
def test_a_cell_outside_the_run_is_named_in_a_sentence(view, variant, seed, message):
    with pytest.raises(BadInput) as caught:
        matrix.pick_cell(view, variant, seed)
    assert str(caught.value).startswith(message)


def test_no_run_or_an_unknown_score_is_a_sentence(view):
    with pytest.raises(BadInput, match="generate or open a run first"):
        matrix.pick_cell(None, "light-1", 0)
    with pytest.raises(BadInput, match="score must be one of cosine, L2 \\(unit\\), got '/tmp/x'"):
        matrix.score_grid(view, "/tmp/x")
    with pytest.raises(BadInput, match="score must be one of"):
        matrix.seed_band(view, float("nan"))
    # before a run (or a new one clears the picker) the panel is simply empty
    assert matrix.show_scores(None, "cosine")[:2] == (None, [])
    assert matrix.show_cell(view, None, None, 0, 512)[:2] == (None, None)


def test_a_score_that_is_not_a_number_is_a_gap_not_an_error(view):
    broken = dict(view, pairs=[r[:3] + [math.nan] + r[4:] if r[0] == "light-1" and r[1] == 1 else r
                               for r in view["pairs"]])
    grid = matrix.score_grid(broken, "cosine")
    assert grid.values[0][1] is None
    assert matrix.seed_band(broken, "cosine")[0][1] == 2  # n counts the seeds with a number
    assert "–" in matrix.heatmap_figure(broken, "cosine").data[0].text[0]
