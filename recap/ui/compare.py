"""The "Generate & compare" tab: the chosen prompts x seeds from identical noise, side by side.

Rows are variants, columns seeds; each cell has its player, its clipped spectrogram (the bin
range changes live, from the saved audio, without generating again) and its cosine / L2 to the
baseline of the same seed. The tables are those of :func:`recap.analysis.analyze_run`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from recap.ui import runview
from recap.ui.common import (
    code_text,
    md_text,
    parse_seeds,
    table_rows,
    user_errors,
    warn_if_stopped,
)
from recap.ui.context import AppContext, SessionJobs, model_info
from recap.ui.runview import PAIR_HEADERS, SUMMARY_HEADERS

MAX_CLIPS = 64
TABLE_CHOICES = (("vs baseline (same seed)", "vs_baseline"), ("seed variance", "seed_variance"),
                 ("text cosine", "text"), ("reconstruction", "reconstruction"), ("CLAP", "clap"), ("music", "music"))


# ----------------------------------------------------------------------------- pure helpers
def chosen_variants(rows: Any, selected: list[str] | None, baseline_text: str = "") -> list[Any]:
    """The table's rows to generate, as ``Variant``; the baseline is always one of them.

    Raises:
        ValueError: an invalid table (see ``check_rows``), or nothing to compare with.
    """
    from recap.generation import Variant
    from recap.ui.prompt import check_rows, set_baseline

    rows = check_rows(set_baseline(rows, baseline_text) if not table_rows(rows) else rows)
    if not rows:
        raise ValueError("type a baseline prompt first (Prompt tab)")
    selected = [s for s in (selected or []) if s]
    if selected and "baseline" not in selected:
        raise ValueError("keep the baseline ticked: every clip is compared with the baseline of its seed")
    unknown = sorted(set(selected) - {r[0] for r in rows})
    if unknown:
        raise ValueError(f"ticked variants {unknown} are no longer in the table")
    return [Variant(r[0], r[3], r[1], int(r[2])) for r in rows if not selected or r[0] in selected]


def generate_and_analyze(backend: Any, variants: list[Any], config: Any, tokens: dict[str, Any],
                         token_info: list[dict[str, Any]], runs_dir: Path, analysis: Any, extra: dict[str, Any],
                         progress: Any = None, stop: Any = None) -> tuple[Any, Any]:
    """Generates the grid, saves the run folder and measures it (the GPU-bound part)."""
    from recap.analysis import analyze_run
    from recap.generation import generate_grid, save_run

    result = generate_grid(backend, variants, config, tokens=tokens or None, progress=progress, stop=stop)
    manifest = save_run(result, backend, runs_dir, token_info=token_info, extra=extra)
    return manifest, analyze_run(manifest.path, backend, analysis)


def open_and_analyze(backend: Any, run_dir: Path, analysis: Any) -> tuple[Any, Any]:
    from recap.analysis import analyze_run
    from recap.runs import load_run

    return load_run(run_dir), analyze_run(run_dir, backend, analysis)


def status_text(view: dict[str, Any], note: str | None = None) -> str:
    model = view["model"]
    n = len(view["labels"]) * len(view["seeds"])
    t = view.get("timings") or {}
    lines = [f"Run `{view['run_id']}`: {len(view['labels'])} variant(s) × {len(view['seeds'])} seed(s) = {n} clips"
             + (f" in {t['denoising_calls']} denoising call(s), {t['generate_s']:.1f} s" if "generate_s" in t else "")
             + f" · model {code_text(model.get('name'))} on {model.get('device')}."]
    if model.get("random_weights"):
        lines.append("⚠️ **Random weights: this audio is noise and the numbers say nothing about wording.**")
    if note:
        lines.append(f"⚠️ {note}")
    lines += [md_text(x) for x in view.get("notes", []) if "random weights" not in x]
    return "\n\n".join(lines)


# ----------------------------------------------------------------------------- wiring
@dataclass
class CompareTab:
    run: gr.State


def build_compare_tab(ctx: AppContext, model: gr.Dropdown, jobs: gr.State, tokens: gr.State,
                      prompt_table: gr.Dataframe, baseline: gr.Textbox, record: gr.State) -> CompareTab:
    """Adds the tab's components and events to the open Blocks/Tab context."""
    gpu_generate = ctx.gpu(generate_and_analyze, duration=300)
    gpu_open = ctx.gpu(open_and_analyze, duration=120)
    start = model_info(ctx.start_model)

    run = gr.State(None)
    known = gr.State([])
    # The bin range last drawn. The cells created inside the render listen to this, not to the
    # sliders: a listener made inside a render on the sliders would replace the one made here.
    drawn_bins = gr.State(None)
    with gr.Row():
        chosen = gr.CheckboxGroup([], label="Variants to generate (from the Prompt tab; none ticked = all)", scale=3)
        seeds = gr.Textbox("0, 1", label="Seeds (one column each; e.g. 0, 1, 2 or 0-3)", scale=1, elem_id="seeds")
    with gr.Row():
        seconds = gr.Slider(0.5, start.max_seconds, value=start.seconds, step=0.5, label="Seconds")
        steps = gr.Slider(1, 250, value=start.steps, step=1, label="Steps")
        guidance = gr.Slider(0, 15, value=start.guidance, step=0.5, label="Guidance (<= 1: off)")
    with gr.Row():
        negative = gr.Textbox(label="Negative prompt (optional)", scale=3)
        reconstruction = gr.Checkbox(True, label="Reconstruction check (encode → decode → encode)")
        music = gr.Checkbox(False, label="Music metrics (tempo, key, loudness vs the baseline)")
    with gr.Row():
        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
        stop_btn = gr.Button("Stop", variant="stop")
    status = gr.Markdown(elem_id="run-status")
    with gr.Row():
        lo = gr.Slider(0, runview.N_BINS - 1, value=100, step=1, label="Lowest bin shown")
        hi = gr.Slider(1, runview.N_BINS, value=150, step=1, label="Highest bin shown (exclusive)")
        bins_md = gr.Markdown()

    @gr.render(inputs=[run, lo, hi], triggers=[run.change])
    def show_grid(view, lo_v, hi_v):
        if not view:
            gr.Markdown("*Generate a grid to see it here: rows are variants, columns seeds.*")
            return
        try:
            specs = runview.spectrograms(view, lo_v, hi_v)
        except ValueError:
            specs = runview.spectrograms(view, 100, 150)
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

    with gr.Accordion("Whole grid on one figure, and differences to the baseline", open=False):
        grid_plot = gr.Plot(label="Spectrograms")
        diff_plot = gr.Plot(label="Difference to the baseline (same seed)")
    gr.Markdown("### Scores")
    pairs = gr.Dataframe(headers=list(PAIR_HEADERS), type="array", interactive=False, wrap=True,
                         label="Each variant vs the baseline of the same seed (VAE latents)")
    table_pick = gr.Radio(list(TABLE_CHOICES), value="vs_baseline", label="Summary table")
    summaries = gr.Dataframe(headers=list(SUMMARY_HEADERS), type="array", interactive=False, label="Summary")
    with gr.Row():
        zip_btn = gr.Button("Download the run (.zip)")
        runs_dd = gr.Dropdown(label="Saved runs (shared)", choices=[], scale=3)
        refresh_btn = gr.Button("Refresh")
        open_btn = gr.Button("Open")
    with gr.Column(visible=False) as zip_box:  # shown once there is an archive
        zip_file = gr.File(label="Run archive", interactive=False)

    def sync(rows, selected, known_):
        labels = [str(r[0]) for r in table_rows(rows) if r and str(r[0]).strip()]
        value = [x for x in labels if x in (selected or []) or x not in (known_ or [])]
        return gr.update(choices=labels, value=value), labels

    prompt_table.change(sync, [prompt_table, chosen, known], [chosen, known], api_visibility="private")

    def on_model(name):
        info = model_info(name)
        return (gr.update(maximum=info.max_seconds, value=min(info.seconds, info.max_seconds)),
                gr.update(value=info.steps), gr.update(value=info.guidance))

    model.change(on_model, model, [seconds, steps, guidance], api_visibility="private")

    @user_errors
    def generate(model_name, rows, selected, baseline_text, seeds_text, seconds_, steps_, guidance_, negative_,
                 recon, music_, jobs_: SessionJobs, session: dict, record_: dict | None,
                 progress=gr.Progress()):
        from recap.analysis import AnalysisConfig
        from recap.generation import GenerationConfig
        from recap.ui.token import check_token_use, usable_tokens

        variants = chosen_variants(rows, selected, baseline_text)
        seed_list = parse_seeds(seeds_text)
        if len(variants) * len(seed_list) > MAX_CLIPS:
            raise ValueError(f"{len(variants)} variants × {len(seed_list)} seeds = {len(variants) * len(seed_list)} "
                             f"clips; one grid holds at most {MAX_CLIPS} here")
        progress(0, desc="loading the model…")
        backend, note = ctx.backend(model_name)
        check_token_use([v.prompt for v in variants], backend, session)
        tokens_ = usable_tokens(backend, session)
        used = [session[p] for p in tokens_ if any(p in v.prompt for v in variants)]
        config = GenerationConfig(seconds=float(seconds_), steps=int(steps_), guidance=float(guidance_),
                                  negative_prompt=(negative_ or "").strip() or None, seeds=seed_list)
        extra = {"source": "app"}
        if record_ and record_.get("baseline") == next(v.prompt for v in variants if v.label == "baseline"):
            extra["recaption"] = record_
        stop = jobs_.begin()
        try:
            manifest, analysis = gpu_generate(
                backend, variants, config, {p: tokens_[p] for p in (t.placeholder for t in used)},
                [t.summary() for t in used], ctx.settings.runs_dir,
                AnalysisConfig(reconstruction=bool(recon), music=bool(music_), n_boot=1000), extra,
                progress=lambda done, total, msg: progress(done / max(total, 1), desc=msg), stop=stop)
        except Exception as exc:
            if warn_if_stopped(exc):
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            raise
        view = runview.run_view(manifest, analysis)
        return view, status_text(view, note), view["pairs"], runview.summary_rows(view, "vs_baseline")

    outputs = [run, status, pairs, summaries]
    figure_outputs = [grid_plot, diff_plot, bins_md, drawn_bins]
    generate_btn.click(_arm, jobs, None, concurrency_limit=None, api_visibility="private").then(
        generate, [model, prompt_table, chosen, baseline, seeds, seconds, steps, guidance, negative, reconstruction,
                   music, jobs, tokens, record], outputs, api_name="generate", concurrency_limit=1,
        concurrency_id="gpu").success(
        _figures, [run, lo, hi], figure_outputs, api_visibility="private")
    stop_btn.click(_stop, jobs, None, concurrency_limit=None, api_name="stop")

    gr.on([lo.change, hi.change], _figures, [run, lo, hi], figure_outputs, api_name="spectrograms")
    table_pick.change(lambda view, t: runview.summary_rows(view, t), [run, table_pick], summaries,
                      api_name="summary_table")

    @user_errors
    def download(view, lo_v, hi_v, jobs_: SessionJobs):
        if not view:
            raise ValueError("generate or open a run first")
        path = runview.zip_run(view, Path(tempfile.mkdtemp(dir=jobs_.scratch, prefix="zip-")), lo_v, hi_v)
        return str(path), gr.update(visible=True)

    zip_btn.click(download, [run, lo, hi, jobs], [zip_file, zip_box], api_name="download_run")
    def refresh_runs():
        return gr.update(choices=runview.run_choices(ctx.settings.runs_dir))

    refresh_btn.click(refresh_runs, None, runs_dd, api_name="list_runs")
    gr.on(triggers=None, fn=refresh_runs, outputs=runs_dd, api_visibility="private")  # on page load

    @user_errors
    def open_run(run_id, recon):
        from recap.analysis import AnalysisConfig
        from recap.paths import inside
        from recap.runs import load_run

        if not run_id:
            raise ValueError("choose a saved run first")
        run_dir = inside(ctx.settings.runs_dir, Path(str(run_id)).name)
        backend, note = ctx.backend(str(load_run(run_dir).model.get("name")))
        manifest, analysis = gpu_open(backend, run_dir, AnalysisConfig(reconstruction=bool(recon), n_boot=1000))
        view = runview.run_view(manifest, analysis)
        return view, status_text(view, note), view["pairs"], runview.summary_rows(view, "vs_baseline")

    open_btn.click(open_run, [runs_dd, reconstruction], outputs, api_name="open_run", concurrency_limit=1,
                   concurrency_id="gpu").success(
        _figures, [run, lo, hi], figure_outputs, api_visibility="private")
    _maybe_transfer(ctx, model, jobs, tokens)
    return CompareTab(run=run)


@user_errors
def _figures(view: dict | None, lo: float, hi: float) -> tuple[Any, Any, str, Any]:
    """The whole-grid figures and caption for a bin range, and the range (which redraws the cells)."""
    if not view:
        return None, None, "", gr.skip()  # nothing generated yet: the sliders just set the range to use
    specs = runview.spectrograms(view, lo, hi)
    grid, diff = runview.grid_figures(view, specs)
    return grid, diff, runview.bins_caption(view, lo, hi), [int(lo), int(hi)]


def _arm(jobs: SessionJobs) -> None:
    jobs.arm()


def _stop(jobs: SessionJobs) -> None:
    jobs.stop()
    gr.Info("Stopping at the next step…")


def _maybe_transfer(ctx: AppContext, model: gr.Dropdown, jobs: gr.State, tokens: gr.State) -> None:
    """The style-transfer panel, when ``recap.transfer`` is installed in this checkout."""
    import importlib.util

    if importlib.util.find_spec("recap.transfer") is None:
        return
    from recap.ui.transfer import build_transfer_panel

    build_transfer_panel(ctx, model, jobs, tokens)
