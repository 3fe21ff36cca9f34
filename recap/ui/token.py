"""The "Token" tab: teach the model a new word from a few clips (Textual Inversion), or load one.

A visitor's tokens live in their ``gr.State`` (placeholder -> LearnedToken) and are passed to
the core per call, so they never change what anyone else's prompt means. Finished tokens are
saved to the shared token folder (that list is shared by design); a stopped one stays in the
session, where *Resume* continues it from its checkpoint in the session's scratch folder.
*Push to the Hub* always writes with the visitor's own token, never the server's.

Toasts (``gr.Info``/``gr.Warning``) render HTML, so every text in them that a user or a file
supplied is escaped; Markdown status lines use ``md_text``/``code_text``.

The core modules load the model libraries, so they are imported inside the handlers.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from recap.paths import inside, safe_name
from recap.ui.common import code_text, md_text, user_errors
from recap.backends.registry import get_spec
from recap.ui.context import AppContext, SessionJobs
from recap.ui.training import (
    progress_figure,
    train_chunk,
    train_in_chunks,
    training_config,
)

TOKEN_HEADERS = ("placeholder", "model", "vectors", "steps", "init word", "state")
NEAREST_HEADERS = ("vector", "rank", "word", "cosine")


# ----------------------------------------------------------------------------- pure helpers
def usable_tokens(backend: Any, session: dict | None) -> dict[str, Any]:
    """placeholder -> vectors of the session's tokens that fit ``backend`` (width and model)."""
    out = {}
    for placeholder, token in (session or {}).items():
        model_id = token.meta.get("model_id")
        if token.vectors.shape[1] == backend.embedding_dim and (not model_id or model_id == backend.model_id):
            out[placeholder] = token.vectors
    return out


def check_token_use(prompts: list[str], backend: Any, session: dict | None) -> None:
    """Raises ValueError when a prompt uses a session token made for another model."""
    usable = usable_tokens(backend, session)
    for placeholder, token in (session or {}).items():
        if placeholder not in usable and any(placeholder in p for p in prompts):
            raise ValueError(f"{placeholder} was trained for {token.meta.get('model_id') or 'another model'} "
                             f"(width {token.vectors.shape[1]}); {backend.name} cannot use it. Switch the model "
                             "or train the token for this one.")


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


# ----------------------------------------------------------------------------- wiring
@dataclass
class TokenTab:
    session_tokens: gr.State


def build_token_tab(ctx: AppContext, model: gr.Dropdown, jobs: gr.State, tokens: gr.State,
                    prompt_table: gr.Dataframe) -> TokenTab:
    """Adds the tab's components and events to the open Blocks/Tab context."""
    gpu_chunk = ctx.gpu(train_chunk, duration=120)
    gpu_nearest = ctx.gpu(nearest_rows, duration=30)

    gr.Markdown("Teach the model a new word for a sound: upload a few clips of it, name the word "
                "(e.g. `<my-bell>`), and train only that word's embedding; the model itself stays unchanged.")
    with gr.Accordion("Train a token", open=True):
        clips = gr.File(label="Clips of the sound (1 or more)", file_count="multiple", file_types=["audio"],
                        elem_id="train-clips")

        @gr.render(inputs=[clips])
        def show_clips(paths):
            if not paths:
                return
            with gr.Row():
                for p in paths[:8]:
                    with gr.Column(min_width=220):
                        gr.Audio(p, label=Path(p).name, interactive=False, buttons=[])
                        gr.Plot(_clip_figure(p), show_label=False)

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
        stats = gr.Markdown()
        with gr.Row():
            curve = gr.Plot(label="Training", scale=3)
            preview = gr.Audio(label="Latest preview", interactive=False, scale=1)

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

    settings_inputs = [name, init, init_word, n_vectors, steps, lr, batch, seconds, snr, seed, preview_every]

    def listing(session: dict, selected: str | None):
        names = list(session or {})
        return token_rows(session), gr.update(choices=names, value=selected if selected in names else None)

    def train(resume: bool, model_name: str, paths: list[str] | None, form: list[Any], jobs_: SessionJobs,
              session: dict | None, progress: gr.Progress):
        from recap.tokens.training import check_config

        session = dict(session or {})
        config = training_config(*form, preview_steps=min(get_spec(model_name).defaults.steps, 25))
        if not paths:
            raise ValueError("upload at least one clip of the sound to learn")
        backend, note = ctx.backend(model_name)
        if note:
            gr.Warning(toast_text(note))
        config = check_config(backend, config)  # before anything is started: a sentence, not a job
        stop = jobs_.begin()
        checkpoint_dir = jobs_.scratch / "checkpoints" / safe_name(config.placeholder, fallback="token")
        history, token, last, last_preview, notes = [], None, 0.0, None, []
        for item in train_in_chunks(gpu_chunk, backend, list(paths), config, stop, checkpoint_dir, resume,
                                    ctx.train_chunk_steps):
            if not hasattr(item, "loss"):
                token = item
                break
            for clip_note in item.notes:  # e.g. a clip far too loud was normalised: say so at once
                if clip_note not in notes:
                    notes.append(clip_note)
                    gr.Warning(toast_text(clip_note))
            history.append((item.step, item.loss, item.norm, item.cos_to_init))
            progress(item.step / item.steps, desc=f"step {item.step} of {item.steps}")
            audio = None
            if item.preview is not None:
                from recap.audio_io import write_wav

                audio = str(write_wav(jobs_.scratch / "previews" / f"{safe_name(config.placeholder)}-{item.step}.wav",
                                      item.preview, backend.sample_rate))
                last_preview = audio
            # The page redraws a few times a second at most; previews and the last step always show.
            if audio or item.step == item.steps or time.monotonic() - last > 0.4:
                last = time.monotonic()
                yield (progress_figure(history), _stats(item), audio or gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                       gr.skip(), gr.skip())
        if token.meta.get("complete"):
            from recap.tokens.files import save_token
            from recap.generation.runs import new_run_id

            save_token(token, ctx.settings.tokens_dir, f"{safe_name(config.placeholder)}-{new_run_id()}")
            done = f"Trained {code_text(token.placeholder)} and saved it as {code_text(Path(token.path).name)}."
        else:
            done = (f"Stopped at step {token.meta['steps_done']} of {config.steps}. {code_text(token.placeholder)} "
                    "can be used as it is in this session, or press *Resume* to continue.")
        for clip_note in notes or token.meta.get("notes", []):
            done += f"\n\n⚠️ {md_text(clip_note)}"
        session[token.placeholder] = token
        rows, choice = listing(session, token.placeholder)
        yield (progress_figure(history), done, last_preview or gr.skip(), session, rows, choice,
               gr.update(choices=saved_choices(ctx.settings.tokens_dir)), gpu_nearest(backend, token))

    @user_errors
    def train_new(model_name, clips_, name_, init_, init_word_, n_vectors_, steps_, learning_rate, batch_size,
                  seconds_, snr_db, seed_, preview_every_, jobs_, session, progress=gr.Progress()):
        form = [name_, init_, init_word_, n_vectors_, steps_, learning_rate, batch_size, seconds_, snr_db, seed_,
                preview_every_]
        yield from train(False, model_name, clips_, form, jobs_, session, progress)

    @user_errors
    def train_more(model_name, clips_, name_, init_, init_word_, n_vectors_, steps_, learning_rate, batch_size,
                   seconds_, snr_db, seed_, preview_every_, jobs_, session, progress=gr.Progress()):
        form = [name_, init_, init_word_, n_vectors_, steps_, learning_rate, batch_size, seconds_, snr_db, seed_,
                preview_every_]
        yield from train(True, model_name, clips_, form, jobs_, session, progress)

    train_inputs = [model, clips, *settings_inputs, jobs, tokens]
    train_outputs = [curve, stats, preview, tokens, active, current, saved, nearest]
    for button, fn, api_name in ((train_btn, train_new, "train_token"), (resume_btn, train_more, "resume_token")):
        # Arming first (no queue limit) makes a Stop pressed while the job waits for the GPU count.
        button.click(_arm, jobs, None, concurrency_limit=None, api_visibility="private").then(
            fn, train_inputs, train_outputs, api_name=api_name, concurrency_limit=1, concurrency_id="gpu",
            show_progress_on=[stats])  # the live plot stays uncovered
    stop_btn.click(_stop, jobs, None, concurrency_limit=None, api_name="stop_training")

    @user_errors
    def load(model_name, file_name, upload_path, session):
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
        rows, choice = listing(session, token.placeholder)
        gr.Info(toast_text(f"Loaded {token.placeholder}" + (" (replacing the one loaded before)" if replaced else "")))
        return session, rows, choice, gpu_nearest(backend, token)

    load_outputs = [tokens, active, current, nearest]
    load_btn.click(load, [model, saved, gr.State(None), tokens], load_outputs, api_name="load_token",
                   concurrency_limit=1, concurrency_id="gpu")
    upload_btn.click(load, [model, gr.State(None), upload, tokens], load_outputs, api_name="upload_token",
                     concurrency_limit=1, concurrency_id="gpu")
    def refresh_saved():
        return gr.update(choices=saved_choices(ctx.settings.tokens_dir))

    refresh_btn.click(refresh_saved, None, saved, api_name="list_tokens")
    gr.on(triggers=None, fn=refresh_saved, outputs=saved, api_visibility="private")  # on page load

    def _selected(session, placeholder):
        if not session or placeholder not in session:
            raise ValueError("choose a token of this session first (train or load one)")
        return session[placeholder]

    @user_errors
    def details(model_name, session, placeholder):
        if not placeholder:
            return []
        backend, _ = ctx.backend(model_name)
        token = _selected(session, placeholder)
        if not usable_tokens(backend, {placeholder: token}):
            return []
        return gpu_nearest(backend, token)

    current.input(details, [model, tokens, current], nearest, api_visibility="private", concurrency_limit=1,
                  concurrency_id="gpu")

    @user_errors
    def download(session, placeholder, jobs_):
        token = _selected(session, placeholder)
        import tempfile

        return export_token(token, Path(tempfile.mkdtemp(dir=jobs_.scratch, prefix="token-"))), gr.update(visible=True)

    download_btn.click(download, [tokens, current, jobs], [files, files_box], api_name="download_token")

    @user_errors
    def add_prompt(rows, placeholder, session):
        from recap.ui.prompt import add_variant

        _selected(session, placeholder)
        return add_variant(rows, f"a recording of {placeholder}", list(session))

    use_btn.click(add_prompt, [prompt_table, current, tokens], prompt_table, api_visibility="private")

    @user_errors
    def drop(session, placeholder):
        _selected(session, placeholder)
        session = {k: v for k, v in session.items() if k != placeholder}
        return (session, *listing(session, None), [])

    drop_btn.click(drop, [tokens, current], [tokens, active, current, nearest], api_visibility="private")

    @user_errors
    def push(session, placeholder, repo_id, secret, jobs_):
        from recap.tokens.files import check_hub_token, push_token

        # The visitor's own token, checked first: an empty one would let huggingface_hub fall
        # back to the server's HF_TOKEN and write wherever a stranger names.
        secret = check_hub_token(secret)
        repo_id = check_repo_id(repo_id)
        token = _selected(session, placeholder)
        import tempfile

        path = export_token(token, Path(tempfile.mkdtemp(dir=jobs_.scratch, prefix="push-")))[0]
        url = push_token(path, repo_id, token=secret)
        return f"Pushed to [{md_text(repo_id)}]({url})."

    push_btn.click(push, [tokens, current, repo, hf_token, jobs], push_md, api_name="push_token",
                   concurrency_limit=2)
    return TokenTab(session_tokens=tokens)


def _arm(jobs: SessionJobs) -> None:
    jobs.arm()


def _stop(jobs: SessionJobs) -> None:
    jobs.stop()
    gr.Info("Stopping at the next step…")


def _stats(step: Any) -> str:
    saved = " · checkpoint saved" if step.checkpointed else ""
    return (f"step {step.step} of {step.steps} · loss {step.loss:.4f} · norm {step.norm:.3f} · "
            f"cosine to init {step.cos_to_init:.3f}{saved}")


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
