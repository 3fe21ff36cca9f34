"""The experimenter's side of a listening study: create studies, follow progress, read results.

Who is an experimenter is decided in one place, :class:`ExperimenterGate`, from the owner's
settings: on a local server without a password everyone at the machine is; with
``RECAP_EXPERIMENTER_PASSWORD`` set, a browser session that typed it is (a flag in a server-side
``gr.State``, never a value the client sends); on a public server without a password nobody is,
and the panel says how the owner turns it on. Every experimenter handler asks the gate itself, so
an event called straight through Gradio's queue is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from recap.errors import BadInput
from recap.generation.runs import list_runs
from recap.limits import LIMITS, text
from recap.study.items import MAX_TITLE_CHARS
from recap.analysis.figures import save_figure
from recap.study.stats import (
    StudyResults,
    answer_table,
    empty_reason,
    results_figure,
    summarize,
    summary_rows,
    write_csv,
    write_json,
)
from recap.study.store import SCALES, StudyConfig, StudyError, StudyStore
from recap.ui.common import user_errors
from recap.ui.jobs import SessionJobs

__all__ = ["ExperimenterGate", "Unlock", "run_choices", "variant_labels", "pairs_text", "builder_visibility",
           "create_study", "study_choices", "progress_table", "study_results", "results_note", "build_experimenter",
           "OFF_TEXT", "TYPE_HELP"]

PROGRESS_HEADERS = ["rater", "name", "answered", "of", "last answer (UTC)"]
RESULT_HEADERS = ["section", "question", "condition", "answer", "n", "count", "value", "low", "high"]
# A pairs, variants or questions box before it is split into lines (each line is bounded again
# by StudyConfig.validate); generous for 500 pairs.
MAX_LIST_CHARS = 64_000
_RUN_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")  # a run id, never a path


# -- roles ---------------------------------------------------------------------------------

OFF_TEXT = (
    "Experimenter functions are **off** on this public server: no experimenter password is set. "
    "The owner turns them on by setting `RECAP_EXPERIMENTER_PASSWORD` (on a Hugging Face Space: "
    "*Settings → Variables and secrets → New secret*) and restarting; studies can always be made "
    "with `recap study create` on the server itself.")
LOCKED_TEXT = ("That is an experimenter function: type the experimenter password in the Experimenter panel "
               "first (it unlocks this browser tab only).")
# Wrong passwords a session may type before it must wait, the first wait (doubled by every further
# wrong one, up to the cap), and how many wrong ones all sessions together may send in a window:
# a new session costs a stranger nothing, so only the server-wide bound stops guessing.
FREE_TRIES = 3
FIRST_WAIT_S = 30.0
MAX_WAIT_S = 900.0
SERVER_FAILURES = 20
SERVER_WINDOW_S = 600.0
MAX_PASSWORD_CHARS = 1024


@dataclass(frozen=True)
class Unlock:
    """One browser session's standing with the experimenter gate (kept in a server-side gr.State).

    Attributes:
        unlocked: The session typed the right password.
        failures: Wrong passwords typed in this session.
        retry_at: No try is looked at before this time (seconds since the epoch).
    """

    unlocked: bool = False
    failures: int = 0
    retry_at: float = 0.0


class ExperimenterGate:
    """Who may use the experimenter functions of one app: the only place that decides it.

    Args:
        mode: ``Settings.experimenter_access``: "open" (everyone: a local server without a
            password), "password" (sessions that typed ``password``), "off" (nobody).
        password: The owner's secret; only compared (by digest, in constant time), never shown.

    The gate also counts wrong passwords from all sessions together (one gate per app, shared by
    its sessions like the loaded models, never a module global).
    """

    def __init__(self, mode: str, password: str | None = None) -> None:
        if mode not in ("open", "password", "off") or (mode == "password") != bool(password):
            raise ValueError(f"experimenter access {mode!r} does not fit the password setting")
        self.mode = mode
        self._digest = hashlib.sha256(password.encode()).digest() if password else b""
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()

    def __repr__(self) -> str:  # never the password or its digest
        return f"ExperimenterGate(mode={self.mode!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> ExperimenterGate:
        """The gate for ``settings`` (anything without the attributes is a local, open server)."""
        return cls(getattr(settings, "experimenter_access", "open"), getattr(settings, "experimenter_password", None))

    def allowed(self, unlock: Unlock | None) -> bool:
        """Whether a session in this standing may use experimenter functions."""
        return self.mode == "open" or (self.mode == "password" and isinstance(unlock, Unlock) and unlock.unlocked)

    def require(self, unlock: Unlock | None) -> None:
        """Raises :class:`BadInput` with the sentence to show unless the session may."""
        if self.allowed(unlock):
            return
        raise BadInput(LOCKED_TEXT if self.mode == "password" else "Experimenter functions are off on this server.")

    def try_password(self, unlock: Unlock | None, password: Any, now: float | None = None) -> tuple[Unlock, str]:
        """Checks a typed password; returns the session's new standing and a sentence for it.

        A session that is waiting, or any session while the server has seen too many wrong
        passwords lately, is told to wait and its password is not even compared.
        """
        now = time.time() if now is None else now
        unlock = unlock if isinstance(unlock, Unlock) else Unlock()
        if self.mode != "password":
            return unlock, "" if self.mode == "open" else OFF_TEXT
        if unlock.unlocked:
            return unlock, "Unlocked."
        if now < unlock.retry_at:
            return unlock, f"Too many wrong passwords in this tab: try again in {unlock.retry_at - now:.0f} s."
        with self._lock:
            while self._failures and self._failures[0] <= now - SERVER_WINDOW_S:
                self._failures.popleft()
            if len(self._failures) >= SERVER_FAILURES:
                wait = self._failures[0] + SERVER_WINDOW_S - now
                return unlock, f"Too many wrong passwords on this server lately: try again in {wait / 60:.0f} min."
            if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_CHARS:
                return unlock, "Type the experimenter password."
            if hmac.compare_digest(hashlib.sha256(password.encode()).digest(), self._digest):
                return Unlock(unlocked=True), "Unlocked: the experimenter functions below work in this tab."
            self._failures.append(now)
        failures = unlock.failures + 1
        wait = 0.0 if failures < FREE_TRIES else min(MAX_WAIT_S, FIRST_WAIT_S * 2 ** (failures - FREE_TRIES))
        return Unlock(False, failures, now + wait), "Wrong password." + (
            f" Wait {wait:.0f} s before the next try." if wait else "")



def run_choices(home: Path) -> list[tuple[str, str]]:
    """(label, run id) of every run, newest first, for a dropdown."""
    out = []
    for run in list_runs(Path(home) / "runs"):
        labels = ", ".join(v["label"] for v in run.variants)
        out.append((f"{run.run_id} — {labels} ({len(run.clips)} clips)", run.run_id))
    return out


def variant_labels(home: Path, run_ids: Any) -> list[str]:
    """The variant labels of the chosen runs, in run order (each once), for the builder's pickers.

    Unknown or malformed run ids are skipped: the list only offers what exists, and the study's
    own check still refuses a label the runs lack.
    """
    wanted = [r for r in (run_ids or []) if isinstance(r, str) and _RUN_ID.match(r)] if isinstance(run_ids, list) else []
    runs = {run.run_id: run for run in list_runs(Path(home) / "runs")}
    return list(dict.fromkeys(v["label"] for r in wanted if r in runs for v in runs[r].variants))


def pairs_text(against: Any, variants: Any) -> str:
    """The pairs box's text for "each ticked variant against ``against``" (one pair a line)."""
    if not isinstance(against, str) or not against or not isinstance(variants, list):
        return ""
    return "\n".join(f"{against}:{v}" for v in variants if isinstance(v, str) and v and v != against)


# What each type asks of raters and what its answers mean, shown beside the type picker.
TYPE_HELP = {
    "ab": ("**A/B preference** (the personalisation paper's Table 2): two clips of the same seed, sides "
           "shuffled per rater; raters answer *A*, *B*, *None* (neither fits the question) or *Cannot decide* "
           "(both fit equally). Build pairs by picking the variant everything is compared against and "
           "ticking the others."),
    "rating": ("**Ratings 1-5** (DreamAudio): one clip at a time on *OVL* (overall quality: bad … excellent) "
               "and *REL* (relevance to the prompt or reference clip: not at all … completely)."),
    "mushra": ("**MUSHRA** (ITU-R BS.1534): the reference and, on one screen, the conditions, a hidden copy "
               "of the reference and 3.5/7 kHz low-pass anchors, each scored 0-100. Raters who score the "
               "hidden reference below 90 in more than 15 % of trials are post-screened out."),
    "abx": ("**ABX**: A, B and X, where X is A or B; raters say which. A share correct near 50 % means the "
            "two variants cannot be told apart. Build pairs as for A/B."),
}


def builder_visibility(kind: Any) -> dict[str, bool]:
    """Which builder fields a study type uses (the rest are hidden, not ignored silently)."""
    return {"pairs": kind in ("ab", "abx"), "questions": kind == "ab", "items": kind == "rating",
            "scales": kind == "rating", "mushra": kind == "mushra", "checks": kind in ("ab", "rating"),
            "reference_clip": kind in ("ab", "rating")}


def _lines(name: str, value: str | None) -> list[str]:
    if isinstance(value, list):  # a checkbox group's ticks
        value = "\n".join(v for v in value if isinstance(v, str))
    value = text(name, value, MAX_LIST_CHARS)
    return [s.strip() for s in re.split(r"[\n,]", value) if s.strip()]


def _count(value: Any) -> Any:
    # An emptied number box arrives as None: 0. Anything else goes to StudyConfig.validate as sent,
    # so 2.5, -1, NaN or 10**9 are refused there with a sentence rather than silently rounded.
    return 0 if value is None or value == "" else value


def create_study(home: Path, run_ids: list[str] | None, kind: str, pairs: str = "", items: str | list[str] = "",
                 questions: str = "", scales: list[str] | None = None, reference: str | None = None,
                 prompt: str = "", hide_prompt: bool = False, repeats: Any = 1, checks: Any = 1,
                 max_failed_checks: Any = 0, name: str = "", conditions: str | list[str] = "",
                 reference_variant: str | None = "",
                 must_play: bool = False, completion_code: str = "", redirect_url: str = "") -> tuple[str, str]:
    """Creates a study; returns (message in Markdown, study code).

    ``pairs`` and ``items`` are comma- or line-separated ("baseline:reword-1a"), ``items`` and
    ``conditions`` may also be a checkbox group's list; ``questions`` one per line. Runs are given
    by id (never by path: a path is for the owner's CLI).
    """
    if not run_ids:
        raise StudyError("choose at least one run")
    if not isinstance(run_ids, list) or not all(isinstance(r, str) and _RUN_ID.match(r) for r in run_ids):
        raise StudyError("choose runs from the list")
    mushra = kind == "mushra"
    config = StudyConfig(kind=kind, name=text("the title", name, MAX_TITLE_CHARS).strip(),
                         pairs=_lines("the pairs", pairs), items=_lines("the variants", items),
                         reference=reference or None,
                         prompt=text("the prompt", prompt, LIMITS.text_chars).strip() or None,
                         hide_prompt=bool(hide_prompt), repeats=_count(repeats), checks=_count(checks),
                         max_failed_checks=_count(max_failed_checks),
                         conditions=_lines("the MUSHRA conditions", conditions) if mushra else [],
                         reference_variant=text("the reference variant", reference_variant or "", 200).strip() or None
                         if mushra else None, must_play=bool(must_play),
                         completion_code=text("the completion code", completion_code, 200).strip() or None,
                         redirect_url=text("the redirect URL", redirect_url, 4000).strip() or None)
    if kind in ("mushra", "abx"):
        config.checks = 0  # their own checks: the hidden reference; right or wrong answers
    question_list = [q.strip() for q in text("the questions", questions, MAX_LIST_CHARS).splitlines() if q.strip()]
    if question_list:
        config.questions = question_list
    if scales:
        config.scales = list(scales)
    info = StudyStore(home).create(config, run_ids)
    tests = sum(i.role == "test" for i in info.items)
    message = (f"Created study `{info.code}`: {tests} items + {len(info.items) - tests} attention checks, "
               f"{config.repeats} repeated per rater. Raters open it with the code `{info.code}` "
               f"or the link below (this page's address ending in `?study={info.code}`).")
    return message, info.code


def study_choices(home: Path) -> list[tuple[str, str]]:
    """(label, code) of every study, newest first."""
    return [(f"{info.code} — {info.config.kind} {info.config.name} ({raters} raters, {answers} answers)", info.code)
            for info, raters, answers in StudyStore(home).studies()]


def progress_table(home: Path, code: str) -> list[list]:
    """One row per rater: pseudonym (never the resume code), name, answered, total, last answer time."""
    return [[p.rater, p.name or "(anonymous)", p.answered, p.total, p.last_answer or ""]
            for p in StudyStore(home).progress(code)]


def results_note(results: StudyResults) -> str:
    """What the results page says above the table: the rules applied and what each excluded, or
    why there is nothing to show."""
    reason = empty_reason(results)
    if not results.rules_applied:
        rules = "**No exclusion rules applied**: every rater is kept, no post-screening."
    else:
        excluded = ", ".join(f"{n} by *{rule}*" for rule, n in results.excluded_by.items())
        rules = f"Raters excluded: {excluded or 'none'}. Untick *Apply the exclusion rules* to see every rater."
    return f"**{reason}**\n\n{rules}" if reason else rules


def study_results(home: Path, code: str, export_dir: Path | None = None,
                  apply_rules: bool = True) -> tuple[list[list], go.Figure, list[str], str]:
    """Summary rows (RESULT_HEADERS), the chart, paths of the exports to download (CSV and JSON,
    and the chart as PNG and SVG for a paper), and the note on exclusions.

    Exports go to a fresh temporary folder unless ``export_dir`` is given.
    """
    store = StudyStore(home)
    info = store.get(code)
    answers = store.answers(info.code)
    results = summarize(info, answers, apply_rules=apply_rules is not False)
    out = Path(export_dir) if export_dir else Path(tempfile.mkdtemp(prefix="recap-study-"))
    stem = f"study-{info.code}" + ("" if results.rules_applied else "-no-rules")
    figure = results_figure(results)
    files = [write_csv(summary_rows(results), out / f"{stem}-summary.csv"),
             write_csv(answer_table(info, answers), out / f"study-{info.code}-answers.csv"),
             write_json(info, results, answers, out / f"{stem}.json"),
             *[f for f in save_figure(figure, out / f"{stem}-figure", static=True) if f.suffix in (".png", ".svg")]]
    rows = [[r.get(h, "") for h in RESULT_HEADERS] for r in summary_rows(results)]
    rows += [["rater", r.rater, r.name or "(anonymous)",
              f"{'excluded' if r.excluded else 'included'}: failed {r.failed} of {r.checks} checks, "
              f"changed {r.inconsistent} of {r.repeats} repeats", r.answered, "", "", "", ""] for r in results.raters]
    return rows, figure, [str(f) for f in files], results_note(results)


def _export_folder(jobs: Any) -> Path:
    base = jobs.scratch if isinstance(jobs, SessionJobs) else None
    return Path(tempfile.mkdtemp(prefix="study-", dir=base))


def build_experimenter(home: Path, gate: ExperimenterGate, jobs: gr.State, refresh_on: list | None = None) -> None:
    """The experimenter panel: behind the password when there is one; every handler asks the gate.

    ``refresh_on`` are event triggers (e.g. the panel's opening) on which the run and study lists
    are read again, so a run made a moment ago on another tab is there without *Refresh*.
    """
    scale_keys = list(SCALES)
    unlock_state = gr.State(Unlock())
    if gate.mode == "password":
        with gr.Row() as login_row:
            password_box = gr.Textbox(label="Experimenter password", type="password",
                                      max_length=MAX_PASSWORD_CHARS, elem_id="study-password")
            unlock_btn = gr.Button("Unlock")
        unlock_md = gr.Markdown(elem_id="study-unlock")
    with gr.Column(visible=gate.mode == "open") as controls:
        with gr.Row():
            runs_dd = gr.Dropdown(label="Runs", multiselect=True, choices=[])
            refresh_btn = gr.Button("Refresh lists")
        with gr.Row():
            kind_radio = gr.Radio([("A/B preference", "ab"), ("Ratings 1-5", "rating"), ("MUSHRA", "mushra"),
                                   ("ABX", "abx")], value="ab", label="Type")
            title_box = gr.Textbox(label="Title shown to raters", max_length=MAX_TITLE_CHARS)
        type_md = gr.Markdown(TYPE_HELP["ab"], elem_id="study-type-help")
        with gr.Group() as pairs_group:
            with gr.Row():
                against_dd = gr.Dropdown(label="Compare against", choices=[], scale=1)
                others_cb = gr.CheckboxGroup([], label="… each of these variants (fills the pairs below)", scale=3)
            pairs_box = gr.Textbox(label="A/B pairs (one per line, e.g. baseline:reword-1a or RUN/label:RUN2/label)",
                                   lines=2)
        questions_box = gr.Textbox(label="A/B questions (one per line)", lines=2,
                                   value="Which better matches the prompt?")
        items_box = gr.CheckboxGroup([], label="Variants to rate (none ticked = all)", visible=False)
        scales_cb = gr.CheckboxGroup(scale_keys, value=scale_keys, label="Rating scales", visible=False)
        with gr.Row(visible=False) as mushra_row:
            mushra_ref_box = gr.Dropdown(label="MUSHRA reference variant (e.g. baseline)", choices=[])
            conditions_box = gr.CheckboxGroup([], label="MUSHRA conditions (rated beside the reference)")
        with gr.Row():
            must_play_cb = gr.Checkbox(label="Play each clip to the end before answering")
            completion_box = gr.Textbox(label="Completion code shown at the end (Prolific / MTurk)", max_length=64)
            redirect_box = gr.Textbox(label="Redirect URL at the end (http/https)", max_length=2000)
        with gr.Row():
            prompt_box = gr.Textbox(label="Prompt shown (empty = the run's baseline prompt)",
                                    max_length=LIMITS.text_chars)
            hide_cb = gr.Checkbox(label="Hide the prompt")
        reference_in = gr.Audio(label="Reference clip (optional)", type="filepath", sources=["upload"])
        with gr.Row():
            # No bounds on the boxes themselves: the study's own check refuses out-of-range
            # values with a sentence, for the web page, its queue and the CLI alike.
            repeats_n = gr.Number(1, label=f"Repeated items (0-{LIMITS.study_repeats})")
            checks_n = gr.Number(1, label=f"Obvious-answer checks (0-{LIMITS.study_checks})")
            fails_n = gr.Number(0, label="Failed checks allowed")
        create_btn = gr.Button("Create study", variant="primary")
        create_md = gr.Markdown(elem_id="study-created")
        created_code = gr.Textbox(visible=False)
        # Built in the page from its own address, so the link is the one the experimenter sees
        # (behind a Space's proxy too), never a Host header a client could forge.
        link_box = gr.Textbox(label="Study link for raters", interactive=False, buttons=["copy"],
                              elem_id="study-link", placeholder="Create a study: its link appears here")
        with gr.Row():
            study_dd = gr.Dropdown(label="Study", choices=[])
            progress_btn = gr.Button("Progress")
            results_btn = gr.Button("Results")
            rules_cb = gr.Checkbox(True, label="Apply the exclusion rules")
        progress_df = gr.Dataframe(headers=PROGRESS_HEADERS, interactive=False, elem_id="study-progress")
        results_md = gr.Markdown(elem_id="study-results-note")
        results_df = gr.Dataframe(headers=RESULT_HEADERS, interactive=False, elem_id="study-results")
        results_plot = gr.Plot()
        downloads = gr.File(label="Downloads (CSV, JSON, figure PNG/SVG)", file_count="multiple", interactive=False)

    def lists() -> tuple[Any, Any]:
        return gr.update(choices=run_choices(home)), gr.update(choices=study_choices(home))

    @user_errors
    def on_refresh(unlock):
        gate.require(unlock)
        return lists()

    def on_page_load():
        # A page that has just opened has unlocked nothing yet; silent: a page that may not see the
        # lists just gets none.
        return lists() if gate.allowed(None) else (gr.update(), gr.update())

    def on_open_panel(unlock):
        return lists() if gate.allowed(unlock) else (gr.update(), gr.update())

    @user_errors
    def on_create(unlock, *args):
        gate.require(unlock)
        message, code = create_study(home, *args)
        return message, gr.update(choices=study_choices(home), value=code), code

    def on_runs(unlock, run_ids):
        # Silent for a locked session: it may not see the runs, so it gets no labels.
        labels = variant_labels(home, run_ids) if gate.allowed(unlock) else []
        first = labels[0] if labels else None
        rest = labels[1:]
        return (gr.update(choices=labels, value=first), gr.update(choices=rest, value=rest),
                gr.update(choices=labels, value=[]), gr.update(choices=labels, value=first),
                gr.update(choices=rest, value=rest), pairs_text(first, rest))

    def on_kind(kind):
        shown = builder_visibility(kind)
        return (TYPE_HELP.get(kind, ""), gr.update(visible=shown["pairs"]), gr.update(visible=shown["questions"]),
                gr.update(visible=shown["items"]), gr.update(visible=shown["scales"]),
                gr.update(visible=shown["mushra"]), gr.update(visible=shown["reference_clip"]),
                gr.update(visible=shown["checks"]))

    @user_errors
    def on_progress(unlock, code):
        gate.require(unlock)
        return progress_table(home, code or "")

    @user_errors
    def on_results(unlock, jobs_, code, apply_rules):
        gate.require(unlock)
        return study_results(home, code or "", export_dir=_export_folder(jobs_), apply_rules=apply_rules is not False)

    refresh_btn.click(on_refresh, unlock_state, [runs_dd, study_dd], api_visibility="private")
    create_btn.click(on_create, [unlock_state, runs_dd, kind_radio, pairs_box, items_box, questions_box, scales_cb,
                                 reference_in, prompt_box, hide_cb, repeats_n, checks_n, fails_n, title_box,
                                 conditions_box, mushra_ref_box, must_play_cb, completion_box, redirect_box],
                     [create_md, study_dd, created_code], api_visibility="private")
    created_code.change(None, created_code, link_box, api_visibility="private",
                        js="(code) => code ? window.location.origin + window.location.pathname + "
                           "'?study=' + encodeURIComponent(code) : ''")
    runs_dd.change(on_runs, [unlock_state, runs_dd],
                   [against_dd, others_cb, items_box, mushra_ref_box, conditions_box, pairs_box],
                   api_visibility="private")
    builder = {"fn": pairs_text, "inputs": [against_dd, others_cb],
               "outputs": pairs_box, "api_visibility": "private", "queue": False}
    against_dd.input(**builder)
    others_cb.input(**builder)
    kind_radio.change(on_kind, kind_radio, [type_md, pairs_group, questions_box, items_box, scales_cb, mushra_row,
                                            reference_in, checks_n], api_visibility="private", queue=False)
    progress_btn.click(on_progress, [unlock_state, study_dd], progress_df, api_visibility="private")
    results_btn.click(on_results, [unlock_state, jobs, study_dd, rules_cb],
                      [results_df, results_plot, downloads, results_md], api_visibility="private")
    gr.on(triggers=None, fn=on_page_load, inputs=None, outputs=[runs_dd, study_dd], api_visibility="private")
    if refresh_on:
        gr.on(triggers=refresh_on, fn=on_open_panel, inputs=unlock_state, outputs=[runs_dd, study_dd],
              api_visibility="private", show_progress="hidden")

    if gate.mode == "password":
        def on_unlock(unlock, password):
            # Returns (never raises) on a wrong password, so the count of wrong tries is kept.
            unlock, message = gate.try_password(unlock, password)
            runs, studies = lists() if gate.allowed(unlock) else (gr.update(), gr.update())
            return (unlock, message, "", gr.update(visible=not unlock.unlocked),
                    gr.update(visible=unlock.unlocked), runs, studies)

        unlock_outputs = [unlock_state, unlock_md, password_box, login_row, controls, runs_dd, study_dd]
        unlock_btn.click(on_unlock, [unlock_state, password_box], unlock_outputs, api_visibility="private")
        password_box.submit(on_unlock, [unlock_state, password_box], unlock_outputs, api_visibility="private")
