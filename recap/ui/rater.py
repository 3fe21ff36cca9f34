"""The rater's side of a listening study: one study, one trial at a time, blind.

A rater needs only a study code or link, sees one study blind, and resumes with their own secret
resume code. Raters are handed fresh copies of the listening copies under random names (the
study folder is never served), so no file name, URL or byte tells a clip's condition or links two
raters' clips. Each rater's place in a study lives in a server-side ``gr.State``; everything
else is in the study database, so a reload or a server restart loses nothing.

A page's rater starts with a volume check (calibration noise at the study's loudness) and one
practice trial in the study's own trial screen, whose answer is checked but never stored; a rater
resuming after answering goes straight to the next trial. API clients, which do not listen, skip
both (the page asks for them when it opens a study). All of it is in the server-side state.

Pure handlers first (plain values in and out, testable without a browser), Blocks wiring after.
"""

from __future__ import annotations

import secrets
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import gradio as gr
import numpy as np
import soundfile as sf

from recap.audio_io import write_wav
from recap.errors import BadInput
from recap.limits import LIMITS, whole
from recap.study.items import MAX_MUSHRA_CONDITIONS, loudness_match, plan_trials, rater_copy
from recap.study.store import (
    AB_ANSWERS,
    ABX_ANSWERS,
    SCALES,
    IncompleteAnswer,
    Scale,
    ShownTrial,
    StudyError,
    StudyStore,
    normalize_code,
)
from recap.study.mushra import MAX_SCORE
from recap.ui.common import md_text, user_errors
from recap.ui.jobs import SessionJobs
from recap.ui.transport import TRANSPORT_CSS, TRANSPORT_JS, transport_html

__all__ = ["RaterView", "open_study", "finish_volume_check", "submit_answer", "log_play", "calibration_noise",
           "device_class", "code_from_query", "build_rater", "MAX_MUSHRA_CLIPS", "RATER_CONCURRENCY"]

RATER_CONCURRENCY = 16
PHONE_WIDTH = 768  # CSS pixels: narrower pages are phones
MAX_MUSHRA_CLIPS = MAX_MUSHRA_CONDITIONS + 3  # + the hidden reference and two anchors
# Long enough to set a volume by; the noise is periodic, so it loops without a seam.
CALIBRATION_SECONDS = 4.0


@dataclass
class RaterView:
    """What the rater section shows after an action.

    ``state`` goes back into the rater's gr.State (server-side: the browser never sees it);
    ``stage`` is "volume" (the volume check, playing ``calibration``), "practice" (a trial whose
    answer is not stored), "trial", or None when there is nothing to show (nothing opened yet, or
    the study is finished); ``clips`` are this rater's copies in shown order (A, B; A, B, X;
    MUSHRA's 1..n), named by ``labels``.
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
    stage: str | None = None
    calibration: str | None = None


def _finished(home: Path, code: str) -> str:
    """The end of a study: thanks, the completion code, the experimenter's address to go on to."""
    config = StudyStore(home).get(code).config
    out = "\n\n**All done — thank you!**"
    if config.completion_code:
        out += f" Your completion code is `{config.completion_code}`."  # checked: letters, digits, _ -
    if config.redirect_url:
        out += f" [Continue here]({config.redirect_url}) to finish."  # checked: http(s), no <>"'` or spaces
    return out + " You can close this page." if not config.redirect_url else out


def _clear(state: dict) -> dict:
    # The previous screen's copies were handed to Gradio (which keeps its own) with the last
    # answer; this rater's folder holds only the copies on screen.
    for old in state.get("handed_out", []):
        Path(old).unlink(missing_ok=True)
    return {**state, "stage": None, "slot": None, "practice_slot": None, "answer_id": None, "shown_at": None,
            "scales": [], "handed_out": [], "labels": [], "kind": None}


def _show(trial: ShownTrial | None, state: dict, status: str, home: Path | None = None,
          practice: bool = False) -> RaterView:
    state = _clear(state)
    if trial is None:
        end = _finished(home, state["code"]) if home else "\n\n**All done — thank you!** You can close this page."
        return RaterView(state, status + end, done=state.get("total", 0), total=state.get("total", 0))
    folder = Path(state["folder"])
    clips = [str(rater_copy(c, folder)) for c in trial.clips]
    reference = str(rater_copy(trial.reference, folder)) if trial.reference else None
    # One answer id per shown trial: a double click or a retry resubmits the same id. A practice
    # trial keeps no slot, so no path can store an answer or a play for it.
    state.update(stage="practice" if practice else "trial", slot=None if practice else trial.slot,
                 practice_slot=trial.slot if practice else None, answer_id=uuid.uuid4().hex, shown_at=time.time(),
                 scales=[s.key for s in trial.scales], handed_out=clips + ([reference] if reference else []),
                 labels=list(trial.labels), kind=trial.kind, total=trial.total)
    title = f"**{md_text(trial.title)}** — " if trial.title else ""
    question = {"ab": trial.question, "rating": "Rate this clip on each scale.", "abx": trial.question,
                "mushra": "Rate each clip against the reference, 0 (bad) to 100 (excellent). One of them is the "
                          "reference itself."}[trial.kind]
    if trial.must_play:
        # Said in the practice too, though only the real trials' plays are logged and checked.
        question += " Play every clip to the end before answering."
    if practice:
        question = f"Practice — not recorded. {question}"
        where = "Practice trial: answer it as you would a real one."
        done = 0
    else:
        where = f"item {trial.slot + 1} of {trial.total}"
        done = StudyStore(home).answered(state["rater_id"]) if home else trial.slot
    return RaterView(
        state, f"{status}\n\n{title}{where}", trial.kind, clips, reference,
        f"### {md_text(question)}", f"Prompt: *{md_text(trial.prompt)}*" if trial.prompt else "", trial.scales,
        list(trial.labels), done, trial.total, "practice" if practice else "trial")


def calibration_noise(sample_rate: int, channels: int, target_lufs: float,
                      seconds: float = CALIBRATION_SECONDS) -> np.ndarray:
    """Pink noise [channels, samples] at ``target_lufs``, the loudness every listening copy is matched to.

    Pink (power falling 3 dB per octave) spreads its energy over the bands as music and ambience
    do, so a volume set on it suits the clips. Made in the frequency domain, it is periodic:
    looped, it has no seam.
    """
    n = max(1, int(seconds * sample_rate))
    spectrum = np.fft.rfft(np.random.default_rng(0).standard_normal(n))
    spectrum[0] = 0.0
    spectrum[1:] /= np.sqrt(np.fft.rfftfreq(n, 1.0 / sample_rate)[1:])
    pink = np.fft.irfft(spectrum, n)
    pink /= np.abs(pink).max()
    return loudness_match(np.tile(pink, (channels, 1)).astype(np.float32), sample_rate, target_lufs)[0]


def _volume_check(store: StudyStore, state: dict, status: str) -> RaterView:
    info = store.get(state["code"])
    clip = sf.info(str(info.folder / info.items[0].clip_a))  # every copy of a study shares rate and layout
    noise = calibration_noise(clip.samplerate, clip.channels, info.config.target_lufs)
    path = write_wav(Path(state["folder"]) / f"{secrets.token_hex(16)}.wav", noise, clip.samplerate, subtype="PCM_16")
    state = {**_clear(state), "stage": "volume", "handed_out": [str(path)]}
    return RaterView(state, f"{status}\n\n**Volume check.** Play the noise below and set your volume so that it is "
                            "comfortable, then press Continue. Keep that volume for the whole study.",
                     stage="volume", calibration=str(path))


def _practice_slot(store: StudyStore, state: dict) -> int | None:
    """The slot a rater practises on: their last plan slot that is a test item shown for the first time.

    Never an attention check (practising on one would give it away), and as far as the plan allows
    from the first real trial, so the practice is not that trial heard twice in a row.
    """
    info = store.get(state["code"])
    rater = store.join(info.code, rater_id=state["rater_id"])
    plan = plan_trials(info.items, rater.seed, info.config.repeats)
    tests = [t.slot for t in plan if info.items[t.item_id].role == "test" and not t.repeat]
    return tests[-1] if tests else None


def open_study(home: Path, code: str, name: str = "", resume_code: str = "",
               folder: Path | None = None, warmup: bool = False) -> RaterView:
    """Joins a study as a new rater, or resumes with a resume code, and shows the first unanswered item.

    Args:
        folder: Where this rater's copies of the clips go (the session's scratch folder in the
            app); a fresh temporary folder when None.
        warmup: Start with the volume check and a practice trial (:func:`finish_volume_check`),
            unless this rater has answered already. The page asks for it.

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
    trial = store.trial(rater.rater_id)
    if warmup and trial is not None and store.answered(rater.rater_id) == 0:
        return _volume_check(store, state, status)
    return _show(trial, state, status, home)


def finish_volume_check(home: Path, state: dict | None) -> RaterView:
    """The rater set their volume: shows the practice trial (or the first trial if there is none to practise on).

    Raises:
        StudyError: no volume check is on screen.
    """
    if not state or state.get("stage") != "volume":
        raise StudyError("there is no volume check to continue from")
    store = StudyStore(home)
    slot = _practice_slot(store, state)
    if slot is None:
        return _show(store.trial(state["rater_id"]), state, "Volume set.", home)
    return _show(store.trial(state["rater_id"], slot), state, "**Practice — not recorded.** This trial shows how "
                 "the real ones work; its answer is checked but not stored.", home, practice=True)


def _checked_answer(state: dict, choice: str | None, ratings: Mapping[str, Any] | None,
                    scores: Mapping[str, Any] | None) -> tuple[str | None, dict[str, int] | None, dict | None]:
    """(choice, ratings, scores) as the store takes them, or IncompleteAnswer for what the rater left out."""
    kind = state.get("kind")
    ratings_in = None
    if state["scales"]:
        missing = [k for k in state["scales"] if (ratings or {}).get(k) is None]
        if missing:
            raise IncompleteAnswer(f"rate the clip on {', '.join(missing)}")
        # The radio buttons send 1..5 (as floats from some clients); anything else is refused, not rounded.
        ratings_in = {k: whole(f"the {k} rating", ratings[k], 1, 5) for k in state["scales"]}
    if kind in ("ab", "abx"):
        allowed = AB_ANSWERS if kind == "ab" else ABX_ANSWERS
        if choice is None:
            raise IncompleteAnswer(f"choose one of {', '.join(allowed)}")
        if choice not in allowed:
            raise StudyError(f"choose one of {', '.join(allowed)} (got {str(choice)[:40]!r})")
    mushra = kind == "mushra"
    return (None if ratings_in or mushra else choice), ratings_in, (dict(scores or {}) if mushra else None)


def _check_practice_scores(state: dict, scores: Mapping[str, Any] | None) -> None:
    # The store checks a real trial's scores; a practice trial never reaches it, so the same
    # sentences are said here.
    for label in state["labels"]:
        value = (scores or {}).get(label)
        if value is None:
            raise IncompleteAnswer(f"Rate clip {label} (move its slider; every clip needs a score 0-100).")
        try:
            whole(f"the score of clip {label}", value, 0, MAX_SCORE)
        except BadInput as exc:
            raise StudyError(str(exc)) from None


def submit_answer(home: Path, state: dict | None, choice: str | None, ratings: Mapping[str, Any] | None,
                  comment: str = "", now: float | None = None, scores: Mapping[str, Any] | None = None,
                  device: str | None = None) -> RaterView:
    """Stores the answer to the shown item and shows the next one (a practice answer is checked, not stored).

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
    if state and state.get("stage") == "volume":
        raise StudyError("set your volume and press Continue first")
    practice = bool(state) and state.get("stage") == "practice"
    if not state or (state.get("slot") is None and not practice):
        raise StudyError("open a study first (enter its code)")
    choice, ratings_in, scores_in = _checked_answer(state, choice, ratings, scores)
    store = StudyStore(home)
    if practice:
        if state.get("kind") == "mushra":
            _check_practice_scores(state, scores_in)
        return _show(store.trial(state["rater_id"]), state, "Practice done — that answer was not recorded. "
                     "The real trials start now.", home)
    elapsed = int(1000 * max(0.0, (now if now is not None else time.time()) - state["shown_at"]))
    stored = store.submit(state["answer_id"], state["rater_id"], state["slot"], choice=choice, ratings=ratings_in,
                          comment=comment or "", time_ms=elapsed, scores=scores_in, device=device)
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


def _rater_folder(jobs: Any) -> Path | None:
    return jobs.scratch / "study-clips" if isinstance(jobs, SessionJobs) else None


def build_rater(home: Path, jobs: gr.State) -> None:
    """Adds the rater's section (open by code, one trial at a time) to the open Blocks context."""
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
        with gr.Group(visible=False, elem_id="study-volume") as volume_group:
            calibration_audio = player("Calibration noise", elem_id="study-calibration")
            continue_btn = gr.Button("Continue", variant="primary", elem_id="study-continue")
        # Always on the page (empty between trials), so its controller is installed once, at load.
        transport = gr.HTML("", elem_id="study-transport", js_on_load=TRANSPORT_JS, css_template=TRANSPORT_CSS)
        # Set only by the page's own open event (its js): API clients skip the warm-up.
        warmup_box = gr.Checkbox(value=False, visible=False, elem_id="study-warmup")
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
                     touched_state, answer_md, *stim_rows, *stim_players, *stim_sliders, volume_group,
                     calibration_audio, transport]

    def render(view: RaterView) -> list:
        shown, kind = view.kind is not None, view.kind
        ab, abx, mushra = kind == "ab", kind == "abx", kind == "mushra"
        keys = {s.key for s in view.scales}
        pair = ab or abx
        resume = (f"Your resume code: `{view.state['rater_id']}` (study `{view.state['code']}`)"
                  if view.state else "")
        bar = (f'<progress value="{int(view.done)}" max="{int(view.total)}" style="width:100%"></progress>'
               f'<div>{int(view.done)} of {int(view.total)} answered</div>') if view.total else ""
        if view.stage == "practice":
            bar = "<div><strong>Practice — not recorded</strong></div>"
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
            gr.update(visible=view.stage == "volume"), gr.update(value=view.calibration),
            transport_html(view),
        ]

    @user_errors
    def on_open(jobs_: SessionJobs, code, name, resume, warmup=False):
        return render(open_study(home, code, name, resume, folder=_rater_folder(jobs_), warmup=warmup is True))

    @user_errors
    def on_continue(state):
        return render(finish_volume_check(home, state))

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
    open_btn.click(on_open, [jobs, code_box, name_box, resume_box, warmup_box], rater_outputs, api_name="study_open",
                   concurrency_limit=RATER_CONCURRENCY, js="(...args) => { args[args.length - 1] = true; return args; }")
    continue_btn.click(on_continue, rater_state, rater_outputs, api_visibility="private",
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
