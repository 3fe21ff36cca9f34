"""The "Style transfer" panel of the compare tab: a source clip pushed towards a prompt by strength.

Calls :func:`recap.transfer.transfer` (partial noising, paper 001): strength 0 gives the source
back, 1 is plain generation, and every strength of a seed starts from that seed's noise. The
result is saved as a run folder (``kind="transfer"``) and shown as players (rows = strengths,
columns = seeds) with the similarity curves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr

from recap.ui.common import (
    code_text,
    md_text,
    parse_seeds,
    user_errors,
    warn_if_stopped,
)
from recap.ui.context import AppContext, SessionJobs

CURVE_HEADERS = ("strength", "steps run", "seeds", "cosine to source", "L2 to source", "cosine to target clips",
                 "CLAP-A source", "CLAP-A target")


def parse_strengths(text: str) -> list[float]:
    """Strengths from "0, 0.2, 0.4" (ValueError names anything that is not a number)."""
    parts = [p for p in re.split(r"[,\s;]+", (text or "").strip()) if p]
    out = []
    for p in parts:
        try:
            out.append(float(p))
        except ValueError:
            raise ValueError(f"strength {p!r} is not a number between 0 and 1") from None
    if not out:
        raise ValueError("give at least one strength between 0 (the source) and 1 (plain generation)")
    return out


def run_transfer(backend: Any, source: str, prompt: str, config: Any, tokens: dict[str, Any],
                 references: list[str], runs_dir: Path, token_info: list[dict[str, Any]], progress: Any = None,
                 stop: Any = None) -> tuple[Any, Any]:
    """Loads the clips, runs the sweep, measures the curves and saves the run (the GPU-bound part)."""
    from recap.audio_io import load_audio
    from recap.transfer import transfer
    from recap.transfer_curves import save_transfer, similarity_curves

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


def build_transfer_panel(ctx: AppContext, model: gr.Dropdown, jobs: gr.State, tokens: gr.State) -> None:
    """Adds the accordion to the open Blocks/Tab context."""
    gpu_transfer = ctx.gpu(run_transfer, duration=300)
    with gr.Accordion("Style transfer", open=False):
        gr.Markdown("Push a source clip towards a prompt (often one with a learned token). Strength 0 returns the "
                    "source, 1 is plain generation; the paper found 0.4–0.6 keeps the source's structure with the "
                    "target's character.")
        with gr.Row():
            source = gr.Audio(label="Source clip", type="filepath", sources=["upload"])
            references = gr.File(label="Target clips (optional: the token's training clips)", file_count="multiple",
                                 file_types=["audio"])
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value="a recording of <my-sound>", scale=3)
            strengths = gr.Textbox("0, 0.2, 0.4, 0.6, 0.8, 1.0", label="Strengths", scale=2)
            seeds = gr.Textbox("0", label="Seeds")
            steps = gr.Number(None, precision=0, minimum=1, label="Steps (empty: the model's)")
        with gr.Row():
            go_btn = gr.Button("Transfer", variant="primary")
            stop_btn = gr.Button("Stop", variant="stop")
        status = gr.Markdown()
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
                    session: dict, progress=gr.Progress()):
        from recap.transfer import TransferConfig
        from recap.transfer_curves import curves_figure
        from recap.ui.token import check_token_use, usable_tokens

        if not source_path:
            raise ValueError("upload a source clip first")
        if not (prompt_text or "").strip():
            raise ValueError("type the prompt to transfer towards")
        config = TransferConfig(strengths=parse_strengths(strengths_text), seeds=parse_seeds(seeds_text),
                                steps=int(steps_) if steps_ else None)
        backend, note = ctx.backend(model_name)
        check_token_use([prompt_text], backend, session)
        toks = {p: v for p, v in usable_tokens(backend, session).items() if p in prompt_text}
        stop = jobs_.begin()
        try:
            manifest, curves = gpu_transfer(
                backend, source_path, prompt_text.strip(), config, toks, list(refs or []), ctx.settings.runs_dir,
                [session[p].summary() for p in toks],
                progress=lambda done, total, msg: progress(done / max(total, 1), desc=msg), stop=stop)
        except Exception as exc:
            if warn_if_stopped(exc):
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            raise
        view = transfer_view(manifest, curves)
        lines = [f"Run {code_text(manifest.run_id)} (kind transfer): {len(view['labels'])} strength(s) × "
                 f"{len(view['seeds'])} seed(s)."]
        if note:
            lines.append(f"⚠️ {note}")
        lines += [md_text(n) for n in curves.notes]
        return view, "\n\n".join(lines), curves_figure(curves), view["rows"]

    go_btn.click(lambda j: j.arm(), jobs, None, concurrency_limit=None, api_visibility="private").then(
        on_transfer, [model, source, references, prompt, strengths, seeds, steps, jobs, tokens],
        [view_state, status, curves_plot, table], api_name="transfer", concurrency_limit=1, concurrency_id="gpu")
    stop_btn.click(lambda j: j.stop(), jobs, None, concurrency_limit=None, api_visibility="private")
