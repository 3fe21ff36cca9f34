"""The "Listen & rate" tab: raters take blind studies; experimenters create and follow them.

Pure handlers first (plain values in and out, testable without a browser), Blocks wiring after.
Each rater's place in a study lives in a ``gr.State``; everything else is in the study database,
so a reload or a server restart loses nothing: the rater opens the study again and continues.
"""

from __future__ import annotations

import functools
import html
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import gradio as gr
import plotly.graph_objects as go

from recap.runs import list_runs
from recap.study import (
    AB_ANSWERS,
    SCALES,
    Scale,
    ShownTrial,
    StudyConfig,
    StudyError,
    StudyStore,
    normalize_code,
)
from recap.study_stats import (
    answer_table,
    results_figure,
    summarize,
    summary_rows,
    write_csv,
    write_json,
)

RATER_CONCURRENCY = 16
PROGRESS_HEADERS = ["rater", "name", "answered", "of", "last answer (UTC)"]
RESULT_HEADERS = ["section", "question", "condition", "answer", "n", "count", "value", "low", "high"]
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md_text(text: object) -> str:
    """Makes any user-supplied text display literally in Markdown/HTML (no tags, no links)."""
    return html.escape(_MD_SPECIAL.sub(r"\\\1", str(text)), quote=True)


def _home(ctx: Any) -> Path:
    return Path(getattr(ctx, "settings", ctx).home)


# -- rater ---------------------------------------------------------------------------------


@dataclass
class RaterView:
    """What the rater section shows after an action.

    ``state`` goes back into the rater's gr.State; ``kind`` is None when there is no trial to show
    (nothing opened yet, or the study is finished); ``clips`` are in shown order (A, B).
    """

    state: dict | None
    status: str
    kind: str | None = None
    clips: list[str] = field(default_factory=list)
    reference: str | None = None
    question: str = ""
    prompt: str = ""
    scales: list[Scale] = field(default_factory=list)


def _show(trial: ShownTrial | None, rater_id: str, code: str, status: str) -> RaterView:
    state = {"code": code, "rater_id": rater_id, "slot": None, "answer_id": None, "shown_at": None, "scales": []}
    if trial is None:
        return RaterView(state, status + "\n\n**All done — thank you!** You can close this page.")
    # One answer id per shown trial: a double click or a retry resubmits the same id.
    state.update(slot=trial.slot, answer_id=uuid.uuid4().hex, shown_at=time.time(),
                 scales=[s.key for s in trial.scales])
    title = f"**{md_text(trial.title)}** — " if trial.title else ""
    question = trial.question if trial.kind == "ab" else "Rate this clip on each scale."
    return RaterView(
        state, f"{status}\n\n{title}item {trial.slot + 1} of {trial.total}", trial.kind,
        [str(c) for c in trial.clips], str(trial.reference) if trial.reference else None,
        f"### {md_text(question)}", f"Prompt: *{md_text(trial.prompt)}*" if trial.prompt else "", trial.scales)


def open_study(home: Path, code: str, name: str = "", resume_code: str = "") -> RaterView:
    """Joins (or resumes) a study and shows the rater's first unanswered item.

    Raises:
        StudyError: unknown code, unknown resume code, bad name.
    """
    store = StudyStore(home)
    rater = store.join(code, name=name or None, rater_id=(resume_code or "").strip() or None)
    who = f"as **{md_text(rater.name)}**" if rater.name else "anonymously"
    # The code and resume code are made by recap from safe characters; shown raw inside code spans.
    status = (f"Study `{rater.code}` opened {who}. Your resume code is `{rater.rater_id}` "
              "— keep it to continue later from another device.")
    return _show(store.trial(rater.rater_id), rater.rater_id, rater.code, status)


def submit_answer(home: Path, state: dict | None, choice: str | None, ratings: Mapping[str, float] | None,
                  comment: str = "", now: float | None = None) -> RaterView:
    """Stores the answer to the shown item and shows the next one.

    Args:
        state: The rater's state from :func:`open_study` / the previous submit.
        choice: A/B answer as shown (one of AB_ANSWERS).
        ratings: 1-5 values by scale key; only the study's scales are used.
        now: Current time (seconds since the epoch) for the time taken; default time.time().
    """
    if not state or state.get("slot") is None:
        raise StudyError("open a study first (enter its code)")
    store = StudyStore(home)
    ratings_in = None
    if state["scales"]:
        missing = [k for k in state["scales"] if (ratings or {}).get(k) is None]
        if missing:
            raise StudyError(f"rate the clip on {', '.join(missing)}")
        ratings_in = {k: int(round(float(ratings[k]))) for k in state["scales"]}
    elapsed = int(1000 * max(0.0, (now if now is not None else time.time()) - state["shown_at"]))
    stored = store.submit(state["answer_id"], state["rater_id"], state["slot"],
                          choice=None if ratings_in else choice, ratings=ratings_in, comment=comment or "",
                          time_ms=elapsed)
    status = "Saved." if stored else "That item was already answered (another window?) — moving on."
    return _show(store.trial(state["rater_id"]), state["rater_id"], state["code"], status)


def code_from_query(params: Mapping[str, str]) -> str:
    """The study code from a link's ``?study=CODE``, or "" (junk is dropped, never echoed)."""
    try:
        return normalize_code(params.get("study", ""))
    except StudyError:
        return ""


# -- experimenter --------------------------------------------------------------------------


def run_choices(home: Path) -> list[tuple[str, str]]:
    """(label, run id) of every run, newest first, for a dropdown."""
    out = []
    for run in list_runs(Path(home) / "runs"):
        labels = ", ".join(v["label"] for v in run.variants)
        out.append((f"{run.run_id} — {labels} ({len(run.clips)} clips)", run.run_id))
    return out


def _lines(text: str | None) -> list[str]:
    return [s.strip() for s in re.split(r"[\n,]", text or "") if s.strip()]


def create_study(home: Path, run_ids: list[str] | None, kind: str, pairs: str = "", items: str = "",
                 questions: str = "", scales: list[str] | None = None, reference: str | None = None,
                 prompt: str = "", hide_prompt: bool = False, repeats: int = 1, checks: int = 1,
                 max_failed_checks: int = 0, name: str = "") -> tuple[str, str]:
    """Creates a study; returns (message in Markdown, study code).

    ``pairs`` and ``items`` are comma- or line-separated ("baseline:reword-1a"); ``questions``
    one per line.
    """
    if not run_ids:
        raise StudyError("choose at least one run")
    config = StudyConfig(kind=kind, name=(name or "").strip(), pairs=_lines(pairs), items=_lines(items),
                         reference=reference or None, prompt=(prompt or "").strip() or None,
                         hide_prompt=bool(hide_prompt), repeats=int(repeats or 0), checks=int(checks or 0),
                         max_failed_checks=int(max_failed_checks or 0))
    question_list = [q.strip() for q in (questions or "").splitlines() if q.strip()]
    if question_list:
        config.questions = question_list
    if scales:
        config.scales = list(scales)
    info = StudyStore(home).create(config, run_ids)
    tests = sum(i.role == "test" for i in info.items)
    message = (f"Created study `{info.code}`: {tests} items + {len(info.items) - tests} attention checks, "
               f"{config.repeats} repeated per rater. Raters open it with the code `{info.code}` "
               f"or a link to this page ending in `?study={info.code}`.")
    return message, info.code


def study_choices(home: Path) -> list[tuple[str, str]]:
    """(label, code) of every study, newest first."""
    return [(f"{info.code} — {info.config.kind} {info.config.name} ({raters} raters, {answers} answers)", info.code)
            for info, raters, answers in StudyStore(home).studies()]


def progress_table(home: Path, code: str) -> list[list]:
    """One row per rater: resume code, name, answered, total, last answer time."""
    return [[p.rater_id, p.name or "(anonymous)", p.answered, p.total, p.last_answer or ""]
            for p in StudyStore(home).progress(code)]


def study_results(home: Path, code: str, export_dir: Path | None = None) -> tuple[list[list], go.Figure, list[str]]:
    """Summary rows (RESULT_HEADERS), the chart, and paths of CSV/JSON exports to download.

    Exports go to a fresh temporary folder unless ``export_dir`` is given.
    """
    store = StudyStore(home)
    info = store.get(code)
    answers = store.answers(info.code)
    results = summarize(info, answers)
    out = Path(export_dir) if export_dir else Path(tempfile.mkdtemp(prefix="recap-study-"))
    files = [write_csv(summary_rows(results), out / f"study-{info.code}-summary.csv"),
             write_csv(answer_table(info, answers), out / f"study-{info.code}-answers.csv"),
             write_json(info, results, answers, out / f"study-{info.code}.json")]
    rows = [[r.get(h, "") for h in RESULT_HEADERS] for r in summary_rows(results)]
    rows += [["rater", r.rater_id, r.name or "(anonymous)",
              f"{'excluded' if r.excluded else 'included'}: failed {r.failed} of {r.checks} checks", r.answered,
              "", "", "", ""] for r in results.raters]
    return rows, results_figure(results), [str(f) for f in files]


# -- wiring --------------------------------------------------------------------------------


def _user_errors(fn: Callable) -> Callable:
    """Shows bad input as a Gradio error with the message escaped (it can echo what was typed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:  # StudyError, AudioError
            raise gr.Error(html.escape(str(exc))) from exc

    return wrapper


def build_listen_tab(ctx: Any) -> None:
    """Adds the tab's components and events to the open Blocks/Tab context.

    Args:
        ctx: Anything with ``settings.home`` (or ``home``): the RECAP_HOME folder.
    """
    home = _home(ctx)
    scale_keys = list(SCALES)

    gr.Markdown("Blind listening studies. Clips are loudness-matched; labels are hidden and the order and "
                "A/B sides are shuffled for each rater.")
    rater_state = gr.State(None)
    with gr.Accordion("Rate a study", open=True, elem_id="study-rater"):
        with gr.Row():
            code_box = gr.Textbox(label="Study code", placeholder="abcd-2345")
            name_box = gr.Textbox(label="Your name (optional)", max_length=80)
            resume_box = gr.Textbox(label="Resume code (optional)")
            open_btn = gr.Button("Open study", variant="primary")
        status_md = gr.Markdown(elem_id="study-status")
        with gr.Group(visible=False, elem_id="study-trial") as trial_group:
            question_md = gr.Markdown()
            prompt_md = gr.Markdown()
            reference_audio = gr.Audio(label="Reference clip", type="filepath", interactive=False, buttons=[],
                                       visible=False)
            with gr.Row():
                audio_a = gr.Audio(label="A", type="filepath", interactive=False, buttons=[], elem_id="study-clip-a")
                audio_b = gr.Audio(label="B", type="filepath", interactive=False, buttons=[], elem_id="study-clip-b")
            choice = gr.Radio(list(AB_ANSWERS), label="Your answer", elem_id="study-choice")
            # Radio buttons with nothing preselected: a scale the rater did not touch is refused,
            # where a slider would silently store its starting value.
            sliders = {k: gr.Radio([(f"{i + 1} {a}", i + 1) for i, a in enumerate(SCALES[k].anchors)], value=None,
                                   label=f"{k}: {SCALES[k].question}") for k in scale_keys}
            comment_box = gr.Textbox(label="Comment (optional)", lines=2, max_length=4000)
            submit_btn = gr.Button("Submit", variant="primary")

    rater_outputs = [rater_state, status_md, trial_group, question_md, prompt_md, reference_audio, audio_a,
                     audio_b, choice, *sliders.values(), comment_box]

    def render(view: RaterView) -> list:
        shown, ab = view.kind is not None, view.kind == "ab"
        keys = {s.key for s in view.scales}
        return [
            view.state, view.status, gr.update(visible=shown), view.question, view.prompt,
            gr.update(value=view.reference, visible=bool(view.reference)),
            gr.update(value=view.clips[0] if shown else None, label="A" if ab else "Clip"),
            gr.update(value=view.clips[1] if ab else None, visible=ab),
            gr.update(value=None, visible=ab),
            *[gr.update(value=None, visible=k in keys) for k in scale_keys],
            "",
        ]

    @_user_errors
    def on_open(code, name, resume):
        return render(open_study(home, code, name, resume))

    @_user_errors
    def on_submit(state, choice_value, comment, *slider_values):
        return render(submit_answer(home, state, choice_value, dict(zip(scale_keys, slider_values)), comment))

    # Raters never wait on each other or on GPU jobs: SQLite (WAL, busy timeout) takes concurrent
    # writers, and each answer is idempotent by its id.
    open_btn.click(on_open, [code_box, name_box, resume_box], rater_outputs, api_name="study_open",
                   concurrency_limit=RATER_CONCURRENCY)
    submit_btn.click(on_submit, [rater_state, choice, comment_box, *sliders.values()], rater_outputs,
                     api_name="study_submit", concurrency_limit=RATER_CONCURRENCY)

    def on_load(request: gr.Request):
        return code_from_query(request.query_params if request else {})

    gr.on(triggers=None, fn=on_load, inputs=None, outputs=[code_box], api_visibility="private")

    with gr.Accordion("Experimenter", open=False):
        with gr.Row():
            runs_dd = gr.Dropdown(label="Runs", multiselect=True, choices=[])
            refresh_btn = gr.Button("Refresh lists")
        with gr.Row():
            kind_radio = gr.Radio([("A/B preference", "ab"), ("Ratings 1-5", "rating")], value="ab", label="Type")
            title_box = gr.Textbox(label="Title shown to raters")
        pairs_box = gr.Textbox(label="A/B pairs (one per line, e.g. baseline:reword-1a or RUN/label:RUN2/label)",
                               lines=2)
        questions_box = gr.Textbox(label="A/B questions (one per line)", lines=2,
                                   value="Which better matches the prompt?")
        items_box = gr.Textbox(label="Variants to rate (one per line; empty = all)", lines=2)
        scales_cb = gr.CheckboxGroup(scale_keys, value=scale_keys, label="Rating scales")
        with gr.Row():
            prompt_box = gr.Textbox(label="Prompt shown (empty = the run's baseline prompt)")
            hide_cb = gr.Checkbox(label="Hide the prompt")
        reference_in = gr.Audio(label="Reference clip (optional)", type="filepath", sources=["upload"])
        with gr.Row():
            repeats_n = gr.Number(1, precision=0, minimum=0, label="Repeated items")
            checks_n = gr.Number(1, precision=0, minimum=0, label="Obvious-answer checks")
            fails_n = gr.Number(0, precision=0, minimum=0, label="Failed checks allowed")
        create_btn = gr.Button("Create study", variant="primary")
        create_md = gr.Markdown(elem_id="study-created")
        with gr.Row():
            study_dd = gr.Dropdown(label="Study", choices=[])
            progress_btn = gr.Button("Progress")
            results_btn = gr.Button("Results")
        progress_df = gr.Dataframe(headers=PROGRESS_HEADERS, interactive=False, elem_id="study-progress")
        results_df = gr.Dataframe(headers=RESULT_HEADERS, interactive=False, elem_id="study-results")
        results_plot = gr.Plot()
        downloads = gr.File(label="Downloads (CSV, JSON)", file_count="multiple", interactive=False)

    def on_refresh():
        return gr.update(choices=run_choices(home)), gr.update(choices=study_choices(home))

    @_user_errors
    def on_create(*args):
        message, code = create_study(home, *args)
        return message, gr.update(choices=study_choices(home), value=code)

    @_user_errors
    def on_progress(code):
        return progress_table(home, code or "")

    @_user_errors
    def on_results(code):
        return study_results(home, code or "")

    refresh_btn.click(on_refresh, None, [runs_dd, study_dd], api_visibility="private")
    create_btn.click(on_create, [runs_dd, kind_radio, pairs_box, items_box, questions_box, scales_cb, reference_in,
                                 prompt_box, hide_cb, repeats_n, checks_n, fails_n, title_box],
                     [create_md, study_dd], api_visibility="private")
    progress_btn.click(on_progress, study_dd, progress_df, api_visibility="private")
    results_btn.click(on_results, study_dd, [results_df, results_plot, downloads], api_visibility="private")
    gr.on(triggers=None, fn=on_refresh, inputs=None, outputs=[runs_dd, study_dd], api_visibility="private")
