"""The "Listen & rate" tab: raters take blind studies; experimenters create and follow them.

Roles (DESIGN.md, "Roles"): the rater's section is :mod:`recap.ui.rater`, the experimenter's
panel (and the gate that decides who may use it) :mod:`recap.ui.experimenter`. This module only
puts the two on one tab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from recap.ui.experimenter import OFF_TEXT, ExperimenterGate, build_experimenter
from recap.ui.jobs import SessionJobs, close_session
from recap.ui.rater import build_rater

__all__ = ["build_listen_tab", "ListenTab"]


@dataclass(frozen=True)
class ListenTab:
    """What the page around the tab needs: the experimenter panel (hidden on a rater's page)."""

    experimenter: gr.Accordion
    gate: ExperimenterGate


def build_listen_tab(ctx: Any, jobs: gr.State | None = None) -> ListenTab:
    """Adds the tab's components and events to the open Blocks/Tab context.

    Args:
        ctx: Anything with ``settings.home`` (or ``home``): the RECAP_HOME folder; its
            ``settings.experimenter_access`` decides the experimenter role (open when absent).
        jobs: The page's per-session :class:`SessionJobs` state (its scratch folder holds the
            rater's clip copies and the exports); the tab makes its own when None.
    """
    settings = getattr(ctx, "settings", ctx)
    home = Path(settings.home)
    gate = ExperimenterGate.from_settings(settings)
    jobs = jobs if jobs is not None else gr.State(SessionJobs(), delete_callback=close_session)
    build_rater(home, jobs)
    with gr.Accordion("Experimenter", open=False, elem_id="study-experimenter") as experimenter:
        if gate.mode == "off":
            # Nothing else is built: no experimenter event exists to be called.
            gr.Markdown(OFF_TEXT, elem_id="study-experimenter-off")
        else:
            build_experimenter(home, gate, jobs, refresh_on=[experimenter.expand])
    return ListenTab(experimenter, gate)
