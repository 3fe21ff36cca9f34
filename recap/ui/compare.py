"""The "Generate & compare" tab: the chosen prompts x seeds from identical noise, side by side.

Rows are variants, columns seeds. The run is shown on one screen first (:mod:`recap.ui.matrix`:
compact players, a score heatmap with the seed band, a picked cell beside its baseline, an A/B
player); below, every cell full size: its player, its clipped spectrogram (the bin range changes
live, from the saved audio, without generating again) and its cosine / L2 to the baseline of the
same seed. The tables are those of :func:`recap.analysis.scoring.analyze_run`.

Every value of a request is checked before anything loads or runs, with a sentence that names
it: the Generate event takes the page's raw values (``preprocess=False``), so a value sent past
the form (a step count of a million, NaN guidance, a model that is not in the picker) meets the
core's bounds (:mod:`recap.generation.grid`), not a message that does not say which field it was.
On a public server the run browser shows only the runs made in this browser session (their ids
are kept in a ``gr.State``) and opens no other.

Pure handlers first (values in, values out; the app's context and its GPU-gated functions come
first and are bound at wiring time), Blocks wiring after. The style-transfer panel below the tab
is :mod:`recap.ui.transfer`, wired by the app.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr

from recap.errors import BadInput
from recap.limits import LIMITS
from recap.ui import runview
from recap.ui.common import (
    bind,
    code_text,
    follow_fallback,
    form_check,
    halt_if_message,
    md_text,
    model_name,
    seeds_of,
    table_rows,
    user_errors,
    warn_if_stopped,
)
from recap.backends.registry import get_spec
from recap.rewording.base import mark_edited
from recap.ui.context import AppContext
from recap.ui.zerogpu import grid_seconds
from recap.ui.jobs import SessionJobs, arm_job, stop_job
from recap.ui.matrix import build_matrix_panel
from recap.ui.runview import PAIR_HEADERS, SUMMARY_HEADERS
from recap.ui.session_tokens import tokens_for_prompts

# Cells of the prompt table: label, method, tier, prompt, text cosine, word edits, flags.
TABLE_COLUMNS = ("label", "method", "tier", "prompt", "text cosine", "word edits", "flags")
MAX_CELL_CHARS = 1000  # recap.generation.grid.MAX_PROMPT_CHARS (not imported: it loads the model libraries)
RUNS_SHOWN = 200  # a local run browser lists the newest this many
TABLE_CHOICES = (("vs baseline (same seed)", "vs_baseline"), ("seed variance", "seed_variance"),
                 ("text cosine", "text"), ("reconstruction", "reconstruction"), ("CLAP", "clap"), ("music", "music"))


# ----------------------------------------------------------------------------- pure helpers
def chosen_variants(rows: Any, selected: list[str] | None, baseline_text: str = "") -> list[Any]:
    """The table's rows to generate, as ``Variant``; the baseline is always one of them.

    Raises:
        ValueError: an invalid table (see ``check_rows``), or nothing to compare with.
    """
    from recap.variants import Variant
    from recap.ui.prompt import check_rows, set_baseline

    rows = check_rows(set_baseline(rows, baseline_text) if not table_rows(rows) else rows)
    if not rows:
        raise ValueError("type a baseline prompt first (Prompt tab)")
    if selected is not None and (not isinstance(selected, list) or len(selected) > LIMITS.variants
                                 or not all(isinstance(s, str) for s in selected)):
        raise BadInput(f"the ticked variants must be a list of at most {LIMITS.variants} labels")
    selected = [s for s in (selected or []) if s]
    if selected and "baseline" not in selected:
        raise ValueError("keep the baseline ticked: every clip is compared with the baseline of its seed")
    unknown = sorted(set(selected) - {r[0] for r in rows})
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise BadInput(f"ticked variants {shown} are not in the table")
    return [Variant(r[0], r[3], r[1], int(r[2])) for r in rows if not selected or r[0] in selected]


def raw_table(payload: Any) -> list[list[Any]]:
    """The prompt table's rows from the page's raw value (a ``{"headers", "data"}`` dict or a list
    of rows), each cell checked for type and length before anything reads it.

    Raises:
        BadInput: not a table, more than ``LIMITS.variants`` rows, or a cell too long.
    """
    if payload is None:
        return []
    data = payload.get("data") if isinstance(payload, dict) else payload
    if not isinstance(data, list) or not all(isinstance(r, list) and len(r) <= 2 * len(TABLE_COLUMNS) for r in data):
        raise BadInput("the variant table must be a list of rows (label, method, tier, prompt, ...)")
    rows = [r for r in data if any(c not in (None, "") for c in r)]  # the page sends blank rows too
    if len(rows) > LIMITS.variants:
        raise BadInput(f"the variant table has {len(rows):,} rows; one grid takes at most {LIMITS.variants}")
    for i, row in enumerate(rows, 1):
        for j, cell in enumerate(row):
            column = TABLE_COLUMNS[j] if j < len(TABLE_COLUMNS) else f"column {j + 1}"
            if not isinstance(cell, (str, int, float, bool, type(None))):
                raise BadInput(f"row {i}, {column}: {type(cell).__name__} is not a table value")
            if isinstance(cell, str) and len(cell) > MAX_CELL_CHARS:
                raise BadInput(f"row {i}, {column}: the text is {len(cell):,} characters; the limit is {MAX_CELL_CHARS}")
    return rows


@dataclass
class GridRequest:
    """One checked Generate request: the model to load, the rows to generate, the settings."""

    model: str
    variants: list[Any]
    config: Any
    reconstruction: bool
    music: bool


def grid_request(model: Any, rows: Any, selected: Any, baseline_text: Any, seeds_text: Any, seconds: Any,
                 steps: Any, guidance: Any, negative: Any, reconstruction: Any, music: Any,
                 choices: list[str]) -> GridRequest:
    """Checks every field of the Generate form (raw page values) before any model loads.

    The model-independent bounds and the work bound (:func:`recap.generation.grid.check_work`) are
    those the core applies again once the model is loaded; the clip length is checked against
    the model's maximum as the registry knows it.

    Raises:
        BadInput: the first bad field, named.
    """
    from recap.generation.grid import GenerationConfig, check_prompt, check_work

    name = model_name(model, choices)
    info = get_spec(name)
    check_prompt("baseline prompt", baseline_text, allow_empty=True)
    negative = check_prompt("negative prompt", negative, allow_empty=True)
    for label, flag in (("reconstruction check", reconstruction), ("music metrics", music)):
        if flag is not None and not isinstance(flag, bool):
            raise BadInput(f"{label} must be true or false, got {str(flag)[:20]!r}")
    config = GenerationConfig(seconds=seconds, steps=steps, guidance=guidance,
                              negative_prompt=(negative or "").strip() or None, seeds=seeds_of(seeds_text))
    config = config.check(info.max_seconds, name)
    variants = chosen_variants(raw_table(rows), selected, baseline_text or "")
    clips = len(variants) * len(config.seeds)
    check_work(clips, clips * (config.steps or info.defaults.steps))
    return GridRequest(name, variants, config, bool(reconstruction), bool(music))


def generate_and_analyze(backend: Any, variants: list[Any], config: Any, tokens: dict[str, Any],
                         token_info: list[dict[str, Any]], runs_dir: Path, analysis: Any, extra: dict[str, Any],
                         progress: Any = None, stop: Any = None) -> tuple[Any, Any]:
    """Generates the grid, saves the run folder and measures it (the GPU-bound part)."""
    from recap.analysis.scoring import analyze_run
    from recap.generation.grid import generate_grid, save_run

    result = generate_grid(backend, variants, config, tokens=tokens or None, progress=progress, stop=stop)
    manifest = save_run(result, backend, runs_dir, token_info=token_info, extra=extra)
    return manifest, analyze_run(manifest.path, backend, analysis)


def open_and_analyze(backend: Any, run_dir: Path, analysis: Any) -> tuple[Any, Any]:
    """Reads a saved run and measures it (cached), against its first variant when it has no baseline."""
    import dataclasses

    from recap.analysis.scoring import analyze_run
    from recap.generation.runs import load_run

    manifest = load_run(run_dir)
    labels = [v["label"] for v in manifest.variants]
    if analysis.baseline not in labels and labels:  # e.g. a transfer sweep: strength-0.00 is the reference
        analysis = dataclasses.replace(analysis, baseline=labels[0])
    return manifest, analyze_run(run_dir, backend, analysis)


def status_text(view: dict[str, Any], note: str | None = None) -> str:
    model = view["model"]
    n = len(view["labels"]) * len(view["seeds"])
    t = view.get("timings") or {}
    timed = isinstance(t.get("generate_s"), (int, float)) and isinstance(t.get("denoising_calls"), int)
    lines = [f"Run `{view['run_id']}`: {len(view['labels'])} variant(s) × {len(view['seeds'])} seed(s) = {n} clips"
             + (f" in {t['denoising_calls']} denoising call(s), {t['generate_s']:.1f} s" if timed else "")
             + f" · model {code_text(model.get('name'))} on {code_text(model.get('device'))}."]
    if model.get("random_weights"):
        lines.append("⚠️ **Random weights: this audio is noise and the numbers say nothing about wording.**")
    if note:
        lines.append(f"⚠️ {note}")
    if view.get("unreadable"):
        lines.append("⚠️ The model reads these words as unknown (<unk>), so they change nothing in its clips: "
                     + "; ".join(f"{code_text(label)}: {md_text(' '.join(words))}" for label, words in view["unreadable"].items()))
    lines += [md_text(x) for x in view.get("notes", []) if "random weights" not in x]
    return "\n\n".join(lines)


# ----------------------------------------------------------------------------- handlers
def variant_choices(rows: Any, selected: list[str] | None, known: list[str] | None) -> tuple[Any, list[str]]:
    """The "Variants to generate" boxes for the prompt table: a label seen for the first time is
    ticked, one the visitor unticked stays unticked.

    Returns:
        (update of the boxes, the labels now known).
    """
    # At most a grid's worth of rows: a larger table is refused at Generate, not listed here.
    labels = [str(r[0])[:80] for r in table_rows(rows)[:LIMITS.variants] if r and str(r[0]).strip()]
    value = [x for x in labels if x in (selected or []) or x not in (known or [])]
    return gr.update(choices=labels, value=value), labels


GUIDANCE_LABEL = "Guidance (<= 1: off)"
NEGATIVE_LABEL = "Negative prompt (optional)"


def model_defaults(name: str) -> tuple[Any, Any, Any, Any]:
    """Updates of the seconds, steps, guidance and negative-prompt fields for model ``name``.

    A guidance-distilled model (``BackendSpec.fixed_guidance``) has no classifier-free guidance to
    vary and so no use for a negative prompt: both fields are locked, saying why, rather than left
    to be refused at Generate (or, worse, silently ignored).
    """
    spec = get_spec(name)
    seconds = gr.update(maximum=spec.max_seconds, value=min(spec.defaults.seconds, spec.max_seconds))
    steps = gr.update(value=spec.defaults.steps)
    if spec.fixed_guidance is None:
        return (seconds, steps, gr.update(value=spec.defaults.guidance, interactive=True, label=GUIDANCE_LABEL, info=None),
                gr.update(interactive=True, label=NEGATIVE_LABEL, placeholder=None))
    why = f"{spec.name} is guidance-distilled: guidance {spec.fixed_guidance:g} is built into its weights"
    return (seconds, steps,
            gr.update(value=spec.fixed_guidance, interactive=False, label=f"Guidance (fixed at {spec.fixed_guidance:g})",
                      info=f"{why}, so there is no classifier-free guidance to vary."),
            gr.update(value="", interactive=False, label="Negative prompt (not supported by this model)",
                      placeholder=f"{why}; a negative prompt needs classifier-free guidance."))


def run_list(ctx: AppContext, mine: list[str] | None) -> Any:
    """The run browser's choices: on a public server only the runs this session made."""
    return gr.update(choices=runview.visible_runs(ctx.settings.runs_dir, mine, ctx.settings.public, RUNS_SHOWN))


def generate_run(ctx: AppContext, gpu_generate: Callable[..., tuple[Any, Any]], choices: list[str],
                 model_name: Any, rows: Any, selected: Any, baseline_text: Any, seeds_text: Any, seconds_: Any,
                 steps_: Any, guidance_: Any, negative_: Any, recon: Any, music_: Any, jobs: SessionJobs,
                 session: dict | None, record: dict | None, mine: list[str] | None,
                 progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
    """Generate: checks the raw form, generates and measures the grid, and shows it.

    Args:
        gpu_generate: :func:`generate_and_analyze` behind the app's GPU gate.
        choices: The model picker's values.
        model_name ... music_: The form's raw values (the names are the ``/generate`` API's).

    Returns:
        (run view, status, pair rows, summary rows, the session's run ids); skips all five when
        the visitor stopped the job.
    """
    from recap.analysis.scoring import AnalysisConfig

    # 1. Every field, before anything loads (the raw page values: see the module docstring)
    req = grid_request(model_name, rows, selected, baseline_text, seeds_text, seconds_, steps_, guidance_, negative_,
                       recon, music_, choices)
    # 2. The model, and the session's tokens the prompts use (refused when made for another model)
    progress(0, desc="loading the model…")
    backend, note = ctx.backend(req.model)
    tokens, token_info = tokens_for_prompts([v.prompt for v in req.variants], backend, session)
    extra = {"source": "app"}
    if record and record.get("baseline") == next(v.prompt for v in req.variants if v.label == "baseline"):
        extra["recaption"] = record
        # a rewording edited by hand is no longer what the record says made it
        req = replace(req, variants=mark_edited(req.variants, record))
    # 3. Generate and measure
    stop = jobs.begin()
    try:
        manifest, analysis = gpu_generate(
            backend, req.variants, req.config, tokens, token_info, ctx.settings.runs_dir,
            AnalysisConfig(reconstruction=req.reconstruction, music=req.music, n_boot=1000), extra,
            progress=lambda done, total, msg: progress(done / max(total, 1), desc=msg), stop=stop)
    except Exception as exc:
        if warn_if_stopped(exc):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        raise
    view = runview.run_view(manifest, analysis)
    return (view, status_text(view, note), view["pairs"], runview.summary_rows(view, "vs_baseline"),
            runview.remember_run(mine, manifest.run_id))


def open_saved_run(ctx: AppContext, gpu_open: Callable[..., tuple[Any, Any]], run_id: Any, recon: Any,
                   mine: list[str] | None) -> tuple[Any, ...]:
    """Open: a saved run this session may see, measured (cached) on its own model.

    Returns:
        (run view, status, pair rows, summary rows).
    """
    from recap.analysis.scoring import AnalysisConfig
    from recap.generation.runs import load_run

    if not run_id:
        raise ValueError("choose a saved run first")
    run_dir = runview.session_run_dir(ctx.settings.runs_dir, run_id, mine, ctx.settings.public)
    backend, note = ctx.backend(get_spec(load_run(run_dir).model["name"]).name)
    manifest, analysis = gpu_open(backend, run_dir, AnalysisConfig(reconstruction=bool(recon), n_boot=1000))
    view = runview.run_view(manifest, analysis)
    return view, status_text(view, note), view["pairs"], runview.summary_rows(view, "vs_baseline")


def download_run(view: dict | None, lo_v: Any, hi_v: Any, jobs: SessionJobs) -> tuple[str, Any]:
    """The run as a zip with its figures for the bin range [lo_v, hi_v), and the file box shown."""
    runview.check_bins(lo_v, hi_v)
    if not view:
        raise ValueError("generate or open a run first")
    # One archive per session at a time: clicking again replaces it instead of adding a copy.
    folder = jobs.scratch / "run-archive"
    shutil.rmtree(folder, ignore_errors=True)
    path = runview.zip_run(view, folder, lo_v, hi_v)
    return str(path), gr.update(visible=True)


def hide_download() -> tuple[None, Any]:
    """No archive on offer: the run on screen changed, and the last zip holds another run."""
    return None, gr.update(visible=False)


def check_generate(choices: list[str], model: Any, rows: Any, selected: Any, baseline_text: Any, seeds_text: Any,
                   seconds: Any, steps: Any, guidance: Any, negative: Any, reconstruction: Any, music: Any) -> None:
    """The Generate form's checks (:func:`grid_request`) on the page's values, before any job is
    queued: the sentence then shows next to the button, not over the results."""
    grid_request(model, rows, selected, baseline_text, seeds_text, seconds, steps, guidance, negative,
                 reconstruction, music, choices)


def range_preset(view: dict | None, model: Any, preset: Any, lo_hz: Any, hi_hz: Any) -> tuple[Any, Any, Any]:
    """The bin sliders for a range preset (whole range, the thesis's bins, a band in Hz at the run's
    or the chosen model's sample rate), and whether the Hz boxes are shown."""
    lo, hi = runview.range_bins(preset, lo_hz, hi_hz, runview.view_sample_rate(view, model))
    return gr.update(value=lo), gr.update(value=hi), gr.update(visible=preset == "hz")


def range_caption(view: dict | None, model: Any, lo: Any, hi: Any) -> str:
    """The bin ↔ Hz caption under the sliders, before and after a run."""
    try:
        return runview.bins_caption(view, lo, hi, model)
    except BadInput:
        return gr.skip()  # the figures' event names the bad range


def bin_figures(view: dict | None, lo: Any, hi: Any) -> tuple[Any, Any, str, Any]:
    """The whole-grid figures and caption for a bin range, and the range (which redraws the cells)."""
    lo_i, hi_i = runview.check_bins(lo, hi)
    if not view:  # nothing generated yet: the sliders just set the range to use
        return None, None, gr.skip(), gr.skip()
    specs = runview.spectrograms(view, lo_i, hi_i)
    grid, diff = runview.grid_figures(view, specs)
    return grid, diff, runview.bins_caption(view, lo_i, hi_i), [lo_i, hi_i]


def grid_cells(view: dict | None, lo: Any, hi: Any, run: gr.State, drawn_bins: gr.State) -> None:
    """Lays out the grid inside a ``gr.render``: a row per variant, a column per seed, each cell its
    player, spectrogram and scores. The cells redraw when ``drawn_bins`` changes.

    The cells listen to ``drawn_bins``, not to the sliders: a listener made inside a render on
    the sliders would replace the one the tab made on them.
    """
    if not view:
        gr.Markdown("*Generate a grid to see it here: rows are variants, columns seeds.*")
        return
    try:
        specs = runview.spectrograms(view, lo, hi)
    except ValueError:
        specs = runview.spectrograms(view, 0, runview.N_BINS)
    figures = dict(zip(specs, runview.cell_figures(specs)))
    plots = []
    with gr.Row():
        gr.Markdown("**variant**", min_width=160)
        for seed in view["seeds"]:
            gr.Markdown(f"**seed {seed}**", min_width=220)
    for label in view["labels"]:
        with gr.Row(equal_height=False, elem_classes=["recap-grid-row"]):
            with gr.Column(min_width=160, scale=1):
                gr.Markdown(f"**{md_text(label)}**\n\n{md_text(view['prompts'][label])}")
            for seed in view["seeds"]:
                with gr.Column(min_width=220, scale=2):
                    gr.Audio(view["audio"].get(f"{label}|{seed}"), label=f"{label} · seed {seed}",
                             interactive=False, buttons=["download"], elem_classes=["recap-clip"])
                    plots.append(gr.Plot(figures.get((label, int(seed))), show_label=False,
                                         elem_classes=["recap-cell-spec"]))
                    gr.Markdown(runview.cell_caption(view, label, seed))

    def redraw(view_, bins):
        return runview.cell_figures(runview.spectrograms(view_, *bins)) if view_ and bins else [gr.skip()] * len(plots)

    drawn_bins.change(user_errors(redraw), [run, drawn_bins], plots, api_visibility="private")


# ----------------------------------------------------------------------------- wiring
@dataclass
class CompareTab:
    run: gr.State
    mine: gr.State  # ids of the runs this browser session made (the transfer panel adds its own)


def build_compare_tab(ctx: AppContext, model: gr.Dropdown, jobs: gr.State, tokens: gr.State,
                      prompt_table: gr.Dataframe, baseline: gr.Textbox, record: gr.State,
                      switch: gr.State | None = None) -> CompareTab:
    """Adds the tab's components and events to the open Blocks/Tab context; ``switch`` tells the
    app's banner why the picker moved to a stand-in (see :func:`follow_fallback`)."""
    start = get_spec(ctx.start_model)
    run, known = gr.State(None), gr.State([])
    # Ids of the runs this browser session made: on a public server, the only ones it may list and open.
    mine = gr.State([])
    drawn_bins = gr.State(None)  # the bin range last drawn (see grid_cells)
    with gr.Row():
        chosen = gr.CheckboxGroup([], label="Variants to generate (from the Prompt tab; none ticked = all)", scale=3)
        seeds = gr.Textbox("0, 1", label="Seeds (one column each; e.g. 0, 1, 2 or 0-3)", scale=1, elem_id="seeds")
    with gr.Row():
        seconds = gr.Slider(0.5, start.max_seconds, value=start.defaults.seconds, step=0.5, label="Seconds")
        steps = gr.Slider(1, LIMITS.steps, value=start.defaults.steps, step=1, label="Steps")
        guidance = gr.Slider(0, 15, value=start.defaults.guidance, step=0.5, label="Guidance (<= 1: off)")
    with gr.Row():
        negative = gr.Textbox(label="Negative prompt (optional)", scale=3)
        reconstruction = gr.Checkbox(True, label="Reconstruction check (encode → decode → encode)")
        music = gr.Checkbox(False, label="Music metrics (tempo, key, loudness vs the baseline)")
    with gr.Row():
        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
        stop_btn = gr.Button("Stop", variant="stop")
    form_msg = gr.Markdown(elem_id="generate-message")  # a bad field, named next to the button
    status = gr.Markdown(elem_id="run-status")
    empty = gr.Markdown("**Nothing generated yet.** Type a baseline on the *Prompt* tab (the example there works "
                        "as it is), reword it or add prompts, then press *Generate*: each prompt becomes a row, "
                        "each seed a column, all from the same starting noise. Saved runs open from the list "
                        "below.", elem_id="compare-empty")
    with gr.Row():
        preset = gr.Radio(list(runview.RANGE_CHOICES), value="whole", label="Spectrogram range", scale=2)
        lo_hz = gr.Number(1000, label="Band from (Hz)", visible=False, min_width=100)
        hi_hz = gr.Number(3000, label="to (Hz)", visible=False, min_width=100)
    with gr.Row():
        lo = gr.Slider(0, runview.N_BINS - 1, value=0, step=1, label="Lowest bin shown")
        hi = gr.Slider(1, runview.N_BINS, value=runview.N_BINS, step=1, label="Highest bin shown (exclusive)")
    bins_md = gr.Markdown(runview.bins_caption(None, 0, runview.N_BINS, ctx.start_model), elem_id="bins-caption")

    build_matrix_panel(run, lo, hi)  # the run on one screen: compact players, heatmap, A/B
    with gr.Accordion("Every cell, full size: player, spectrogram and scores", open=False):
        @gr.render(inputs=[run, lo, hi], triggers=[run.change])
        def show_grid(view, lo_v, hi_v):
            grid_cells(view, lo_v, hi_v, run, drawn_bins)

    with gr.Accordion("Whole grid on one figure, and differences to the baseline", open=False):
        grid_plot = gr.Plot(label="Spectrograms")
        diff_plot = gr.Plot(label="Difference to the baseline (same seed)")
    gr.Markdown("### Scores")
    pairs = gr.Dataframe(headers=list(PAIR_HEADERS), type="array", interactive=False, wrap=True,
                         label="Each variant vs the baseline of the same seed (VAE latents)")
    table_pick = gr.Radio(list(TABLE_CHOICES), value="vs_baseline", label="Summary table")
    table_md = gr.Markdown(runview.table_note(None, "vs_baseline"), elem_id="table-note")
    summaries = gr.Dataframe(headers=list(SUMMARY_HEADERS), type="array", interactive=False, label="Summary")
    with gr.Row():
        zip_btn = gr.Button("Download the run (.zip)")
        runs_dd = gr.Dropdown(label=("Your runs (made in this browser session)" if ctx.settings.public
                                     else "Saved runs (everyone's on this machine)"), choices=[], scale=3)
        refresh_btn = gr.Button("Refresh")
        open_btn = gr.Button("Open")
    with gr.Column(visible=False, elem_id="run-archive") as zip_box:  # shown once there is an archive
        zip_file = gr.File(label="Run archive", interactive=False)

    prompt_table.change(variant_choices, [prompt_table, chosen, known], [chosen, known], api_visibility="private")
    model_fields = [seconds, steps, guidance, negative]
    if get_spec(ctx.start_model).fixed_guidance is None:
        model.change(model_defaults, model, model_fields, api_visibility="private")
    else:  # the fields are built for a model with CFG: on page load too, to lock them for a distilled start model
        gr.on(triggers=None, fn=model_defaults, inputs=model, outputs=model_fields, api_visibility="private")
    refresh_runs = bind(run_list, ctx)
    figures = user_errors(bin_figures)
    outputs = [run, status, pairs, summaries]
    figure_outputs = [grid_plot, diff_plot, bins_md, drawn_bins]
    generate = user_errors(bind(generate_run, ctx, ctx.gpu(generate_and_analyze, duration=grid_seconds),
                                [value for _, value in model.choices]))
    form = [model, prompt_table, chosen, baseline, seeds, seconds, steps, guidance, negative, reconstruction, music]
    check = form_check(bind(check_generate, [value for _, value in model.choices]))
    # 1. the form, checked on the page's values: a bad field is named next to the button, and the
    # results on screen stay as they are; 2. the job (which checks the raw values again, for the API).
    # preprocess=False: the handler gets the raw values and checks each one itself (grid_request),
    # so a value past the form's own bounds is refused with a sentence that names the field.
    generated = generate_btn.click(check, form, form_msg, api_visibility="private", show_progress="hidden").success(
        halt_if_message, form_msg, None, api_visibility="private", show_progress="hidden").success(
        arm_job, jobs, None, concurrency_limit=None, api_visibility="private").then(
        generate, [*form, jobs, tokens, record, mine], outputs + [mine], api_name="generate", concurrency_limit=1,
        concurrency_id="gpu", preprocess=False)
    generated.success(figures, [run, lo, hi], figure_outputs, api_visibility="private").then(
        refresh_runs, mine, runs_dd, api_visibility="private")
    if switch is not None:  # a model that could not load: the picker shows the stand-in that ran
        generated.then(bind(follow_fallback, ctx), model, [model, switch], api_visibility="private")
    run.change(lambda v: gr.update(visible=not v), run, empty, api_visibility="private")
    gr.on([run.change, table_pick.change], runview.table_note, [run, table_pick], table_md, api_visibility="private")
    preset.change(user_errors(range_preset), [run, model, preset, lo_hz, hi_hz], [lo, hi, lo_hz],
                  api_visibility="private").then(lambda p: gr.update(visible=p == "hz"), preset, hi_hz,
                                                 api_visibility="private")
    gr.on([lo_hz.submit, hi_hz.submit, lo_hz.blur, hi_hz.blur], user_errors(range_preset),
          [run, model, preset, lo_hz, hi_hz], [lo, hi, lo_hz], api_visibility="private")
    gr.on([lo.change, hi.change, model.change, run.change], range_caption, [run, model, lo, hi], bins_md,
          api_visibility="private")
    stop_btn.click(stop_job, jobs, None, concurrency_limit=None, api_name="stop")
    # The bin range is checked by runview.check_bins (raw values, as for Generate), with its name.
    gr.on([lo.change, hi.change], figures, [run, lo, hi], figure_outputs, api_name="spectrograms", preprocess=False)
    table_pick.change(lambda view, t: runview.summary_rows(view, t), [run, table_pick], summaries,
                      api_name="summary_table")
    run.change(hide_download, None, [zip_file, zip_box], api_visibility="private")
    zip_btn.click(user_errors(download_run), [run, lo, hi, jobs], [zip_file, zip_box], api_name="download_run",
                  preprocess=False)
    refresh_btn.click(refresh_runs, mine, runs_dd, api_name="list_runs")
    gr.on(triggers=None, fn=refresh_runs, inputs=mine, outputs=runs_dd, api_visibility="private")  # on page load
    # and whenever the list is opened: a run saved since (from the CLI, or another tab) is there
    runs_dd.focus(refresh_runs, mine, runs_dd, api_visibility="private", show_progress="hidden")
    open_btn.click(user_errors(bind(open_saved_run, ctx, ctx.gpu(open_and_analyze, duration=120))),
                   [runs_dd, reconstruction, mine], outputs, api_name="open_run", concurrency_limit=1,
                   concurrency_id="gpu").success(
        figures, [run, lo, hi], figure_outputs, api_visibility="private")
    return CompareTab(run=run, mine=mine)
