"""The whole web app: a model picker and its warning banner above five tabs.

``build_app`` only lays out components and wires events; no model is loaded until a visitor
first needs one, so the server is ready in seconds. ``launch_options`` holds what Gradio 6 takes
at ``launch()``: theme, CSS, and the only folders it may serve.

A study link (``?study=CODE``) opens the rater's page: the same app with everything but the
rater's part of "Listen & rate" hidden when the page loads (no other tab, model picker, banner,
experimenter panel or run browser). Hiding is for the rater's sake, not a lock: what must stay
private is refused by the handlers themselves (see :mod:`recap.ui.experimenter`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import gradio as gr

from recap.backends.registry import BackendSpec, availability, available_specs, get_spec, offline_fallback
from recap.limits import LIMITS
from recap.ui.about import build_about_tab
from recap.ui.common import model_banner
from recap.ui.compare import build_compare_tab
from recap.ui.context import AppContext, choose_start_model
from recap.ui.guard import guard_middleware
from recap.ui.jobs import SessionJobs, close_session
from recap.ui.listen import build_listen_tab
from recap.ui.matrix import MATRIX_CSS
from recap.ui.rater import code_from_query
from recap.ui.prompt import build_prompt_tab
from recap.ui.token import build_token_tab
from recap.ui.transfer import build_transfer_panel, transfer_installed

log = logging.getLogger(__name__)

# (every s, older than s) for Blocks(delete_cache=...)
CACHE_SWEEP = (600, 3600)

CSS = """
.recap-cell-spec { min-height: 190px; }
.recap-grid-row { border-top: 1px solid var(--border-color-primary); padding-top: 6px; }
#recap-banner { border-left: 4px solid #d97706; padding-left: 10px; }
/* The rater's page: Gradio 6 keeps a hidden tab's button in the tab bar, so it is hidden here. */
.recap-rater-page [role="tablist"] button[data-tab-id]:not([data-tab-id="listen"]) { display: none !important; }
""" + MATRIX_CSS


def picker_label(spec: BackendSpec) -> str:
    """The picker's label of a model: its own, plus what it takes when it cannot load here as it
    is (from :func:`recap.backends.registry.availability`), so the visitor knows before choosing."""
    status = availability(spec)
    if status.startswith("available"):
        return spec.label
    if status.startswith("not downloaded"):
        if spec.gated:
            need = "needs HF_TOKEN" if choose_start_model(spec.name)[1] else "downloads on first use"
        else:
            need = "needs network access on first use"
        return f"{spec.label} — not downloaded: {need}"
    if status.startswith("not converted"):
        return f"{spec.label} — not converted here (see the README)"
    return f"{spec.label} — {status.split(':')[0]}"


def model_choices(ctx: AppContext) -> list[tuple[str, str]]:
    choices = [(picker_label(m), m.name) for m in available_specs()]
    for name in (ctx.settings.model, ctx.start_model):
        if name not in {c[1] for c in choices}:
            choices.append((picker_label(get_spec(name)), get_spec(name).name))
    return choices


def model_switch(ctx: AppContext, name: str, switch: dict | None) -> tuple[str, Any, dict | None]:
    """A model was chosen: the banner, and the picker moved to the stand-in when the model cannot
    load here (known to have failed, or gated without a token), with the reason in the banner.

    ``switch`` is {"to": stand-in, "note": why} when the picker was just moved (by this function or
    after a run that fell back): the move's own change event then shows that reason.

    Returns:
        (banner, update of the picker, the switch to remember).
    """
    name = get_spec(name).name
    if switch and switch.get("to") == name:
        return model_banner(name, switch.get("note")), gr.skip(), None
    note = ctx.failures().get(name) or choose_start_model(name)[1]
    if note:
        stand_in = offline_fallback(name)
        return model_banner(stand_in, note), gr.update(value=stand_in), {"to": stand_in, "note": note}
    return model_banner(name), gr.skip(), None


def rater_page(params: Mapping[str, str]) -> bool:
    """Whether a page's query asks for the rater's page (a well-formed ``?study=CODE``)."""
    return bool(code_from_query(params))


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    """Builds the Blocks (nothing is loaded or launched).

    Args:
        ctx: Shared context; read from the environment when None.
    """
    ctx = ctx or AppContext.create()
    # No usage analytics: a research tool should not phone home, and offline machines would wait on it.
    # Gradio's cache (uploads and every file handed to a browser) is swept every 10 minutes of
    # files older than an hour, so uploads a visitor leaves behind do not pile up on the disk.
    with gr.Blocks(title="recap — how wording steers text-to-audio models", analytics_enabled=False,
                   delete_cache=CACHE_SWEEP) as demo:
        # Per-visitor values: each session gets its own deep copy (a SessionJobs copy is a fresh one).
        jobs = gr.State(SessionJobs(), delete_callback=close_session)
        tokens = gr.State({})
        with gr.Row(equal_height=True, elem_id="recap-header") as header:
            gr.Markdown("## recap\nHow the wording of a prompt steers text-to-audio diffusion models.")
            model = gr.Dropdown(model_choices(ctx), value=ctx.start_model, label="Model (loads on first use)",
                                elem_id="model-picker")
        banner = gr.Markdown(model_banner(ctx.start_model, ctx.start_note), elem_id="recap-banner")
        switch = gr.State(None)  # why the picker was moved to a stand-in (see model_switch)

        def on_model(name: str, switch_: dict | None) -> tuple[str, Any, dict | None]:
            return model_switch(ctx, name, switch_)

        model.change(on_model, [model, switch], [banner, model, switch], api_visibility="private")
        # Wrapped rather than folded into a "More tabs" menu, so that on a phone every tab (the
        # Generate tab included) is one tap away.
        with gr.Tabs(overflow_behavior="wrap") as tabs:
            with gr.Tab("Prompt", id="prompt") as prompt_tab:
                prompt = build_prompt_tab(ctx, model, tokens)
            with gr.Tab("Token", id="token") as token_tab:
                build_token_tab(ctx, model, jobs, tokens, prompt.table)
            with gr.Tab("Generate & compare", id="compare") as compare_tab:
                compare = build_compare_tab(ctx, model, jobs, tokens, prompt.table, prompt.baseline, prompt.record,
                                            switch)
                if transfer_installed():  # its runs join the compare tab's run browser
                    build_transfer_panel(ctx, model, jobs, tokens, compare.mine, switch)
            with gr.Tab("Listen & rate", id="listen"):
                listen = build_listen_tab(ctx, jobs)
            with gr.Tab("About", id="about") as about:
                build_about_tab(ctx, about)

        workbench = [header, banner, prompt_tab, token_tab, compare_tab, about, listen.experimenter]

        def on_page(request: gr.Request) -> list:
            rater = rater_page(request.query_params if request else {})
            return [gr.update(visible=not rater) for _ in workbench] + [
                gr.Tabs(selected="listen", elem_classes=["recap-rater-page"]) if rater else gr.update()]

        demo.load(on_page, None, [*workbench, tabs], api_visibility="private")
    demo.queue(max_size=64, default_concurrency_limit=4)
    return demo


def launch_options(ctx: AppContext) -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch``: look, and which files may be served."""
    return {
        "theme": gr.themes.Soft(),
        "css": CSS,
        "allowed_paths": ctx.allowed_paths(),
        "blocked_paths": ctx.blocked_paths(),
        # recap's own errors are always shown (as sentences); on a public server a library's
        # unexpected exception is not, since its text can hold server paths.
        "show_error": not ctx.settings.public,
        # Refused while it streams in, before it reaches the disk in full; whole request bodies
        # are bounded by the guard.
        "max_file_size": f"{LIMITS.upload_mb}mb",
        "app_kwargs": {"middleware": guard_middleware()},
    }


def main() -> None:
    """``python app.py``: reads the environment, builds the app and serves it (port 7860 by default;
    ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` change where)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = AppContext.create()
    if ctx.start_note:
        log.warning("%s", ctx.start_note)
    build_app(ctx).launch(**launch_options(ctx))
