"""Learned tokens and Textual Inversion on a public server: what a stranger's file, clip or click can do.

Token files are what strangers send each other, the token folder is shared by every visitor, and
*Push to the Hub* runs on a server that may hold the owner's ``HF_TOKEN``. Each test states one
promise and breaks when the protection behind it is removed. The web tests go over real HTTP to
one launched app (``served``), with ``gradio_client`` and with :class:`RawSession`, which speaks
the browser's queue protocol.
"""

from __future__ import annotations

import argparse
import json
import pickle
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from attack import RawSession, served, upload
from safetensors.torch import save, save_file

from recap.audio_io import Clip, write_wav
from recap.config import Settings
from recap.tokens.files import LearnedToken, TokenFileError, list_tokens, load_token, read_token_file, save_token
from recap.tokens.checkpoints import TrainingDiverged
from recap.tokens.training import TIConfig, train_token

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

SR = 16_000
SERVER_SECRET = "hf_SERVERowner0secret0never0used0by0visitors"
VISITOR_SECRET = "hf_visitorTyped0their0own0token0123"


# ----------------------------------------------------------------------------- helpers
def beep(seconds: float = 1.0, peak: float = 0.5, name: str = "beep.wav") -> Clip:
    t = np.arange(int(SR * seconds)) / SR
    return Clip((peak * np.sin(2 * np.pi * 600 * t))[None].astype(np.float32), SR, name)


def token_for(backend, placeholder: str = "<sec-x>", vectors: torch.Tensor | None = None, **meta) -> LearnedToken:
    v = vectors if vectors is not None else torch.randn(1, backend.embedding_dim, generator=torch.Generator().manual_seed(0))
    return LearnedToken(placeholder, v, {"model_id": backend.model_id, "model_name": backend.name, "complete": True,
                                         "steps_done": 3, **meta})


def raw_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def cfg(**kw) -> TIConfig:
    base = dict(placeholder="<sec-beep>", init_word="beep", steps=3, seconds=1.0, batch_size=1, checkpoint_every=0)
    return TIConfig(**{**base, **kw})


class Recorder:
    """A stand-in Hugging Face Hub on 127.0.0.1 that records every request and refuses it,
    echoing the credential it was sent (so a message that passes the Hub's words on must
    scrub it)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                recorder.requests.append({"method": self.command, "path": self.path,
                                          "authorization": self.headers.get("authorization", "")})
                body = json.dumps({"error": f"Invalid credentials {self.headers.get('authorization', '')}"}).encode()
                self.send_response(401)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = _any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def hub_calls(self) -> list[dict]:
        """Every request but the test's own gradio_client housekeeping: its telemetry ping and
        huggingface_hub's daily fetch of an agent-harness registry (both without credentials)."""
        return [r for r in self.requests
                if not r["path"].startswith(("/api/telemetry/", "/api/agent-harnesses")) or r["authorization"]]


@pytest.fixture
def fake_hub(monkeypatch):
    """The owner's HF_TOKEN is set, and the Hub is a local recorder (huggingface_hub reads its
    endpoint once at import, so the constant is pointed there too)."""
    import huggingface_hub.constants

    with Recorder() as hub:
        monkeypatch.setenv("HF_TOKEN", SERVER_SECRET)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        yield hub



@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with served(Settings(home=tmp_path_factory.mktemp("tokens-home"), model="tiny", public=True)) as launched:
        yield launched


@pytest.fixture(scope="module")
def token_file(tmp_path_factory, tiny) -> Path:
    """A good token file for the tiny model, as a visitor would upload it."""
    return save_token(token_for(tiny, "<sec-push>"), tmp_path_factory.mktemp("upload"), "sec-push")


# ----------------------------------------------------------------------------- token files
def test_a_safetensors_whose_header_length_is_128_mod_256_loads(tiny, tmp_path):
    """Its first byte is 0x80, a pickle's first byte: only parsing the header tells them apart."""
    vectors = torch.randn(1, tiny.embedding_dim)
    for pad in range(512):
        data = save({"<round>": vectors}, metadata={"model_id": tiny.model_id, "note": "x" * pad})
        if int.from_bytes(data[:8], "little") % 256 == 128:
            break
    path = tmp_path / "round.safetensors"
    path.write_bytes(data)
    assert path.read_bytes()[0] == 0x80
    token = load_token(tiny, path)
    assert token.placeholder == "<round>" and torch.equal(token.vectors, vectors)


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_renamed_pickle_is_refused_unread(tiny, tmp_path, protocol):
    ran = tmp_path / "ran"

    class Payload:  # what unpickling a stranger's file would run
        def __reduce__(self):
            return (Path.touch, (ran,))

    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(pickle.dumps({"<x>": Payload()}, protocol=protocol))
    with pytest.raises(TokenFileError, match="pickle.*refused"):
        load_token(tiny, disguised)
    archive = tmp_path / "archive.safetensors"
    torch.save({"<x>": torch.zeros(1, 16)}, archive)
    with pytest.raises(TokenFileError, match="pickle or torch archive.*refused"):
        load_token(tiny, archive)
    assert not ran.exists()


BAD_TENSORS = {
    "no vectors": ({"<none>": torch.zeros(0, 16)}, "1 to 16 vectors; this one has 0"),
    "17 vectors": ({"<many>": torch.zeros(17, 16)}, "1 to 16 vectors; this one has 17"),
    "NaN": ({"<nan>": torch.tensor([[float("nan")] * 16])}, "NaN or infinite"),
    "inf": ({"<inf>": torch.full((1, 16), float("inf"))}, "NaN or infinite"),
    "3-D": ({"<cube>": torch.zeros(1, 2, 16)}, r"\[n_vectors, width\]; it has shape \(1, 2, 16\)"),
    "integers": ({"<int>": torch.zeros(1, 16, dtype=torch.int32)}, "floating point"),
    "two tensors": ({"<a>": torch.zeros(1, 16), "<b>": torch.zeros(1, 16)}, "expected one token tensor"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_unusable_tensors_are_refused_with_a_sentence(any_tiny, tmp_path, case):
    tensors, words = BAD_TENSORS[case]
    path = raw_file(tmp_path / "bad.safetensors", tensors)
    with pytest.raises(TokenFileError, match=words) as info:
        load_token(any_tiny, path)
    assert str(info.value).startswith("bad.safetensors: ")


def _vocab_spelling(backend) -> str:
    """How this tokenizer spells the word 'bell' in its vocabulary (T5 '▁bell', RoBERTa 'Ġbell')."""
    return next(t for t in ("▁bell", "Ġbell") if t in backend.tokenizer.get_vocab())


@pytest.mark.parametrize("placeholder, words", [
    ("", "empty"), ("   ", "empty"), ("<a b>", "spaces"), ("<ding\x07>", "control or invisible"),
    ("<zero\u200bwidth>", "control or invisible"), ("<" + "x" * 60 + ">", "at most 40"),
    ("bell", "already in the vocabulary"), ("the", "already in the vocabulary"), ("Bell", "vocabulary|ordinary word"),
    ("xylophone", "ordinary word"), ("<unk>", "already in the vocabulary"), ("VOCAB", "already in the vocabulary"),
])
def test_placeholders_that_are_not_new_words_are_refused(any_tiny, tmp_path, placeholder, words):
    """For the T5 (`tiny`) and the CLAP/RoBERTa (`tiny-audioldm`) tokenizers: a placeholder the
    tokenizer already reads as one token, or an ordinary word, would take that word over in
    every prompt (the baseline too); empty ones would replace `<unk>`."""
    placeholder = _vocab_spelling(any_tiny) if placeholder == "VOCAB" else placeholder
    path = raw_file(tmp_path / "t.safetensors", {placeholder: torch.randn(1, any_tiny.embedding_dim)},
                    {"model_id": any_tiny.model_id})
    with pytest.raises(TokenFileError, match=words):
        load_token(any_tiny, path)
    with pytest.raises(ValueError, match=words):  # training one is refused before anything runs
        train_token(any_tiny, [beep()], cfg(placeholder=placeholder), checkpoint_dir=tmp_path / "ck")


def test_a_new_word_leaves_every_other_prompt_as_it_was(any_tiny):
    """What the refusals protect: the baseline's text encoding is unchanged by a loaded token."""
    vectors = torch.randn(1, any_tiny.embedding_dim)
    prompts = ["a bell rings in the hall", "the bell"]
    torch.testing.assert_close(any_tiny.embed_text(prompts, tokens={"<bell-x>": vectors}), any_tiny.embed_text(prompts),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="already in the vocabulary"):  # also where no loader checked
        any_tiny.embed_text(prompts, tokens={"bell": vectors})


def test_a_lone_safetensors_for_another_model_is_refused(tiny, tiny_audioldm, tmp_path):
    """Same width (16), other model: the metadata inside the file says so, without its .json."""
    path = save_token(token_for(tiny, "<lone>"), tmp_path)
    path.with_suffix(".json").unlink()
    assert load_token(tiny, path).meta["model_id"] == tiny.model_id
    with pytest.raises(TokenFileError, match=f"trained for {tiny.model_id}, not {tiny_audioldm.model_id}"):
        load_token(tiny_audioldm, path)


def test_one_bad_file_never_breaks_the_shared_listing(tiny, tmp_path, caplog):
    from recap.cli.tokens import run_list
    from recap.ui.token import saved_choices

    folder = tmp_path / "tokens"
    good = save_token(token_for(tiny, "<good>"), folder)
    save_token(token_for(tiny, "<badjson>"), folder).with_suffix(".json").write_text("{not json")
    save_token(token_for(tiny, "<listjson>"), folder).with_suffix(".json").write_text("[1, 2]")
    whole = save_token(token_for(tiny, "<cut>"), folder).read_bytes()
    (folder / "cut.safetensors").write_bytes(whole[: len(whole) - 7])
    (folder / "junk.safetensors").write_bytes(b"\xff" * 64)
    (folder / "nan.safetensors").write_bytes(save({"<nan>": torch.full((1, 16), float("nan"))}))
    (folder / "folder.safetensors").mkdir()
    assert [t.placeholder for t in list_tokens(folder)] == ["<good>"]
    assert saved_choices(folder) == [(saved_choices(folder)[0][0], good.name)]
    for name in ("badjson.json", "listjson.json", "cut.safetensors", "junk.safetensors", "nan.safetensors"):
        assert name in caplog.text
    assert run_list(argparse.Namespace(dir=str(folder))) == 0  # `recap tokens`


def test_a_stale_json_beside_a_rewritten_token_is_not_believed(tiny, tmp_path):
    """A crash between the two writes of a save leaves a .json of the old token: it is ignored."""
    old = save_token(token_for(tiny, "<pair>", init_word="rain"), tmp_path, "pair")
    stale = old.with_suffix(".json").read_bytes()
    save_token(token_for(tiny, "<pair>", init_word="bell"), tmp_path, "pair")
    old.with_suffix(".json").write_bytes(stale)
    assert read_token_file(old).meta.get("init_word") == "bell"  # from the file's own metadata


# ----------------------------------------------------------------------------- training
def test_a_clip_peaking_at_1e30_is_normalised_with_a_warning_never_a_nan_token(tiny, tmp_path, caplog):
    path = write_wav(tmp_path / "loud.wav", beep(peak=1e30).audio, SR)  # a float WAV holds it
    steps = []
    token = train_token(tiny, [str(path)], cfg(), on_step=steps.append, checkpoint_dir=tmp_path / "ck")
    assert torch.isfinite(token.vectors).all() and token.meta["complete"]
    assert any("loud.wav peaks at 1e+30" in n and "scaled down" in n for n in token.meta["notes"])
    assert steps[0].notes == tuple(token.meta["notes"]) and steps[1].notes == ()
    assert "loud.wav peaks at 1e+30" in caplog.text  # what the command line shows
    nan = Clip(np.full((1, SR), np.nan, np.float32), SR, "nan.wav")
    with pytest.raises(ValueError, match="nan.wav: contains NaN or infinite samples"):
        train_token(tiny, [nan], cfg(), checkpoint_dir=tmp_path / "ck2")


def test_a_loss_that_stops_being_finite_ends_training_and_saves_nothing(tiny, tmp_path, monkeypatch):
    real = tiny.ti_loss
    calls = []

    def failing(*args, **kwargs):  # the model's own loss, until it overflows at the 3rd step
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("inf") if len(calls) >= 3 else loss

    monkeypatch.setattr(tiny, "ti_loss", failing)
    checkpoints = tmp_path / "ck"
    with pytest.raises(TrainingDiverged, match="Training stopped at step 3: the loss became inf. Nothing"):
        train_token(tiny, [beep()], cfg(steps=6, checkpoint_every=1), checkpoint_dir=checkpoints)
    info = json.loads((checkpoints / "checkpoint.json").read_text())
    assert info["step"] == 2  # the last finite state, untouched
    from safetensors.torch import load_file

    assert torch.isfinite(load_file(str(checkpoints / "checkpoint.safetensors"))["vectors"]).all()
    with pytest.raises(TokenFileError, match="NaN or infinite"):  # nor can anything save one
        save_token(token_for(tiny, "<nan>", torch.full((1, 16), float("nan"))), tmp_path / "tokens")
    assert not (tmp_path / "tokens").exists()


@pytest.mark.parametrize("setting, value, words", [
    ("steps", 5001, "steps must be a whole number from 1 to 5000"),
    ("steps", float("inf"), "steps must be a whole number"),
    ("n_vectors", 0, "vectors must be a whole number from 1 to 16"),
    ("n_vectors", 17, "vectors must be a whole number from 1 to 16"),
    ("learning_rate", float("nan"), "learning rate must be a number"),
    ("learning_rate", 0.0, "learning rate must be above 0"),
    ("learning_rate", 50.0, "learning rate must be a number from 0 to 1"),
    ("batch_size", 10_000, "batch size must be a whole number from 1 to 64"),
    ("seed", -1, "seed must be a whole number"),
    ("mix_snr_db", float("nan"), "noise SNR"),
    ("augment_copies", 10**6, "augmented copies"),
    ("templates", ["{0.__class__}"], "must contain {}"),
])
def test_every_training_setting_is_bounded_in_the_core(tiny, tmp_path, setting, value, words):
    with pytest.raises(ValueError, match=words):
        train_token(tiny, [beep()], cfg(**{setting: value}), checkpoint_dir=tmp_path)


def test_too_many_clips_are_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="33 training clips; at most 32"):
        train_token(tiny, [beep()] * 33, cfg(), checkpoint_dir=tmp_path)


def test_a_stopped_cli_retrain_leaves_the_finished_token_byte_identical(tiny, tmp_path, monkeypatch, capsys):
    """Ctrl-C during a retrain of an existing name: the finished token stays as it was."""
    from recap.cli import main

    monkeypatch.setenv("RECAP_HOME", str(tmp_path / "home"))
    clip = str(write_wav(tmp_path / "beep.wav", beep().audio, SR))
    args = ["train-token", "--model", "tiny", "--clips", clip, "--token", "<beep>", "--init-word", "beep",
            "--seconds", "1", "--batch-size", "1", "--checkpoint-every", "1"]
    assert main([*args, "--steps", "2"]) == 0
    finished = tmp_path / "home" / "tokens" / "beep.safetensors"
    before = finished.read_bytes(), finished.with_suffix(".json").read_bytes()
    assert read_token_file(finished).meta["complete"] is True

    backend_class = type(tiny)
    real = backend_class.ti_loss
    calls = []

    def interrupted(self, *a, **kw):  # the user presses Ctrl-C during the 2nd step
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return real(self, *a, **kw)

    monkeypatch.setattr(backend_class, "ti_loss", interrupted)
    capsys.readouterr()
    assert main([*args, "--steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "stopped at step 2 of 50" in out and "nothing" in out and "resume with --resume" in out.lower()
    assert (finished.read_bytes(), finished.with_suffix(".json").read_bytes()) == before
    # the core refuses it too, whoever calls it
    stopped = token_for(tiny, "<beep>", complete=False)
    with pytest.raises(TokenFileError, match="holds a finished token"):
        save_token(stopped, finished.parent)
    assert finished.read_bytes() == before[0]


# ----------------------------------------------------------------------------- the web app
def test_push_with_an_empty_token_never_uses_the_servers_hf_token(app, token_file, fake_hub):
    """Through gradio_client and the raw queue: a sentence, and not one request reaches the Hub."""
    _, url = app
    client = Client(url, verbose=False)
    client.predict("tiny", handle_file(str(token_file)), api_name="/upload_token")
    for empty in ("", "   "):
        with pytest.raises(AppError, match="needs your own Hugging Face token"):
            client.predict("<sec-push>", "stranger/target", empty, api_name="/push_token")

    tab = RawSession(url)
    loaded = tab.call(tab.event(api_name="upload_token"), ["tiny", None, upload(url, token_file), None])
    assert loaded.ok, loaded.error
    push = tab.event(api_name="push_token")
    out = tab.call(push, [None, "<sec-push>", "stranger/target", "", None])
    assert not out.ok and "needs your own Hugging Face token" in out.error
    assert fake_hub.hub_calls == []

    # The recorder is really where pushes go: a typed token reaches it, and only that token.
    out = tab.call(push, [None, "<sec-push>", "visitor/my-token", VISITOR_SECRET, None])
    assert not out.ok and "could not push" in out.error and "401" in out.error
    assert fake_hub.hub_calls and {r["authorization"] for r in fake_hub.hub_calls} == {f"Bearer {VISITOR_SECRET}"}
    assert VISITOR_SECRET not in out.error and SERVER_SECRET not in json.dumps(fake_hub.requests)
    with pytest.raises(AppError, match="not a Hub repository id"):
        client.predict("<sec-push>", "../../etc", VISITOR_SECRET, api_name="/push_token")


def test_the_core_push_refuses_an_empty_token_before_any_request(token_file, fake_hub):
    """Whoever calls it: an empty token is never handed to huggingface_hub, which would use HF_TOKEN."""
    from recap.errors import BadInput
    from recap.tokens.files import push_token

    for empty in ("", "  ", None):
        with pytest.raises(BadInput, match="needs your own Hugging Face token"):
            push_token(token_file, "stranger/target", empty)
    with pytest.raises(BadInput, match="not well formed") as info:
        push_token(token_file, "stranger/target", "hf_two words")
    assert "hf_two" not in str(info.value)
    assert fake_hub.hub_calls == []


def test_a_token_name_in_a_toast_arrives_escaped(app, tiny, tmp_path):
    _, url = app
    path = save_token(token_for(tiny, "<warble>"), tmp_path, "warble")
    tab = RawSession(url)
    out = tab.call(tab.event(api_name="upload_token"), ["tiny", None, upload(url, path), None])
    assert out.ok, out.error
    shown = [m["log"] for m in out.logs]
    assert any("&lt;warble&gt;" in m for m in shown) and not any("<warble>" in m for m in shown)


def test_the_shared_list_survives_a_bad_file_in_the_app(app, tiny):
    ctx, url = app
    folder = ctx.settings.tokens_dir
    save_token(token_for(tiny, "<shared-good>"), folder)
    save_token(token_for(tiny, "<shared-bad>"), folder).with_suffix(".json").write_text("{")
    choices = Client(url, verbose=False).predict(api_name="/list_tokens")["choices"]
    assert [c[1] for c in choices] == ["shared-good.safetensors"]


def test_a_far_too_loud_upload_trains_with_a_warning_the_visitor_sees(app, tmp_path):
    ctx, url = app
    clip = write_wav(tmp_path / "loud.wav", beep(peak=1e30).audio, SR)
    tab = RawSession(url)
    train = tab.event(api_name="train_token")
    out = tab.call(train, ["tiny", [upload(url, clip)], "<sec-loud>", "word", "beep", 1, 2, 0.02, 1, 1, 0, 0, 0,
                           None, None])
    assert out.ok, out.error
    warnings = [m["log"] for m in out.logs if m.get("level") == "warning"]
    assert any("loud.wav peaks at 1e+30" in w and "scaled down" in w for w in warnings)
    assert "scaled down to peak 1\\.0" in out.output[1]  # the status line says it too (Markdown-escaped)
    saved = next(ctx.settings.tokens_dir.glob("sec-loud-*.safetensors"))
    assert torch.isfinite(read_token_file(saved).vectors).all()
