"""The compare tab's screen-sized view of a run: compact players, a score heatmap, an A/B player.

A run of 4 variants x 3 seeds drawn as full cells (player, spectrogram, caption) is ten screens
tall; this view fits one. Rows are variants (the baseline first), columns seeds:

1. a matrix of compact players (the browser's own controls, no waveform), one per cell;
2. a heatmap of one score per cell (cosine or unit-L2 to the baseline of the same seed, the
   numbers of the pairs table) and the seed band of each variant (mean, sd, range across seeds;
   an interval only from 3 seeds, :data:`recap.metrics.uncertainty.MIN_N`);
3. one cell picked by two dropdowns, its spectrogram beside the baseline's of the same seed;
4. an A/B player: the baseline and the picked cell, switched at the same playback position.

Pure handlers first (a run view in, values out: see :func:`recap.ui.runview.run_view`), the
panel's layout and wiring after (:func:`build_matrix_panel`, placed by the compare tab). The
panel's only JavaScript and CSS are :data:`AB_TOGGLE_JS` and :data:`MATRIX_CSS`.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import gradio as gr

from recap.errors import BadInput
from recap.ui import runview
from recap.ui.common import md_text, user_errors
from recap.ui.runview import PAIR_HEADERS
from recap.variants import TIER_NAMES

# (radio label, column of the pairs table): the heatmap shows exactly the pairs table's numbers.
SCORES = (("cosine similarity", "cosine"), ("unit-L2 distance", "L2 (unit)"))
BAND_HEADERS = ("variant", "n seeds", "mean", "sd", "min", "max", "95% interval over seeds")
# What each latent of the pair scores is (recap.analysis.clip_scores.LATENT_NAMES), for the titles.
LATENT_MEANING = {"clip latent": "VAE latents of the saved audio, re-encoded",
                  "sampler latent": "final denoised latents, before decoding"}

# The A/B toggle. Both players are on the page (#recap-ab holds them; the CSS shows one): the
# toggle pauses the shown one, starts the other at the same time and in the same state, then
# swaps which is shown. Two players rather than one whose src is rewritten: Gradio sets each
# player's src from its value, and a src changed behind its back would go stale on the next pick.
AB_TOGGLE_JS = """
() => {
  const box = document.getElementById("recap-ab");
  const a = box && box.querySelector(".recap-ab-a audio");
  const b = box && box.querySelector(".recap-ab-b audio");
  if (!a || !b) return;
  const toB = box.dataset.ab !== "b";
  const from = toB ? a : b, to = toB ? b : a;
  const playing = !from.paused && !from.ended;
  const t = from.currentTime;
  from.pause();
  const resume = () => { to.currentTime = t; if (playing) to.play().catch(() => {}); };
  // Before its metadata a media element keeps the time as its start position; set it again once known.
  if (to.readyState < 1) to.addEventListener("loadedmetadata", resume, { once: true });
  resume();
  box.dataset.ab = toB ? "b" : "a";
}
"""

MATRIX_CSS = """
#recap-matrix .recap-mini { padding: 0 !important; min-height: 0 !important; border: none !important; }
#recap-matrix .recap-mini audio { width: 100%; height: 40px; }
#recap-matrix .recap-mini-row { gap: 6px; margin: 0 !important; }
#recap-matrix .recap-mini-label { font-size: 0.9em; line-height: 1.2; overflow: hidden; }
#recap-ab:not([data-ab="b"]) .recap-ab-b, #recap-ab[data-ab="b"] .recap-ab-a { display: none !important; }
"""


# ----------------------------------------------------------------------------- pure helpers
def _run(view: Any) -> dict[str, Any]:
    if not view:
        raise BadInput("generate or open a run first")
    return view


def reference(view: dict[str, Any]) -> str:
    """The row every cell is compared with: the baseline, or a run's first row when it has none
    (a transfer sweep's strength 0), as :func:`recap.ui.compare.open_and_analyze` measures it."""
    if view.get("baseline") in view["labels"]:
        return view["baseline"]
    return "baseline" if "baseline" in view["labels"] else view["labels"][0]


def compared(view: dict[str, Any]) -> list[str]:
    """The rows that have a score: every variant but the reference, in the run's order."""
    ref = reference(view)
    return [label for label in view["labels"] if label != ref]


def row_label(view: dict[str, Any], label: str) -> str:
    """A matrix row's short label as HTML: the variant and its tier, the prompt in the tooltip."""
    tier = (view.get("tiers") or {}).get(label)
    tier_text = f"tier {tier} · {TIER_NAMES.get(tier, 'other')}" if isinstance(tier, int) else ""
    prompt = html.escape(str(view["prompts"].get(label, "")), quote=True)
    return (f'<div class="recap-mini-label" title="{prompt}"><b>{html.escape(label)}</b>'
            f'<br><small>{html.escape(tier_text)}</small></div>')


def score_column(score: Any) -> str:
    """The pairs-table column of a score choice; :class:`BadInput` names anything else."""
    columns = [column for _, column in SCORES]
    if not isinstance(score, str) or score not in columns:
        raise BadInput(f"score must be one of {', '.join(columns)}, got {str(score)[:30]!r}")
    return score


def score_name(score: str) -> str:
    return next(name for name, column in SCORES if column == score)


def pick_seed(view: dict[str, Any], seed: Any) -> int:
    """A seed of the run from a dropdown's value (a whole number, or its digits as text).

    Raises:
        BadInput: anything that is not one of the run's seeds (NaN, a path, another seed).
    """
    seeds = [int(s) for s in view["seeds"]]
    value = None
    if isinstance(seed, int) and not isinstance(seed, bool):
        value = seed
    elif isinstance(seed, float) and seed.is_integer():
        value = int(seed)
    elif isinstance(seed, str) and seed.strip().isdigit() and len(seed) < 12:
        value = int(seed.strip())
    if value not in seeds:
        raise BadInput(f"seed {str(seed)[:30]!r} is not a seed of this run (its seeds: "
                       f"{', '.join(map(str, seeds))})")
    return value


def pick_variant(view: dict[str, Any], variant: Any) -> str:
    """A variant of the run that has a score (not the reference itself).

    Raises:
        BadInput: not one of the run's variants, or the reference.
    """
    rows = compared(view)
    if not rows:
        raise BadInput("this run holds only the baseline: there is no variant to compare with it")
    if not isinstance(variant, str) or variant not in rows:
        raise BadInput(f"variant {str(variant)[:40]!r} is not a variant of this run (choose one of "
                       f"{', '.join(rows[:8])}{', …' if len(rows) > 8 else ''})")
    return variant


@dataclass(frozen=True)
class ScoreGrid:
    """One score per cell: ``values[i][j]`` is row ``rows[i]`` at seed ``seeds[j]`` (None: no number)."""

    score: str
    rows: list[str]
    seeds: list[int]
    values: list[list[float | None]]


def score_grid(view: Any, score: Any) -> ScoreGrid:
    """The pairs table's ``score`` column laid out variant x seed (the reference has no row)."""
    view, score = _run(view), score_column(score)
    col = PAIR_HEADERS.index(score)
    cells = {(r[0], int(r[1])): r[col] for r in view["pairs"]}
    seeds = [int(s) for s in view["seeds"]]
    values = [[_number(cells.get((label, seed))) for seed in seeds] for label in compared(view)]
    return ScoreGrid(score, compared(view), seeds, values)


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def seed_band(view: Any, score: Any) -> list[list[Any]]:
    """Per variant: how its score spreads across seeds (the independent unit).

    Returns:
        Rows of :data:`BAND_HEADERS` (3 decimals): n seeds with a number, mean, sd (from 2
        seeds), min, max, and a 95 % Student-t interval from 3 seeds; below 3 seeds the interval
        column says "n too small" and the range is the only spread shown.
    """
    from recap.metrics.uncertainty import MIN_N, t_interval

    grid = score_grid(view, score)
    out = []
    for label, values in zip(grid.rows, grid.values):
        x = [v for v in values if v is not None]
        if not x:
            out.append([label, 0, None, None, None, None, "no scores"])
            continue
        mean = sum(x) / len(x)
        sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (len(x) - 1)) if len(x) > 1 else None
        ci = t_interval(x, unit="seed")
        # 3 decimals: a band is read at a glance; the cells themselves are in the pairs table
        interval = (f"{ci.low:.3f} to {ci.high:.3f}" if ci.low is not None
                    else f"n too small (n = {len(x)} < {MIN_N}): range {min(x):.3f} to {max(x):.3f}")
        out.append([label, len(x), round(mean, 3), None if sd is None else round(sd, 3), round(min(x), 3),
                    round(max(x), 3), interval])
    return out


def latent_title(view: dict[str, Any]) -> str:
    latent = view.get("latent") or "clip latent"
    return f"{latent}: {LATENT_MEANING.get(latent, 'VAE latents')}"


def heatmap_figure(view: Any, score: Any) -> Any:
    """A variant x seed heatmap of ``score`` vs the baseline of the same seed, values written in."""
    import plotly.graph_objects as go

    grid = score_grid(view, score)
    if not grid.rows:
        raise BadInput("this run holds only the baseline: there is no score to show")
    z = [[math.nan if v is None else v for v in row] for row in grid.values]
    text = [["–" if v is None else f"{v:.4f}" for v in row] for row in grid.values]
    # Near 1 / near 0 means "like the baseline" for both scores: the scale is reversed for L2 so
    # that the same colour reads the same way whichever score is chosen.
    fig = go.Figure(go.Heatmap(z=z, x=[f"seed {s}" for s in grid.seeds], y=grid.rows, text=text,
                               texttemplate="%{text}", colorscale="Viridis", reversescale=grid.score != "cosine",
                               hovertemplate="%{y} · %{x}: %{text}<extra></extra>",
                               colorbar={"thickness": 10}))
    fig.update_layout(title={"text": f"{score_name(grid.score)} to the baseline, same seed<br>"
                                     f"<sup>{latent_title(view)}</sup>", "font": {"size": 13}},
                      height=150 + 34 * len(grid.rows), margin={"l": 10, "r": 10, "t": 60, "b": 30},
                      yaxis={"autorange": "reversed", "type": "category"}, xaxis={"type": "category"})
    return fig


def band_caption(view: Any, score: Any) -> str:
    grid = score_grid(view, score)
    n = len(grid.seeds)
    enough = "a 95 % t-interval over seeds" if n >= 3 else f"no interval with {n} seed(s) (3 needed): the range"
    return (f"Seed band of the {score_name(grid.score)} ({latent_title(view)}): each variant across "
            f"n = {n} seed(s), {enough}.")


@dataclass(frozen=True)
class CellPick:
    """One cell and the baseline of its seed: what the spectrograms and the A/B player show."""

    variant: str
    seed: int
    reference: str
    variant_audio: str
    reference_audio: str


def pick_cell(view: Any, variant: Any, seed: Any) -> CellPick:
    """The files of cell (``variant``, ``seed``) and of the baseline of the same seed.

    Raises:
        BadInput: no run, or a variant or seed that is not the run's.
    """
    view = _run(view)
    label, seed_ = pick_variant(view, variant), pick_seed(view, seed)
    ref = reference(view)
    files = [view["audio"].get(f"{key}|{seed_}") for key in (label, ref)]
    if not all(files):
        raise BadInput(f"run {view['run_id']} has no clip of {label} or {ref} at seed {seed_}")
    return CellPick(label, seed_, ref, files[0], files[1])


def cell_figures(view: Any, pick: CellPick, lo: Any = 0, hi: Any = runview.N_BINS) -> tuple[Any, Any]:
    """The spectrograms of the picked cell and of its baseline, on one dB scale (Hz up, seconds across)."""
    keys = [(pick.variant, pick.seed), (pick.reference, pick.seed)]
    specs = runview.spectrograms(view, lo, hi, only=keys)
    figures = runview.cell_figures(specs)
    for fig, (label, seed) in zip(figures, keys):
        fig.update_layout(title={"text": f"{label} · seed {seed}", "font": {"size": 13}}, height=240,
                          margin={"l": 50, "r": 6, "t": 30, "b": 36})
        fig.update_xaxes(title_text="time (s)")
        fig.update_yaxes(title_text="Hz")
    return figures[0], figures[1]


def cell_choices(view: Any) -> tuple[Any, Any]:
    """The picker's dropdowns for a run: its variants (the reference excluded) and its seeds."""
    if not view or not compared(view):
        return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
    seeds = [int(s) for s in view["seeds"]]
    return (gr.update(choices=compared(view), value=compared(view)[0]),
            gr.update(choices=seeds, value=seeds[0]))


def show_scores(view: Any, score: Any) -> tuple[Any, list[list[Any]], str]:
    """The heatmap, the seed band and its caption (nothing while there is no run to score)."""
    if not view or not compared(view):
        return None, [], "*The heatmap and the seed band need a run with a baseline and another variant.*"
    return heatmap_figure(view, score), seed_band(view, score), band_caption(view, score)


def pick_figures(view: Any, variant: Any, seed: Any, lo: Any, hi: Any) -> tuple[Any, Any]:
    """The picked pair's spectrograms for a new bin range (the players are left as they are)."""
    if not view or variant is None or seed is None:
        return gr.skip(), gr.skip()
    try:
        runview.check_bins(lo, hi)
    except BadInput:  # the tab's own figures event names the bad range; the pair stays as drawn
        return gr.skip(), gr.skip()
    return cell_figures(view, pick_cell(view, variant, seed), lo, hi)


def show_cell(view: Any, variant: Any, seed: Any, lo: Any, hi: Any) -> tuple[Any, ...]:
    """The picked cell: its spectrogram and the baseline's, and the A/B player's two clips.

    Returns:
        (variant figure, baseline figure, update of player A, update of player B, caption).
    """
    if not view or variant is None or seed is None:  # nothing picked yet (a new run clears the picker)
        return None, None, gr.update(value=None), gr.update(value=None), ""
    pick = pick_cell(view, variant, seed)
    try:
        fig_v, fig_b = cell_figures(view, pick, lo, hi)
    except BadInput:  # the range sliders are mid-edit: their own event names the bad range
        fig_v, fig_b = cell_figures(view, pick)
    s = view["scores"].get(f"{pick.variant}|{pick.seed}") or {}
    scores = (f"cos {s['cosine']:.4g} · unit-L2 {s['l2']:.4g}" if _number(s.get("cosine")) is not None
              and _number(s.get("l2")) is not None else "no score")
    caption = (f"**{md_text(pick.variant)}** vs **{md_text(pick.reference)}**, seed {pick.seed}: {scores}. "
               "*A/B* switches between them at the same playback position.")
    return (fig_v, fig_b, gr.update(value=pick.reference_audio, label=f"A · {pick.reference} · seed {pick.seed}"),
            gr.update(value=pick.variant_audio, label=f"B · {pick.variant} · seed {pick.seed}"), caption)


# ----------------------------------------------------------------------------- layout and wiring
def _compact_player(path: str | None, label: str) -> gr.Audio:
    # The browser's own controls: no waveform to draw, about 40 px tall.
    return gr.Audio(path, label=label, show_label=False, interactive=False, buttons=[], container=False,
                    waveform_options=gr.WaveformOptions(show_recording_waveform=False), elem_classes=["recap-mini"])


def _ab_player(label: str, cls: str) -> gr.Audio:
    return gr.Audio(None, label=label, interactive=False, buttons=["download"],
                    waveform_options=gr.WaveformOptions(show_recording_waveform=False), elem_classes=[cls])


def matrix_players(view: dict[str, Any] | None) -> None:
    """The matrix of compact players, laid out inside a ``gr.render``: a row per variant."""
    if not view:
        return
    with gr.Column(elem_id="recap-matrix"):
        with gr.Row(elem_classes=["recap-mini-row"]):
            gr.HTML("<b>variant</b>", min_width=150, scale=1)
            for seed in view["seeds"]:
                gr.HTML(f"<b>seed {int(seed)}</b>", min_width=200, scale=2)
        for label in view["labels"]:
            with gr.Row(elem_classes=["recap-mini-row"], equal_height=True):
                gr.HTML(row_label(view, label), min_width=150, scale=1)
                for seed in view["seeds"]:
                    with gr.Column(min_width=200, scale=2):
                        _compact_player(view["audio"].get(f"{label}|{seed}"), f"{label} · seed {seed}")


def build_matrix_panel(run: gr.State, lo: gr.Slider, hi: gr.Slider) -> None:
    """Adds the matrix, the heatmap with the seed band, the cell picker and the A/B player to the
    open Blocks context; everything follows the run in ``run`` and the bin range ``lo``, ``hi``."""

    @gr.render(inputs=[run], triggers=[run.change])
    def show_matrix(view):
        matrix_players(view)

    with gr.Row():
        with gr.Column(scale=3):
            score = gr.Radio(list(SCORES), value="cosine", label="Score vs the baseline of the same seed")
            heatmap = gr.Plot(show_label=False, elem_id="recap-heatmap")
        with gr.Column(scale=2):
            band_md = gr.Markdown(elem_id="recap-band-caption")
            band = gr.Dataframe(headers=list(BAND_HEADERS), type="array", interactive=False, wrap=True,
                                show_label=False, elem_id="recap-band",
                                column_widths=["20%", "10%", "11%", "11%", "11%", "11%", "26%"])
    # Dropdowns, not clicks on the heatmap: Gradio does not pass plotly click events to Python, and
    # a button per cell would be re-made on every run; two dropdowns are checked inputs that work
    # from the API too, and always name a cell of the run on screen.
    with gr.Row():
        variant = gr.Dropdown([], label="Variant", elem_id="recap-pick-variant", scale=2)
        seed = gr.Dropdown([], label="Seed", elem_id="recap-pick-seed", scale=1)
        toggle = gr.Button("A/B: switch baseline ↔ variant", elem_id="recap-ab-toggle", scale=1)
    with gr.Column(elem_id="recap-ab"):
        player_a = _ab_player("A · baseline", "recap-ab-a")
        player_b = _ab_player("B · variant", "recap-ab-b")
    pick_md = gr.Markdown(elem_id="recap-pick-caption")
    with gr.Row():
        spec_variant = gr.Plot(show_label=False, elem_id="recap-pick-spec")
        spec_reference = gr.Plot(show_label=False, elem_id="recap-pick-baseline")

    cell_outputs = [spec_variant, spec_reference, player_a, player_b, pick_md]
    run.change(cell_choices, run, [variant, seed], api_visibility="private").then(
        user_errors(show_cell), [run, variant, seed, lo, hi], cell_outputs, api_visibility="private")
    gr.on([run.change, score.change], user_errors(show_scores), [run, score], [heatmap, band, band_md],
          api_name="score_heatmap")
    gr.on([variant.input, seed.input], user_errors(show_cell), [run, variant, seed, lo, hi], cell_outputs,
          api_name="pick_cell")
    gr.on([lo.change, hi.change], user_errors(pick_figures), [run, variant, seed, lo, hi],
          [spec_variant, spec_reference], api_visibility="private", show_progress="hidden")
    toggle.click(None, None, None, js=AB_TOGGLE_JS)
