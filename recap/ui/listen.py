"""The "Listen & rate" tab: raters take blind studies; experimenters create and follow them.

Roles (DESIGN.md, "Roles"): a **rater** needs only a study code or link and sees one study,
blind, and resumes with their own secret resume code; the **experimenter** creates studies and
reads progress and results. Who is an experimenter is decided in one place,
:class:`ExperimenterGate`, from the owner's settings: on a local server without a password
everyone at the machine is; with ``RECAP_EXPERIMENTER_PASSWORD`` set, a browser session that typed
it is (a flag in a server-side ``gr.State``, never a value the client sends); on a public server
without a password nobody is, and the panel says how the owner turns it on. Every experimenter
handler asks the gate itself, so an event called straight through Gradio's queue is refused too.

Raters are handed fresh copies of the listening copies under random names (the study folder is
never served), so no file name, URL or byte tells a clip's condition or links two raters' clips.

Pure handlers first (plain values in and out, testable without a browser), Blocks wiring after.
Each rater's place in a study lives in a ``gr.State``; everything else is in the study database,
so a reload or a server restart loses nothing: the rater opens the study again with their code.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import gradio as gr
import plotly.graph_objects as go

from recap.errors import BadInput
from recap.limits import LIMITS, text, whole
from recap.generation.runs import list_runs
from recap.study.store import (
    AB_ANSWERS,
    ABX_ANSWERS,
    SCALES,
    Scale,
    ShownTrial,
    StudyConfig,
    IncompleteAnswer,
    StudyError,
    StudyStore,
    normalize_code,
)
from recap.study.items import MAX_MUSHRA_CONDITIONS, MAX_TITLE_CHARS, rater_copy
from recap.study.stats import (
    answer_table,
    results_figure,
    summarize,
    summary_rows,
    write_csv,
    write_json,
)
from recap.ui.common import md_text, user_errors
from recap.ui.jobs import SessionJobs, close_session

__all__ = ["ExperimenterGate", "Unlock", "RaterView", "open_study", "submit_answer", "log_play", "device_class",
           "code_from_query",
           "run_choices", "create_study", "study_choices", "progress_table", "study_results", "md_text",
           "build_listen_tab", "ListenTab"]

RATER_CONCURRENCY = 16
PHONE_WIDTH = 768  # CSS pixels: narrower pages are phones
MAX_MUSHRA_CLIPS = MAX_MUSHRA_CONDITIONS + 3  # + the hidden reference and two anchors
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


# -- rater ---------------------------------------------------------------------------------


@dataclass
class RaterView:
    """What the rater section shows after an action.

    ``state`` goes back into the rater's gr.State (server-side: the browser never sees it);
    ``kind`` is None when there is no trial to show (nothing opened yet, or the study is
    finished); ``clips`` are this rater's copies in shown order (A, B; A, B, X; MUSHRA's 1..n),
    named by ``labels``.
    """

    state: dict | None
    status: str
    kind: str | None = None
    clips: list[str] = field(default_factory=list)
    reference: str | None = None
    question: str = ""
    prompt: str = ""
    scales: list[Scale] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    done: int = 0  # answered slots, for the progress bar
    total: int = 0


def _finished(home: Path, code: str) -> str:
    """The end of a study: thanks, the completion code, the experimenter's address to go on to."""
    config = StudyStore(home).get(code).config
    out = "\n\n**All done — thank you!**"
    if config.completion_code:
        out += f" Your completion code is `{config.completion_code}`."  # checked: letters, digits, _ -
    if config.redirect_url:
        out += f" [Continue here]({config.redirect_url}) to finish."  # checked: http(s), no <>"'` or spaces
    return out + " You can close this page." if not config.redirect_url else out


def _show(trial: ShownTrial | None, state: dict, status: str, home: Path | None = None) -> RaterView:
    # The previous trial's copies were handed to Gradio (which keeps its own) with the last
    # answer; this rater's folder holds only the copies on screen.
    for old in state.get("handed_out", []):
        Path(old).unlink(missing_ok=True)
    state = {**state, "slot": None, "answer_id": None, "shown_at": None, "scales": [], "handed_out": [],
             "labels": [], "kind": None}
    if trial is None:
        end = _finished(home, state["code"]) if home else "\n\n**All done — thank you!** You can close this page."
        return RaterView(state, status + end, done=state.get("total", 0), total=state.get("total", 0))
    folder = Path(state["folder"])
    clips = [str(rater_copy(c, folder)) for c in trial.clips]
    reference = str(rater_copy(trial.reference, folder)) if trial.reference else None
    # One answer id per shown trial: a double click or a retry resubmits the same id.
    state.update(slot=trial.slot, answer_id=uuid.uuid4().hex, shown_at=time.time(),
                 scales=[s.key for s in trial.scales], handed_out=clips + ([reference] if reference else []),
                 labels=list(trial.labels), kind=trial.kind, total=trial.total)
    title = f"**{md_text(trial.title)}** — " if trial.title else ""
    question = {"ab": trial.question, "rating": "Rate this clip on each scale.", "abx": trial.question,
                "mushra": "Rate each clip against the reference, 0 (bad) to 100 (excellent). One of them is the "
                          "reference itself."}[trial.kind]
    if trial.must_play:
        question += " Play every clip to the end before answering."
    done = StudyStore(home).answered(state["rater_id"]) if home else trial.slot
    return RaterView(
        state, f"{status}\n\n{title}item {trial.slot + 1} of {trial.total}", trial.kind, clips, reference,
        f"### {md_text(question)}", f"Prompt: *{md_text(trial.prompt)}*" if trial.prompt else "", trial.scales,
        list(trial.labels), done, trial.total)


def open_study(home: Path, code: str, name: str = "", resume_code: str = "",
               folder: Path | None = None) -> RaterView:
    """Joins a study as a new rater, or resumes with a resume code, and shows the first unanswered item.

    Args:
        folder: Where this rater's copies of the clips go (the session's scratch folder in the
            app); a fresh temporary folder when None.

    Raises:
        StudyError: unknown code, unknown resume code, bad name.
    """
    store = StudyStore(home)
    rater = store.join(code, name=name or None, rater_id=(resume_code or "").strip() or None)
    who = f"as **{md_text(rater.name)}**" if rater.name else "anonymously"
    # The code and resume code are made by recap from safe characters; shown raw inside code spans.
    status = (f"Study `{rater.code}` opened {who}. Your resume code is `{rater.rater_id}` — keep it to "
              "continue later, here or on another device (a name alone does not resume).")
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="recap-rater-"))
    state = {"code": rater.code, "rater_id": rater.rater_id, "folder": str(folder)}
    return _show(store.trial(rater.rater_id), state, status, home)


def submit_answer(home: Path, state: dict | None, choice: str | None, ratings: Mapping[str, Any] | None,
                  comment: str = "", now: float | None = None, scores: Mapping[str, Any] | None = None,
                  device: str | None = None) -> RaterView:
    """Stores the answer to the shown item and shows the next one.

    Args:
        state: The rater's state from :func:`open_study` / the previous submit.
        choice: A/B answer as shown (one of AB_ANSWERS), or an ABX answer (one of ABX_ANSWERS).
        ratings: 1-5 values by scale key; only the study's scales are used.
        now: Current time (seconds since the epoch) for the time taken; default time.time().
        scores: MUSHRA: 0-100 by shown clip name ("1".."n"); None for a slider not moved.
        device: "phone" or "desktop".

    Raises:
        StudyError, BadInput: nothing open, a scale left empty, a value out of range, a clip not
            played to the end where the study asks for it.
    """
    if not state or state.get("slot") is None:
        raise StudyError("open a study first (enter its code)")
    store = StudyStore(home)
    ratings_in = None
    if state["scales"]:
        missing = [k for k in state["scales"] if (ratings or {}).get(k) is None]
        if missing:
            raise IncompleteAnswer(f"rate the clip on {', '.join(missing)}")
        # The radio buttons send 1..5 (as floats from some clients); anything else is refused, not rounded.
        ratings_in = {k: whole(f"the {k} rating", ratings[k], 1, 5) for k in state["scales"]}
    elapsed = int(1000 * max(0.0, (now if now is not None else time.time()) - state["shown_at"]))
    mushra = state.get("kind") == "mushra"
    if choice is None and state.get("kind") in ("ab", "abx"):
        raise IncompleteAnswer(f"choose one of {', '.join(AB_ANSWERS if state['kind'] == 'ab' else ABX_ANSWERS)}")
    stored = store.submit(state["answer_id"], state["rater_id"], state["slot"],
                          choice=None if ratings_in or mushra else choice, ratings=ratings_in, comment=comment or "",
                          time_ms=elapsed, scores=dict(scores or {}) if mushra else None, device=device)
    status = "Saved." if stored else "That item was already answered (another window?) — moving on."
    return _show(store.trial(state["rater_id"]), state, status, home)


def log_play(home: Path, state: dict | None, clip: str, event: str) -> bool:
    """Logs a player's event (play, pause, end) of the shown trial; False when nothing is shown."""
    if not state or state.get("slot") is None:
        return False
    return StudyStore(home).play(state["rater_id"], state["slot"], str(clip)[:20], str(event)[:10])


def device_class(width: Any) -> str | None:
    """"phone" below 768 CSS pixels of page width, else "desktop"; None when the page sent none."""
    try:
        width = float(width)
    except (TypeError, ValueError):
        return None
    return None if not 0 < width < 100_000 else ("phone" if width < PHONE_WIDTH else "desktop")


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


# -- wiring --------------------------------------------------------------------------------


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
    scale_keys = list(SCALES)

    gr.Markdown("Blind listening studies. Clips are loudness-matched; labels are hidden and the order and "
                "A/B sides are shuffled for each rater.")
    rater_state = gr.State(None)
    touched_state = gr.State([])  # MUSHRA sliders this rater moved on the shown trial
    # Players without a drawn waveform: a rater must not answer by eye (blind means by ear only).
    no_waveform = gr.WaveformOptions(waveform_color="transparent", waveform_progress_color="transparent")

    def player(label: str, **kw) -> gr.Audio:
        return gr.Audio(label=label, type="filepath", interactive=False, buttons=[], waveform_options=no_waveform,
                        **kw)

    with gr.Accordion("Rate a study", open=True, elem_id="study-rater"):
        with gr.Row():
            code_box = gr.Textbox(label="Study code", placeholder="abcd-2345", max_length=20)
            name_box = gr.Textbox(label="Your name (optional)", max_length=80)
            resume_box = gr.Textbox(label="Resume code (optional)", max_length=64)
            open_btn = gr.Button("Open study", variant="primary")
        status_md = gr.Markdown(elem_id="study-status")
        resume_md = gr.Markdown(elem_id="study-resume")
        progress_bar = gr.HTML("", elem_id="study-progress-bar", js_on_load=None)
        with gr.Group(visible=False, elem_id="study-trial") as trial_group:
            question_md = gr.Markdown()
            prompt_md = gr.Markdown()
            reference_audio = player("Reference clip", visible=False, elem_id="study-reference")
            with gr.Row():
                audio_a = player("A", elem_id="study-clip-a")
                audio_b = player("B", elem_id="study-clip-b")
                audio_x = player("X", visible=False, elem_id="study-clip-x")
            stim_rows, stim_players, stim_sliders = [], [], []
            for k in range(MAX_MUSHRA_CLIPS):
                with gr.Row(visible=False, equal_height=True) as row:
                    stim_players.append(player(f"Clip {k + 1}", elem_id=f"study-stimulus-{k + 1}"))
                    # Starts at 0 but counts as unrated until moved: the server refuses an untouched slider.
                    stim_sliders.append(gr.Slider(0, 100, value=0, step=1, label=f"Score of clip {k + 1} (0-100)",
                                                  elem_id=f"study-score-{k + 1}"))
                stim_rows.append(row)
            choice = gr.Radio(list(AB_ANSWERS), label="Your answer", elem_id="study-choice")
            abx_radio = gr.Radio(list(ABX_ANSWERS), label="Which clip is X?", visible=False, elem_id="study-abx")
            # Radio buttons with nothing preselected: a scale the rater did not touch is refused,
            # where a slider would silently store its starting value.
            sliders = {k: gr.Radio([(f"{i + 1} {a}", i + 1) for i, a in enumerate(SCALES[k].anchors)], value=None,
                                   label=f"{k}: {SCALES[k].question}") for k in scale_keys}
            comment_box = gr.Textbox(label="Comment (optional)", lines=2, max_length=LIMITS.text_chars)
            answer_md = gr.Markdown(elem_id="study-answer-message")  # why an answer was refused, beside it
            width_box = gr.Number(value=None, visible=False, elem_id="study-width")
            submit_btn = gr.Button("Submit", variant="primary")
        # The play log's endpoint, called by the players' events (and by API clients as a browser's players would)
        play_clip = gr.Textbox(visible=False)
        play_event = gr.Textbox(visible=False)
        play_btn = gr.Button(visible=False)

    rater_outputs = [rater_state, status_md, trial_group, question_md, prompt_md, reference_audio, audio_a,
                     audio_b, choice, *sliders.values(), comment_box, resume_md, progress_bar, audio_x, abx_radio,
                     touched_state, answer_md, *stim_rows, *stim_players, *stim_sliders]

    def render(view: RaterView) -> list:
        shown, kind = view.kind is not None, view.kind
        ab, abx, mushra = kind == "ab", kind == "abx", kind == "mushra"
        keys = {s.key for s in view.scales}
        pair = ab or abx
        resume = (f"Your resume code: `{view.state['rater_id']}` (study `{view.state['code']}`)"
                  if view.state else "")
        bar = (f'<progress value="{int(view.done)}" max="{int(view.total)}" style="width:100%"></progress>'
               f'<div>{int(view.done)} of {int(view.total)} answered</div>') if view.total else ""
        n = len(view.clips) if mushra else 0
        return [
            view.state, view.status, gr.update(visible=shown), view.question, view.prompt,
            gr.update(value=view.reference, visible=bool(view.reference),
                      label="Reference" if mushra else "Reference clip"),
            gr.update(value=view.clips[0] if shown and not mushra else None, visible=shown and not mushra,
                      label="A" if pair else "Clip"),
            gr.update(value=view.clips[1] if pair else None, visible=pair),
            gr.update(value=None, visible=ab),
            *[gr.update(value=None, visible=k in keys) for k in scale_keys],
            "", resume, bar,
            gr.update(value=view.clips[2] if abx else None, visible=abx),
            gr.update(value=None, visible=abx),
            [], "",
            *[gr.update(visible=k < n) for k in range(MAX_MUSHRA_CLIPS)],
            *[gr.update(value=view.clips[k] if k < n else None) for k in range(MAX_MUSHRA_CLIPS)],
            *[gr.update(value=0) for _ in range(MAX_MUSHRA_CLIPS)],
        ]

    @user_errors
    def on_open(jobs_: SessionJobs, code, name, resume):
        return render(open_study(home, code, name, resume, folder=_rater_folder(jobs_)))

    @user_errors
    def on_submit(state, choice_value, comment, *rest):
        # An API client may leave out the inputs after the scales (the ABX, MUSHRA and page ones)
        rest = list(rest) + [None] * (len(scale_keys) + 3 + MAX_MUSHRA_CLIPS - len(rest))
        scale_values, (abx_value, width, touched), stim_values = (
            rest[:len(scale_keys)], rest[len(scale_keys):len(scale_keys) + 3], rest[len(scale_keys) + 3:])
        kind = (state or {}).get("kind")
        touched = set(touched or [])
        scores = {str(k + 1): (v if str(k + 1) in touched else None)
                  for k, v in enumerate(stim_values[:len((state or {}).get("labels", []))])}
        try:
            view = submit_answer(home, state, abx_value if kind == "abx" else choice_value,
                                 dict(zip(scale_keys, scale_values)), comment, scores=scores,
                                 device=device_class(width))
        except IncompleteAnswer as exc:
            # Said beside the answer; everything the rater set stays as it is.
            out = [gr.skip()] * len(rater_outputs)
            out[rater_outputs.index(answer_md)] = f"**{md_text(str(exc))}**"
            return out
        return render(view)

    def on_touch(touched, k):
        return sorted(set(touched or []) | {str(k + 1)})

    def on_play(state, clip, event):
        try:
            log_play(home, state, clip, event)
        except BadInput:
            pass  # a stray event (a player of an answered trial, a repeated end) changes nothing

    # Raters never wait on each other or on GPU jobs: SQLite (WAL, busy timeout) takes concurrent
    # writers, and each answer is idempotent by its id.
    open_btn.click(on_open, [jobs, code_box, name_box, resume_box], rater_outputs, api_name="study_open",
                   concurrency_limit=RATER_CONCURRENCY)
    submit_btn.click(on_submit, [rater_state, choice, comment_box, *sliders.values(), abx_radio, width_box,
                                 touched_state, *stim_sliders], rater_outputs, api_name="study_submit",
                     concurrency_limit=RATER_CONCURRENCY,
                     # the page's width tells a phone from a desktop (logged with the answer)
                     js="(...args) => { args[args.length - %d] = window.innerWidth; return args; }"
                        % (MAX_MUSHRA_CLIPS + 2))
    play_btn.click(on_play, [rater_state, play_clip, play_event], None, api_name="study_play",
                   concurrency_limit=RATER_CONCURRENCY, show_progress="hidden")
    for k, slider in enumerate(stim_sliders):
        slider.input(lambda touched, k=k: on_touch(touched, k), touched_state, touched_state,
                     api_visibility="private", show_progress="hidden", queue=False)

    def player_events(audio: gr.Audio, clip_of) -> None:
        for gradio_event, event in (("play", "play"), ("pause", "pause"), ("stop", "end")):
            getattr(audio, gradio_event)(lambda state, clip_of=clip_of, event=event: on_play(state, clip_of(state), event),
                                         rater_state, None, api_visibility="private", show_progress="hidden",
                                         concurrency_limit=RATER_CONCURRENCY)

    def shown_label(i: int):
        return lambda state: ((state or {}).get("labels") or ["", "", ""])[i] if i < len((state or {}).get("labels") or []) else ""

    for i, audio in enumerate((audio_a, audio_b, audio_x)):
        player_events(audio, shown_label(i))
    for k, audio in enumerate(stim_players):
        player_events(audio, lambda state, k=k: str(k + 1))
    player_events(reference_audio, lambda state: "reference")

    def on_load(request: gr.Request):
        return code_from_query(request.query_params if request else {})

    gr.on(triggers=None, fn=on_load, inputs=None, outputs=[code_box], api_visibility="private")

    with gr.Accordion("Experimenter", open=False, elem_id="study-experimenter") as experimenter:
        if gate.mode == "off":
            # Nothing else is built: no experimenter event exists to be called.
            gr.Markdown(OFF_TEXT, elem_id="study-experimenter-off")
        else:
            _build_experimenter(home, gate, jobs, scale_keys)
    return ListenTab(experimenter, gate)


def _rater_folder(jobs: Any) -> Path | None:
    return jobs.scratch / "study-clips" if isinstance(jobs, SessionJobs) else None


def _export_folder(jobs: Any) -> Path:
    base = jobs.scratch if isinstance(jobs, SessionJobs) else None
    return Path(tempfile.mkdtemp(prefix="study-", dir=base))


def _build_experimenter(home: Path, gate: ExperimenterGate, jobs: gr.State, scale_keys: list[str]) -> None:
    """The experimenter panel: behind the password when there is one; every handler asks the gate."""
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
