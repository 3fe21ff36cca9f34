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
from recap.study.stats import answer_table, results_figure, summarize, summary_rows, write_csv, write_json
from recap.study.store import SCALES, StudyConfig, StudyError, StudyStore
from recap.ui.common import user_errors
from recap.ui.jobs import SessionJobs

__all__ = ["ExperimenterGate", "Unlock", "run_choices", "create_study", "study_choices", "progress_table",
           "study_results", "build_experimenter", "OFF_TEXT"]

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


def _lines(name: str, value: str | None) -> list[str]:
    value = text(name, value, MAX_LIST_CHARS)
    return [s.strip() for s in re.split(r"[\n,]", value) if s.strip()]


def _count(value: Any) -> Any:
    # An emptied number box arrives as None: 0. Anything else goes to StudyConfig.validate as sent,
    # so 2.5, -1, NaN or 10**9 are refused there with a sentence rather than silently rounded.
    return 0 if value is None or value == "" else value


def create_study(home: Path, run_ids: list[str] | None, kind: str, pairs: str = "", items: str = "",
                 questions: str = "", scales: list[str] | None = None, reference: str | None = None,
                 prompt: str = "", hide_prompt: bool = False, repeats: Any = 1, checks: Any = 1,
                 max_failed_checks: Any = 0, name: str = "", conditions: str = "", reference_variant: str = "",
                 must_play: bool = False, completion_code: str = "", redirect_url: str = "") -> tuple[str, str]:
    """Creates a study; returns (message in Markdown, study code).

    ``pairs`` and ``items`` are comma- or line-separated ("baseline:reword-1a"); ``questions``
    one per line. Runs are given by id (never by path: a path is for the owner's CLI).
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
                         reference_variant=text("the reference variant", reference_variant, 200).strip() or None
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
               f"or a link to this page ending in `?study={info.code}`.")
    return message, info.code


def study_choices(home: Path) -> list[tuple[str, str]]:
    """(label, code) of every study, newest first."""
    return [(f"{info.code} — {info.config.kind} {info.config.name} ({raters} raters, {answers} answers)", info.code)
            for info, raters, answers in StudyStore(home).studies()]


def progress_table(home: Path, code: str) -> list[list]:
    """One row per rater: pseudonym (never the resume code), name, answered, total, last answer time."""
    return [[p.rater, p.name or "(anonymous)", p.answered, p.total, p.last_answer or ""]
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
    rows += [["rater", r.rater, r.name or "(anonymous)",
              f"{'excluded' if r.excluded else 'included'}: failed {r.failed} of {r.checks} checks", r.answered,
              "", "", "", ""] for r in results.raters]
    return rows, results_figure(results), [str(f) for f in files]


def _export_folder(jobs: Any) -> Path:
    base = jobs.scratch if isinstance(jobs, SessionJobs) else None
    return Path(tempfile.mkdtemp(prefix="study-", dir=base))


def build_experimenter(home: Path, gate: ExperimenterGate, jobs: gr.State) -> None:
    """The experimenter panel: behind the password when there is one; every handler asks the gate."""
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
        pairs_box = gr.Textbox(label="A/B pairs (one per line, e.g. baseline:reword-1a or RUN/label:RUN2/label)",
                               lines=2)
        questions_box = gr.Textbox(label="A/B questions (one per line)", lines=2,
                                   value="Which better matches the prompt?")
        items_box = gr.Textbox(label="Variants to rate (one per line; empty = all)", lines=2)
        scales_cb = gr.CheckboxGroup(scale_keys, value=scale_keys, label="Rating scales")
        with gr.Row():
            mushra_ref_box = gr.Textbox(label="MUSHRA reference variant (e.g. baseline)", max_length=200)
            conditions_box = gr.Textbox(label="MUSHRA conditions (one per line)", lines=2)
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
        with gr.Row():
            study_dd = gr.Dropdown(label="Study", choices=[])
            progress_btn = gr.Button("Progress")
            results_btn = gr.Button("Results")
        progress_df = gr.Dataframe(headers=PROGRESS_HEADERS, interactive=False, elem_id="study-progress")
        results_df = gr.Dataframe(headers=RESULT_HEADERS, interactive=False, elem_id="study-results")
        results_plot = gr.Plot()
        downloads = gr.File(label="Downloads (CSV, JSON)", file_count="multiple", interactive=False)

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

    @user_errors
    def on_create(unlock, *args):
        gate.require(unlock)
        message, code = create_study(home, *args)
        return message, gr.update(choices=study_choices(home), value=code)

    @user_errors
    def on_progress(unlock, code):
        gate.require(unlock)
        return progress_table(home, code or "")

    @user_errors
    def on_results(unlock, jobs_, code):
        gate.require(unlock)
        return study_results(home, code or "", export_dir=_export_folder(jobs_))

    refresh_btn.click(on_refresh, unlock_state, [runs_dd, study_dd], api_visibility="private")
    create_btn.click(on_create, [unlock_state, runs_dd, kind_radio, pairs_box, items_box, questions_box, scales_cb,
                                 reference_in, prompt_box, hide_cb, repeats_n, checks_n, fails_n, title_box,
                                 conditions_box, mushra_ref_box, must_play_cb, completion_box, redirect_box],
                     [create_md, study_dd], api_visibility="private")
    progress_btn.click(on_progress, [unlock_state, study_dd], progress_df, api_visibility="private")
    results_btn.click(on_results, [unlock_state, jobs, study_dd], [results_df, results_plot, downloads],
                      api_visibility="private")
    gr.on(triggers=None, fn=on_page_load, inputs=None, outputs=[runs_dd, study_dd], api_visibility="private")

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
