"""The "Style transfer" panel of the compare tab: a source clip pushed towards a prompt by strength.

Calls :func:`recap.generation.transfer.transfer` (partial noising, paper 001): strength 0 gives the source
back, 1 is plain generation, and every strength of a seed starts from that seed's noise. The
result is saved as a run folder (``kind="transfer"``) and shown as players (rows = strengths,
columns = seeds) with the similarity curves; its id joins the session's runs (the compare tab's
run browser).

Every field is checked (:func:`transfer_request`) before the model or any audio is loaded, with
the core's bounds (:meth:`recap.generation.transfer.TransferConfig.check`, the work bound of
:func:`recap.generation.grid.check_work`) and a sentence that names the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from recap.errors import BadInput
from recap.limits import LIMITS, text
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
    user_errors,
    warn_if_stopped,
)
from recap.backends.registry import find_spec, get_spec, list_specs
from recap.ui.context import AppContext
from recap.ui.jobs import SessionJobs, arm_job
from recap.ui.session_tokens import tokens_for_prompts
from recap.ui.zerogpu import transfer_seconds

CURVE_HEADERS = ("strength", "steps run", "seeds", "cosine to source", "L2 to source", "cosine to target clips",
                 "CLAP-A source", "CLAP-A target")


MAX_STRENGTHS_TEXT = 200


def parse_strengths(value: str) -> list[float]:
    """Strengths from "0, 0.2, 0.4" (:class:`BadInput` names anything that is not a number, or too many)."""
    parts = [p for p in re.split(r"[,\s;]+", text("strengths", value, MAX_STRENGTHS_TEXT).strip()) if p]
    if len(parts) > LIMITS.strengths:
        raise BadInput(f"{len(parts)} transfer strengths is too many for one sweep; the limit is {LIMITS.strengths}")
    out = []
    for p in parts:
        try:
            out.append(float(p))
        except ValueError:
            raise BadInput(f"strength {p!r} is not a number between 0 and 1") from None
    if not out:
        raise BadInput("give at least one strength between 0 (the source) and 1 (plain generation)")
    return out


@dataclass
class TransferRequest:
    """One checked Transfer request."""

    model: str
    source: str
    references: list[str]
    prompt: str
    config: Any


def transfer_request(model: Any, source: Any, references: Any, prompt: Any, strengths: Any, seeds: Any,
                     steps: Any, choices: list[str]) -> TransferRequest:
    """Checks every field of the transfer panel before the model or any clip is loaded.

    Raises:
        BadInput: the first bad field, named (the source clip last, so every other field is
            checked even without one).
    """
    from recap.generation.grid import check_prompt, check_work
    from recap.generation.transfer import MAX_REFERENCES, TransferConfig, sweep_work

    name = model_name(model, choices)
    info = get_spec(name)
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInput("type the prompt to transfer towards")
    prompt = check_prompt("the prompt", prompt.strip())
    config = TransferConfig(strengths=parse_strengths(strengths), seeds=seeds_of(seeds),
                            steps=None if steps in (None, "") else steps).check(info.max_seconds, name)
    check_work(*sweep_work(config if config.steps else TransferConfig(config.strengths, config.seeds, steps=info.defaults.steps)),
               what="this sweep")
    refs = list(references or [])
    if len(refs) > MAX_REFERENCES:
        raise BadInput(f"{len(refs)} target clips is too many; the limit is {MAX_REFERENCES}")
    if not all(isinstance(r, str) for r in refs):
        raise BadInput("the target clips must be uploaded audio files")
    if not source or not isinstance(source, str):
        raise BadInput("upload a source clip first")
    return TransferRequest(name, source, refs, prompt, config)


def default_prompt(model: Any) -> str:
    """A plain prompt model ``model`` follows (its first example): the panel's default, so Transfer
    works as it opens; a learned token is added by hand (``<my-sound>`` only once it is trained)."""
    spec = find_spec(model)
    return spec.examples[0] if spec is not None and spec.examples else "rain on a tin roof"


def model_fields(model: Any, prompt: Any) -> tuple[Any, Any]:
    """The Steps and Prompt fields for a newly chosen model: its default steps, and its example
    prompt unless the visitor wrote their own (a prompt that is some model's example is replaced)."""
    spec = get_spec(model)
    examples = {e for s in list_specs() for e in s.examples}
    untouched = not isinstance(prompt, str) or not prompt.strip() or prompt.strip() in examples
    return (gr.update(value=spec.defaults.steps, label=steps_label(spec.name)),
            gr.update(value=default_prompt(spec.name)) if untouched else gr.skip())


def steps_label(model: Any) -> str:
    spec = get_spec(model)
    return f"Steps (1–{LIMITS.steps}; {spec.name}'s default {spec.defaults.steps}; empty: the model's)"


def check_transfer(choices: list[str], model: Any, source: Any, references: Any, prompt: Any, strengths: Any,
                   seeds: Any, steps: Any) -> None:
    """The panel's checks (:func:`transfer_request`) on the page's values, before any job is queued."""
    transfer_request(model, source, references, prompt, strengths, seeds, steps, choices)


def run_transfer(backend: Any, source: str, prompt: str, config: Any, tokens: dict[str, Any],
                 references: list[str], runs_dir: Path, token_info: list[dict[str, Any]], progress: Any = None,
                 stop: Any = None) -> tuple[Any, Any]:
    """Loads the clips, runs the sweep, measures the curves and saves the run (the GPU-bound part)."""
    from recap.audio_io import load_audio
    from recap.generation.transfer import MAX_REFERENCES, transfer
    from recap.analysis.transfer_curves import save_transfer, similarity_curves

    if len(references) > MAX_REFERENCES:  # counted before a single one is read
        raise BadInput(f"{len(references)} target clips is too many; the limit is {MAX_REFERENCES}")
    src = load_audio(source)
    refs = [load_audio(p) for p in references]
    result = transfer(backend, src, prompt, config, tokens=tokens or None, references=refs, progress=progress,
                      stop=stop)
    curves = similarity_curves(result, backend)
    return save_transfer(result, backend, runs_dir, curves, token_info=token_info), curves


def transfer_view(manifest: Any, curves: Any) -> dict[str, Any]:
    """JSON-ready layout of a transfer run for the page."""
    labels = [v["label"] for v in manifest.variants]
    return {
        "run_id": manifest.run_id,
        "labels": labels,
        "seeds": list(manifest.seeds),
        "audio": {f"{c.variant}|{c.seed}": str(manifest.audio_path(c)) for c in manifest.clips},
        "source": str(Path(manifest.path) / "reference" / "source.wav"),
        "rows": [[p.strength, p.steps_run, p.n_seeds, _r(p.source_cosine), _r(p.source_l2), _r(p.target_cosine),
                  _r(p.clap_source), _r(p.clap_target)] for p in curves.points],
        "notes": list(curves.notes),
        "random_weights": bool(manifest.model.get("random_weights")),
    }


def _r(x: Any) -> Any:
    return None if x is None else round(float(x), 4)


def transfer_installed() -> bool:
    """Whether this checkout has :mod:`recap.generation.transfer` (the panel is shown only then)."""
    import importlib.util

    return importlib.util.find_spec("recap.generation.transfer") is not None


def build_transfer_panel(ctx: AppContext, model: gr.Dropdown, jobs: gr.State, tokens: gr.State,
                         mine: gr.State | None = None, switch: gr.State | None = None) -> None:
    """Adds the accordion to the open Blocks/Tab context; the runs it makes join ``mine``;
    ``switch`` moves the picker to the stand-in that ran (see :func:`recap.ui.common.follow_fallback`)."""
    gpu_transfer = ctx.gpu(run_transfer, duration=transfer_seconds)
    mine = mine if mine is not None else gr.State([])
    choices = [value for _, value in model.choices]
    with gr.Accordion("Style transfer", open=False):
        gr.Markdown("Push a source clip towards a prompt (often one with a learned token). Strength 0 returns the "
                    "source, 1 is plain generation. Strength is the noise's share of the start (σ²/(σ²+1)): 0.5 "
                    "starts where noise and source weigh the same, on every model; the table says the σ each "
                    "strength starts at. On the toy model the source is lost between 0.2 and 0.3 and 0.8 and up "
                    "is plain generation, so sweep the low strengths finely.")
        with gr.Row():
            source = gr.Audio(label="Source clip", type="filepath", sources=["upload"], elem_id="transfer-source")
            references = gr.File(label="Target clips (optional: the token's training clips)", file_count="multiple",
                                 file_types=["audio"])
        with gr.Row():
            prompt = gr.Textbox(label="Prompt (add a learned token, e.g. <my-sound>, once one is trained)",
                                value=default_prompt(ctx.start_model), scale=3, elem_id="transfer-prompt")
            strengths = gr.Textbox("0, 0.2, 0.4, 0.6, 0.8, 1.0", label="Strengths", scale=2)
            seeds = gr.Textbox("0", label="Seeds")
            # No bounds on the field itself: the core checks the value and says which field it was
            # (the page's own bound check would refuse it with a sentence that does not).
            # No precision or bounds on the field itself: Gradio would fail on NaN before the core
            # could name the field (the core checks the value and says which field it was).
            steps = gr.Number(get_spec(ctx.start_model).defaults.steps, label=steps_label(ctx.start_model),
                              elem_id="transfer-steps")
        with gr.Row():
            go_btn = gr.Button("Transfer", variant="primary", elem_id="transfer-btn")
            stop_btn = gr.Button("Stop", variant="stop")
        form_msg = gr.Markdown(elem_id="transfer-message")  # a bad or missing field, named next to the button
        status = gr.Markdown(elem_id="transfer-status")
        curves_plot = gr.Plot(label="Similarity by strength")
        table = gr.Dataframe(headers=list(CURVE_HEADERS), type="array", interactive=False, label="Curves")
        view_state = gr.State(None)

        @gr.render(inputs=[view_state])
        def show(view):
            if not view:
                return
            gr.Audio(view["source"], label="Source (as used)", interactive=False)
            for label in view["labels"]:
                with gr.Row():
                    gr.Markdown(f"**{md_text(label)}**", min_width=140)
                    for seed in view["seeds"]:
                        gr.Audio(view["audio"].get(f"{label}|{seed}"), label=f"{label} · seed {seed}",
                                 interactive=False, buttons=["download"], min_width=200)

    @user_errors
    def on_transfer(model_name, source_path, refs, prompt_text, strengths_text, seeds_text, steps_, jobs_: SessionJobs,
                    session: dict, mine_: list[str] | None, progress=gr.Progress()):
        from recap.analysis.transfer_curves import curves_figure

        req = transfer_request(model_name, source_path, refs, prompt_text, strengths_text, seeds_text, steps_, choices)
        backend, note = ctx.backend(req.model)
        toks, token_info = tokens_for_prompts([req.prompt], backend, session)
        stop = jobs_.begin()
        try:
            manifest, curves = gpu_transfer(
                backend, req.source, req.prompt, req.config, toks, req.references, ctx.settings.runs_dir, token_info,
                progress=lambda done, total, msg: progress(done / max(total, 1), desc=msg), stop=stop)
        except Exception as exc:
            if warn_if_stopped(exc):
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            raise
        view = transfer_view(manifest, curves)
        lines = [f"Run {code_text(manifest.run_id)} (kind transfer): {len(view['labels'])} strength(s) × "
                 f"{len(view['seeds'])} seed(s)."]
        if note:
            lines.append(f"⚠️ {note}")
        lines += [md_text(n) for n in curves.notes]
        return (view, "\n\n".join(lines), curves_figure(curves), view["rows"],
                runview.remember_run(mine_, manifest.run_id))

    form = [model, source, references, prompt, strengths, seeds, steps]
    check = form_check(bind(check_transfer, choices))
    # the form first (a bad or missing field is named next to the button, over no result), then the job
    done = go_btn.click(check, form, form_msg, api_visibility="private", show_progress="hidden").success(
        halt_if_message, form_msg, None, api_visibility="private", show_progress="hidden").success(
        arm_job, jobs, None, concurrency_limit=None, api_visibility="private").then(
        on_transfer, [*form, jobs, tokens, mine],
        [view_state, status, curves_plot, table, mine], api_name="transfer", concurrency_limit=1,
        concurrency_id="gpu")
    model.change(model_fields, [model, prompt], [steps, prompt], api_visibility="private")
    if switch is not None:
        done.then(bind(follow_fallback, ctx), model, [model, switch], api_visibility="private")
    stop_btn.click(SessionJobs.stop, jobs, None, concurrency_limit=None, api_visibility="private")
