"""The "Token" tab: teach the model a new word from a few clips (Textual Inversion), or load one.

A visitor's tokens live in their ``gr.State`` (placeholder -> LearnedToken) and are passed to
the core per call, so they never change what anyone else's prompt means. Finished tokens are
saved to the shared token folder (that list is shared by design); a stopped one stays in the
session, where *Resume* continues it from its checkpoint in the session's scratch folder.
*Push to the Hub* always writes with the visitor's own token, never the server's.

Toasts (``gr.Info``/``gr.Warning``) render HTML, so every text in them that a user or a file
supplied is escaped; Markdown status lines use ``md_text``/``code_text``.

Pure handlers first (values in, values out; the app's context and its GPU-gated functions come
first and are bound at wiring time, so a test calls them directly), Blocks wiring after. The core
modules load the model libraries, so they are imported inside the handlers.
"""

from __future__ import annotations

import html
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from recap.paths import inside, safe_name
from recap.ui.common import bind, code_text, form_check, halt_if_message, md_text, user_errors
from recap.backends.registry import get_spec
from recap.ui.context import AppContext
from recap.ui.jobs import SessionJobs, arm_job, stop_job
from recap.ui.prompt import add_variant
from recap.ui.session_tokens import usable_tokens
from recap.ui.training import (
    PREVIEWS_KEPT,
    keep_preview,
    progress_figure,
    prune_previews,
    strip_updates,
    strip_values,
    train_chunk,
    train_in_chunks,
    training_config,
    training_status,
)
from recap.ui.zerogpu import training_seconds

TOKEN_HEADERS = ("placeholder", "model", "vectors", "steps", "init word", "state")
NEAREST_HEADERS = ("vector", "rank", "word", "cosine")


# ----------------------------------------------------------------------------- pure helpers
def token_rows(session: dict | None) -> list[list[Any]]:
    rows = []
    for placeholder, t in (session or {}).items():
        done, total = t.meta.get("steps_done"), t.meta.get("steps")
        state = f"stopped at step {done} of {total}" if t.meta.get("complete") is False else (
            Path(t.path).name if t.path else "in this session only")
        rows.append([placeholder, t.meta.get("model_name") or t.meta.get("model_id") or "?", t.n_vectors,
                     done if done is not None else "", t.meta.get("init_word") or "", state])
    return rows


def saved_choices(tokens_dir: Path) -> list[tuple[str, str]]:
    """(label, file name) of the shared saved tokens, newest first."""
    from recap.tokens.files import list_tokens

    return [(f"{t.placeholder} — {t.meta.get('model_name') or t.meta.get('model_id') or '?'}, "
             f"{t.meta.get('steps_done', '?')} steps ({Path(t.path).name})", Path(t.path).name)
            for t in list_tokens(tokens_dir)]


def nearest_rows(backend: Any, token: Any, k: int = 8) -> list[list[Any]]:
    from recap.tokens.files import nearest_words

    return [[i, rank, word, round(cos, 4)]
            for i, words in enumerate(nearest_words(backend, token.vectors, k))
            for rank, (word, cos) in enumerate(words, 1)]


def export_token(token: Any, folder: Path) -> list[str]:
    """Writes the token pair into ``folder`` (a download folder); returns the two paths."""
    from recap.tokens.files import LearnedToken, save_token

    copy = LearnedToken(token.placeholder, token.vectors, dict(token.meta))
    path = save_token(copy, folder, safe_name(token.placeholder, fallback="token"))
    return [str(path), str(path.with_suffix(".json"))]


def check_repo_id(repo_id: str) -> str:
    """The Hub repository id, checked by the core (``recap.tokens.files.check_repo_id``)."""
    from recap.tokens.files import check_repo_id as core_check

    return core_check(repo_id)


def toast_text(text: object) -> str:
    """Text for ``gr.Info``/``gr.Warning``, which render HTML: shown literally."""
    return html.escape(str(text), quote=False)


# ----------------------------------------------------------------------------- handlers
def token_listing(session: dict | None, selected: str | None) -> tuple[list[list[Any]], Any]:
    """The session's token table, and the token picker with ``selected`` kept when it is still there."""
    names = list(session or {})
    return token_rows(session), gr.update(choices=names, value=selected if selected in names else None)


def selected_token(session: dict | None, placeholder: str | None) -> Any:
    """The session's token ``placeholder``; ValueError when the session has none by that name."""
    if not session or placeholder not in session:
        raise ValueError("choose a token of this session first (train or load one)")
    return session[placeholder]


def check_training(ctx: AppContext, model_name: str, clips_: list[str] | None, name_: str, init_: str,
                   init_word_: str, n_vectors_: float, steps_: float, learning_rate: float, batch_size: float,
                   seconds_: float, snr_db: float, seed_: float, preview_every_: float) -> None:
    """The form's check before a training starts (the page shows its sentence beside the button):
    the clips are there and every setting is within its bound for the chosen model. The job checks
    again (:func:`run_training`), for the API."""
    from recap.tokens.training import check_config

    if not clips_:
        raise ValueError("upload at least one clip of the sound to learn")
    config = training_config(name_, init_, init_word_, n_vectors_, steps_, learning_rate, batch_size, seconds_,
                             snr_db, seed_, preview_every_)
    check_config(ctx.backend(model_name)[0], config)


def run_training(ctx: AppContext, run_chunk: Callable[..., Iterator[Any]], nearest: Callable[..., list[list[Any]]],
                 resume: bool, model_name: str, clips_: list[str] | None, name_: str, init_: str, init_word_: str,
                 n_vectors_: float, steps_: float, learning_rate: float, batch_size: float, seconds_: float,
                 snr_db: float, seed_: float, preview_every_: float, jobs: SessionJobs, session: dict | None,
                 progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
    """Train (or, with ``resume``, continue) a token, yielding the page's outputs as it goes.

    Args:
        run_chunk: :func:`recap.ui.training.train_chunk` behind the app's GPU gate.
        nearest: :func:`nearest_rows` behind the app's GPU gate.
        model_name ... preview_every_: The form (the names are the ``/train_token`` API's).

    Yields:
        (curve, status, newest preview, session, token rows, token picker, saved tokens, nearest
        words, the 7 earlier previews); while training only the curve, the status and the
        previews change. The previews are newest first, each labelled "step N" by a
        ``gr.update`` when it comes; the last output holds their plain WAV paths. A resume
        starts from the curve and previews the training had. A finished token is saved to the
        shared folder; a stopped one stays in the session, resumable from its checkpoint.
    """
    from recap.tokens.checkpoints import checkpoint_history
    from recap.tokens.training import TIPreview, TIStep, check_config

    # 1. The form and the clips, checked before anything starts: a sentence, not a job
    session = dict(session or {})
    config = training_config(name_, init_, init_word_, n_vectors_, steps_, learning_rate, batch_size, seconds_,
                             snr_db, seed_, preview_every_, preview_steps=min(get_spec(model_name).defaults.steps, 25))
    if not clips_:
        raise ValueError("upload at least one clip of the sound to learn")
    backend, note = ctx.backend(model_name)
    if note:
        gr.Warning(toast_text(note))
    config = check_config(backend, config)
    # 2. What the training goes on from: a resume keeps the curve and the previews of its steps
    stop = jobs.begin()
    name = safe_name(config.placeholder, fallback="token")
    checkpoint_dir = jobs.scratch / "checkpoints" / name
    preview_dir = jobs.scratch / "previews" / name
    history = checkpoint_history(checkpoint_dir) if resume else []
    start = history[-1].step if history else 0
    strip = prune_previews(preview_dir, start)
    begun = f"Resuming at step {start} of {config.steps}…" if resume else f"Starting: {config.steps} steps…"
    yield _page(progress_figure(history), begun, strip_updates(strip))
    # 3. Train: each step at once (the status says when a preview renders), each preview as it comes
    token, latest, last, notes = None, None, 0.0, []
    for item in train_in_chunks(run_chunk, backend, list(clips_), config, stop, checkpoint_dir, resume,
                                ctx.train_chunk_steps):
        if isinstance(item, TIPreview):
            strip = keep_preview(preview_dir, item, backend.sample_rate, strip)
            yield _page(progress_figure(history), training_status(latest, history), strip_updates(strip))
            continue
        if not isinstance(item, TIStep):
            token = item
            break
        for clip_note in item.notes:  # e.g. a clip far too loud was normalised: say so at once
            if clip_note not in notes:
                notes.append(clip_note)
                gr.Warning(toast_text(clip_note))
        history.append(item.record)
        latest = item
        rendering = item.step if item.preview_due else None
        progress(item.step / item.steps, desc=f"step {item.step} of {item.steps}"
                 + (" · rendering a preview" if rendering else ""))
        # The page redraws a few times a second at most; a step about to render a preview (which
        # holds the next step back) and the last step always show.
        if rendering or item.step == item.steps or time.monotonic() - last > 0.4:
            last = time.monotonic()
            yield _page(progress_figure(history), training_status(item, history, rendering))
    # 4. Save a finished token; keep a stopped one in the session
    if token.meta.get("complete"):
        from recap.tokens.files import save_token
        from recap.generation.runs import new_run_id

        save_token(token, ctx.settings.tokens_dir, f"{safe_name(config.placeholder)}-{new_run_id()}")
        done = f"Trained {code_text(token.placeholder)} and saved it as {code_text(Path(token.path).name)}."
    else:
        done = (f"Stopped at step {token.meta['steps_done']} of {config.steps}. {code_text(token.placeholder)} "
                "can be used as it is in this session, or press *Resume* to continue.")
    if latest is not None:
        done += f"\n\n{training_status(latest, history)}"
    for clip_note in notes or token.meta.get("notes", []):
        done += f"\n\n⚠️ {md_text(clip_note)}"
    session[token.placeholder] = token
    rows, choice = token_listing(session, token.placeholder)
    # Plain values last: the API's result is the previews' files (labels were set as they came).
    yield _page(progress_figure(history), done, strip_values(strip), session, rows, choice,
                saved_update(ctx.settings.tokens_dir), nearest(backend, token))


def _page(curve: Any, status: str, previews: list[Any] | None = None, *rest: Any) -> tuple[Any, ...]:
    """The training event's outputs in wiring order: the newest preview keeps the place the single
    preview had (the API's outputs before it are unchanged), the earlier ones come last."""
    previews = previews or [gr.skip()] * PREVIEWS_KEPT
    rest = rest or (gr.skip(),) * 5
    return (curve, status, previews[0], *rest, *previews[1:])


def load_session_token(ctx: AppContext, nearest: Callable[..., list[list[Any]]], model_name: str,
                       file_name: str | None, upload_path: str | None, session: dict | None) -> tuple[Any, ...]:
    """Loads a saved token (``file_name``) or an uploaded file into the session.

    Returns:
        (session, token rows, token picker, nearest words of the loaded token).
    """
    from recap.tokens.files import load_token

    if upload_path:
        path = Path(upload_path)
    elif file_name:
        path = inside(ctx.settings.tokens_dir, Path(str(file_name)).name)
    else:
        raise ValueError("choose a saved token or upload a .safetensors file first")
    backend, _ = ctx.backend(model_name)
    token = load_token(backend, path)
    if upload_path:
        token.path = None  # the upload's temporary copy is not a saved token
    session = dict(session or {})
    replaced = token.placeholder in session
    session[token.placeholder] = token
    rows, choice = token_listing(session, token.placeholder)
    gr.Info(toast_text(f"Loaded {token.placeholder}" + (" (replacing the one loaded before)" if replaced else "")))
    return session, rows, choice, nearest(backend, token)


def saved_update(tokens_dir: Path) -> Any:
    """Update of the saved-token picker: the shared saved tokens, newest first."""
    return gr.update(choices=saved_choices(tokens_dir))


def token_details(ctx: AppContext, nearest: Callable[..., list[list[Any]]], model_name: str, session: dict | None,
                  placeholder: str | None) -> list[list[Any]]:
    """The nearest vocabulary words of the picked token (none when it does not fit the model)."""
    if not placeholder:
        return []
    backend, _ = ctx.backend(model_name)
    token = selected_token(session, placeholder)
    if not usable_tokens(backend, {placeholder: token}):
        return []
    return nearest(backend, token)


def download_token(session: dict | None, placeholder: str | None, jobs: SessionJobs) -> tuple[list[str], Any]:
    """The picked token's two files in a fresh download folder of the session, and the file box shown."""
    token = selected_token(session, placeholder)
    return export_token(token, Path(tempfile.mkdtemp(dir=jobs.scratch, prefix="token-"))), gr.update(visible=True)


def add_token_prompt(rows: Any, placeholder: str | None, session: dict | None) -> list[list[Any]]:
    """The prompt table with "a recording of <placeholder>" added as a token prompt."""
    selected_token(session, placeholder)
    return add_variant(rows, f"a recording of {placeholder}", list(session))


def drop_token(session: dict | None, placeholder: str | None) -> tuple[Any, ...]:
    """The session without token ``placeholder``: (session, token rows, token picker, nearest words)."""
    selected_token(session, placeholder)
    session = {k: v for k, v in session.items() if k != placeholder}
    return (session, *token_listing(session, None), [])


def push_session_token(session: dict | None, placeholder: str | None, repo_id: str, secret: str,
                       jobs: SessionJobs) -> str:
    """Pushes the picked token to the visitor's Hub repository with their own token; a Markdown line."""
    from recap.tokens.files import check_hub_token, push_token

    # The visitor's own token, checked first: an empty one would let huggingface_hub fall
    # back to the server's HF_TOKEN and write wherever a stranger names.
    secret = check_hub_token(secret)
    repo_id = check_repo_id(repo_id)
    token = selected_token(session, placeholder)
    path = export_token(token, Path(tempfile.mkdtemp(dir=jobs.scratch, prefix="push-")))[0]
    url = push_token(path, repo_id, token=secret)
    return f"Pushed to [{md_text(repo_id)}]({url})."


def clip_previews(paths: list[str] | None) -> None:
    """Lays out a player and a spectrogram of each uploaded clip (the first 8), inside a ``gr.render``."""
    if not paths:
        return
    with gr.Row():
        for p in paths[:8]:
            with gr.Column(min_width=220):
                gr.Audio(p, label=Path(p).name, interactive=False, buttons=[])
                gr.Plot(_clip_figure(p), show_label=False)


# ----------------------------------------------------------------------------- wiring
@dataclass
class _TrainPanel:
    clips: gr.File
    settings: list[Any]  # in the order of run_training's form parameters (name_ ... preview_every_)
    train_btn: gr.Button
    resume_btn: gr.Button
    stop_btn: gr.Button
    stats: gr.Markdown
    message: gr.Markdown
    curve: gr.Plot
    previews: list[gr.Audio]  # newest first


def _train_panel() -> _TrainPanel:
    """The "Train a token" accordion: the clips (each shown), the settings, the buttons, the live curve."""
    with gr.Accordion("Train a token", open=True):
        clips = gr.File(label="Clips of the sound (1 or more)", file_count="multiple", file_types=["audio"],
                        elem_id="train-clips")
        gr.render(inputs=[clips])(clip_previews)
        with gr.Row():
            name = gr.Textbox(label="New word", value="<my-sound>", max_length=40)
            init = gr.Radio([("class word", "word"), ("mean of vocabulary", "mean"), ("random", "random")],
                            value="word", label="Start from")
            init_word = gr.Textbox(label="Class word", value="sound", max_length=40)
            n_vectors = gr.Slider(1, 8, value=1, step=1, label="Vectors")
        with gr.Row():
            steps = gr.Number(150, precision=0, minimum=1, maximum=5000, label="Steps")
            lr = gr.Number(0.02, minimum=1e-5, maximum=1.0, label="Learning rate")
            batch = gr.Number(4, precision=0, minimum=1, maximum=32, label="Batch size")
            seconds = gr.Number(0, minimum=0, label="Clip seconds (0 = automatic)")
            snr = gr.Number(0, minimum=0, label="Mix noise at SNR dB (0 = off; paper: 20)")
            seed = gr.Number(0, precision=0, minimum=0, label="Seed")
            preview_every = gr.Number(50, precision=0, minimum=0, label="Preview every N steps (0 = off)")
        with gr.Row():
            train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
            resume_btn = gr.Button("Resume")
            stop_btn = gr.Button("Stop", variant="stop")
        message = gr.Markdown(elem_id="train-message")  # a bad or missing field, named next to the buttons
        stats = gr.Markdown(elem_id="train-status")
        curve = gr.Plot(label="Training", elem_id="train-curve")
        gr.Markdown("Previews, newest first (the last 8 are kept):")
        with gr.Row(elem_id="train-previews"):
            # hidden until a preview fills them; a "step N" label each
            previews = [gr.Audio(label="preview", interactive=False, visible=False, min_width=200)
                        for _ in range(PREVIEWS_KEPT)]
    return _TrainPanel(clips, [name, init, init_word, n_vectors, steps, lr, batch, seconds, snr, seed, preview_every],
                       train_btn, resume_btn, stop_btn, stats, message, curve, previews)


@dataclass
class TokenTab:
    session_tokens: gr.State


def build_token_tab(ctx: AppContext, model: gr.Dropdown, jobs: gr.State, tokens: gr.State,
                    prompt_table: gr.Dataframe) -> TokenTab:
    """Adds the tab's components and events to the open Blocks/Tab context."""
    gpu_chunk = ctx.gpu(train_chunk, duration=training_seconds)
    gpu_nearest = ctx.gpu(nearest_rows, duration=30)

    gr.Markdown("Teach the model a new word for a sound: upload a few clips of it, name the word "
                "(e.g. `<my-bell>`), and train only that word's embedding; the model itself stays unchanged.")
    train = _train_panel()
    with gr.Accordion("Tokens", open=True):
        gr.Markdown("Tokens in use in this session. Saved tokens are shared with everyone using this server.")
        active = gr.Dataframe(headers=list(TOKEN_HEADERS), interactive=False, type="array", label="In this session")
        with gr.Row():
            saved = gr.Dropdown(label="Saved tokens", choices=[], scale=3)
            refresh_btn = gr.Button("Refresh")
            load_btn = gr.Button("Load")
        with gr.Row():
            upload = gr.File(label="Or load a .safetensors file", file_types=[".safetensors"], scale=3)
            upload_btn = gr.Button("Load file")
        with gr.Row():
            current = gr.Dropdown(label="Token", choices=[], scale=2)
            use_btn = gr.Button("Add a prompt with it")
            download_btn = gr.Button("Download")
            drop_btn = gr.Button("Remove from session")
        nearest = gr.Dataframe(headers=list(NEAREST_HEADERS), interactive=False, type="array",
                               label="Nearest words in the vocabulary")
        with gr.Column(visible=False) as files_box:  # shown once there is something to download
            files = gr.File(label="Token files", file_count="multiple", interactive=False)
        with gr.Row():
            repo = gr.Textbox(label="Hub repository (user/name)", scale=2)
            hf_token = gr.Textbox(label="Your Hugging Face token (write access; used for this push only)",
                                  type="password", scale=2)
            push_btn = gr.Button("Push to the Hub")
        push_md = gr.Markdown()

    train_inputs = [model, train.clips, *train.settings, jobs, tokens]
    check = form_check(bind(check_training, ctx))
    train_outputs = [train.curve, train.stats, train.previews[0], tokens, active, current, saved, nearest,
                     *train.previews[1:]]  # in run_training's (and _page's) order
    for button, resume, api_name in ((train.train_btn, False, "train_token"), (train.resume_btn, True, "resume_token")):
        # Arming first (no queue limit) makes a Stop pressed while the job waits for the GPU count.
        # The form first: a bad field is named beside the buttons and the curve on screen stays.
        button.click(check, train_inputs[:-2], train.message, api_visibility="private", show_progress="hidden").success(
            halt_if_message, train.message, None, api_visibility="private", show_progress="hidden").success(
            arm_job, jobs, None, concurrency_limit=None, api_visibility="private").then(
            user_errors(bind(run_training, ctx, gpu_chunk, gpu_nearest, resume)), train_inputs, train_outputs,
            api_name=api_name, concurrency_limit=1, concurrency_id="gpu",
            show_progress_on=[train.stats])  # the live plot stays uncovered
    train.stop_btn.click(stop_job, jobs, None, concurrency_limit=None, api_name="stop_training")

    load = user_errors(bind(load_session_token, ctx, gpu_nearest))
    load_outputs = [tokens, active, current, nearest]
    load_btn.click(load, [model, saved, gr.State(None), tokens], load_outputs, api_name="load_token",
                   concurrency_limit=1, concurrency_id="gpu")
    upload_btn.click(load, [model, gr.State(None), upload, tokens], load_outputs, api_name="upload_token",
                     concurrency_limit=1, concurrency_id="gpu")
    refresh_saved = bind(saved_update, ctx.settings.tokens_dir)
    refresh_btn.click(refresh_saved, None, saved, api_name="list_tokens")
    gr.on(triggers=None, fn=refresh_saved, outputs=saved, api_visibility="private")  # on page load
    # and whenever the list is opened: a token saved since (by another visitor, or the CLI) is there
    saved.focus(refresh_saved, None, saved, api_visibility="private", show_progress="hidden")
    current.input(user_errors(bind(token_details, ctx, gpu_nearest)), [model, tokens, current], nearest,
                  api_visibility="private", concurrency_limit=1, concurrency_id="gpu")
    download_btn.click(user_errors(download_token), [tokens, current, jobs], [files, files_box],
                       api_name="download_token")
    use_btn.click(user_errors(add_token_prompt), [prompt_table, current, tokens], prompt_table,
                  api_visibility="private")
    drop_btn.click(user_errors(drop_token), [tokens, current], [tokens, active, current, nearest],
                   api_visibility="private")
    push_btn.click(user_errors(push_session_token), [tokens, current, repo, hf_token, jobs], push_md,
                   api_name="push_token", concurrency_limit=2)
    return TokenTab(session_tokens=tokens)


def _clip_figure(path: str) -> Any:
    """A small whole-range spectrogram of an uploaded clip (or None when it cannot be read)."""
    from recap.audio_io import AudioError, load_audio
    from recap.analysis.spectrogram import SpectrogramConfig, spectrogram_grid, spectrogram_of

    try:
        clip = load_audio(path)
    except AudioError:
        return None
    spec = spectrogram_of(clip.audio, clip.sample_rate, SpectrogramConfig(bins=None, max_frames=300))
    fig = spectrogram_grid({(Path(path).stem, 0): spec}, title="", max_frames=300)
    fig.update_layout(height=200, width=None, margin={"l": 40, "r": 10, "t": 30, "b": 30})
    fig.layout.annotations[0].text = Path(path).name  # the panel title (no seed: it is not generated)
    return fig
