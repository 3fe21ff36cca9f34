"""ZeroGPU as it really behaves, on a CPU: every GPU-gated call in a child forked for it.

Two apps are launched on 127.0.0.1 with the tiny model: one emulating ZeroGPU
(``Settings(zero_gpu="emulate")``, what ``RECAP_EMULATE_ZERO_GPU=1`` sets), one as elsewhere. The
same requests must give the same results in both; what a call changes stays in its child; what
does not pickle fails here, not on a Space.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from recap.config import Settings, zero_gpu_mode

gradio_client = pytest.importorskip("gradio_client")
import gradio as gr  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from recap.ui import zerogpu  # noqa: E402
from recap.ui.context import AppContext  # noqa: E402
from recap.ui.zerogpu_emulator import emulated_gpu  # noqa: E402
from test_ui import free_port, table  # noqa: E402


def launch(home: Path, mode: str | None):
    from recap.ui.app import build_app, launch_options

    ctx = AppContext.create(Settings(home=home, model="tiny", zero_gpu=mode))
    demo = build_app(ctx)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                **launch_options(ctx))
    return ctx, demo


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """{"zero": (ctx, url), "plain": (ctx, url)}: the same app emulating ZeroGPU and not."""
    zero_ctx, zero = launch(tmp_path_factory.mktemp("zero-home"), "emulate")
    plain_ctx, plain = launch(tmp_path_factory.mktemp("plain-home"), None)
    yield {"zero": (zero_ctx, zero.local_url), "plain": (plain_ctx, plain.local_url)}
    zero.close()
    plain.close()


def worker_calls(ctx: AppContext, name: str) -> list[int]:
    return [seconds for task, seconds in ctx.gpu_calls if task == name]


# ----------------------------------------------------------------------------- detection and start-up
def test_zero_gpu_is_what_spaces_zero_gpu_says_not_an_importable_package():
    assert zero_gpu_mode({}) is None  # every Space can import `spaces`; that alone is not ZeroGPU
    for on in ("true", "True", "1", "t"):
        assert zero_gpu_mode({"SPACES_ZERO_GPU": on}) == "spaces"
    assert zero_gpu_mode({"SPACES_ZERO_GPU": "false"}) is None
    assert zero_gpu_mode({"RECAP_EMULATE_ZERO_GPU": "1"}) == "emulate"


def test_models_are_loaded_at_start_up_and_never_unloaded_on_zero_gpu(apps):
    zero_ctx, _ = apps["zero"]
    plain_ctx, _ = apps["plain"]
    loaded = {m["label"] for m in zero_ctx.loaded()}
    assert zero_ctx.start_model == "tiny" and zero_ctx._backends.keys() >= {"tiny", "tiny-audioldm"}, loaded
    assert zero_ctx.max_loaded is None and zero_ctx.train_chunk_steps == 50
    assert plain_ctx.max_loaded == 2 and plain_ctx.train_chunk_steps is None


# ----------------------------------------------------------------------------- the app, over HTTP
def generate(url: str) -> tuple:
    rows = table(["baseline", "baseline", 0, "rain on a tin roof"], ["manual-1", "manual", 4, "rain on a metal roof"])
    return Client(url, verbose=False).predict("tiny", rows, [], "", "0, 1", 1.0, 2, 7.0, "", False, False,
                                              api_name="/generate")


def test_generate_in_a_worker_gives_what_it_gives_in_process(apps):
    before = len(worker_calls(apps["zero"][0], "generate_and_analyze"))
    z_status, z_pairs, z_summary = generate(apps["zero"][1])
    p_status, p_pairs, p_summary = generate(apps["plain"][1])
    assert worker_calls(apps["zero"][0], "generate_and_analyze")[before:] == [zerogpu.MIN_SECONDS]  # 4 clips x 2 steps: the floor
    assert "2 variant(s) × 2 seed(s) = 4 clips" in z_status
    np.testing.assert_allclose(np.array([r[3:7] for r in z_pairs["data"]], float),
                               np.array([r[3:7] for r in p_pairs["data"]], float), rtol=1e-4, atol=1e-5)
    # the run was written by the worker, to the folder the app serves
    zero_ctx, _ = apps["zero"]
    assert len(list(zero_ctx.settings.runs_dir.glob("*/manifest.json"))) >= 1


def train(url: str, clips: list[str]) -> tuple:
    client = Client(url, verbose=False)
    out = client.predict("tiny", [handle_file(p) for p in clips], "<zero-beep>", "word", "sound", 1, 2, 0.02, 2, 1,
                         0, 0, 1, api_name="/train_token")
    return client, out


def saved_vectors(ctx: AppContext) -> np.ndarray:
    from recap.tokens.files import load_token

    (path,) = ctx.settings.tokens_dir.glob("*zero-beep*.safetensors")
    return load_token(ctx.backend("tiny")[0], path).vectors.numpy()


def test_token_training_in_a_worker_trains_the_same_token(apps, clips):
    before = len(worker_calls(apps["zero"][0], "train_chunk"))
    client, (curve, message, preview, active, *_rest) = train(apps["zero"][1], clips)
    train(apps["plain"][1], clips)
    assert "Trained `<zero-beep>`" in message and Path(preview).is_file()  # the preview crossed back
    assert active["data"][0][0] == "<zero-beep>"
    assert len(worker_calls(apps["zero"][0], "train_chunk")) == before + 1 and worker_calls(apps["zero"][0], "nearest_rows")
    np.testing.assert_allclose(saved_vectors(apps["zero"][0]), saved_vectors(apps["plain"][0]), rtol=1e-5, atol=1e-6)
    # the session's token (trained in the worker) is used by the next call there
    rows = table(["baseline", "baseline", 0, "rain"], ["token-1", "token", 5, "a recording of <zero-beep>"])
    status, pairs, _ = client.predict("tiny", rows, [], "", "0", 1.0, 2, 7.0, "", False, False, api_name="/generate")
    assert [r[0] for r in pairs["data"]] == ["token-1"]


def test_scoring_and_style_transfer_in_a_worker_match_in_process(apps, clips):
    rows = table(["baseline", "baseline", 0, "rain on a tin roof"], ["manual-1", "manual", 4, "rain on a roof"])
    scored = {k: Client(url, verbose=False).predict("tiny", rows, api_name="/score_variants")
              for k, (_, url) in apps.items()}
    assert scored["zero"]["data"] == scored["plain"]["data"]

    def transfer(url: str) -> list:
        return Client(url, verbose=False).predict("tiny", handle_file(clips[0]), [handle_file(clips[1])],
                                                  "a recording of rain", "0, 1", "0", 2, api_name="/transfer")[2]["data"]

    before = len(worker_calls(apps["zero"][0], "run_transfer"))
    zero, plain = transfer(apps["zero"][1]), transfer(apps["plain"][1])
    assert len(worker_calls(apps["zero"][0], "run_transfer")) == before + 1
    np.testing.assert_allclose(np.array([r[:6] for r in zero], float), np.array([r[:6] for r in plain], float),
                               rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the worker's semantics
def test_what_a_call_changes_stays_in_the_worker(apps):
    ctx, _ = apps["zero"]
    seen: list[str] = []

    def fill_cache(backend):
        seen.append("in the worker")  # a list of the app's: the worker has its own copy
        ctx._failed["made-up"] = "changed inside the call"
        return backend.name, ctx.backend("tiny")[0].name

    assert ctx.gpu(fill_cache)(ctx.backend("tiny")[0]) == ("tiny", "tiny")
    assert seen == [] and "made-up" not in ctx.failures()

    def load_inside():
        return ctx.backend("stabilityai/stable-audio-open-1.0")  # not loaded at start-up here

    with pytest.raises(RuntimeError, match="only the models loaded at start-up"):
        ctx.gpu(load_inside)()
    assert "stabilityai/stable-audio-open-1.0" not in ctx._backends


def test_what_does_not_pickle_fails_loudly(apps):
    ctx, _ = apps["zero"]

    def returns_a_lock():
        return threading.Lock()

    with pytest.raises(gr.Error, match="pickle") as info:
        ctx.gpu(returns_a_lock)()
    assert info.value.title == "ZeroGPU worker error"
    with pytest.raises(TypeError, match="pickle"):
        ctx.gpu(len)(threading.Lock())  # an argument that cannot cross is refused in the app


def test_errors_stop_and_progress_cross_as_they_are(apps):
    from recap.errors import BadInput, Cancelled

    ctx, _ = apps["zero"]

    def refuses(backend):
        raise BadInput("seconds must be at most 1")

    with pytest.raises(BadInput, match="seconds must be at most 1"):  # recap's sentence, not "worker error"
        ctx.gpu(refuses)(ctx.backend("tiny")[0])

    def runs_until_stopped(stop, progress):
        progress(1, 2, "waiting")
        deadline = time.monotonic() + 20
        while not stop.is_set():
            if time.monotonic() > deadline:
                return "never stopped"
            time.sleep(0.02)
        raise Cancelled("stopped")

    stop, calls = threading.Event(), []
    threading.Timer(0.5, stop.set).start()
    with pytest.raises(Cancelled):
        ctx.gpu(runs_until_stopped)(stop, lambda *a: calls.append(a))
    assert calls == [(1, 2, "waiting")]


def test_duration_is_sized_from_the_request():
    from recap.backends.registry import get_spec
    from recap.generation.grid import GenerationConfig

    class Model:
        name = get_spec("stabilityai/stable-audio-open-1.0").name

    assert zerogpu.grid_seconds(Model(), [1], GenerationConfig(seeds=[0], steps=2)) == zerogpu.MIN_SECONDS
    small = zerogpu.grid_seconds(Model(), [1, 2], GenerationConfig(seeds=[0, 1], steps=100))
    larger = zerogpu.grid_seconds(Model(), [1, 2, 3], GenerationConfig(seeds=[0, 1], steps=100))
    assert zerogpu.MIN_SECONDS < small < larger < zerogpu.MAX_SECONDS
    assert zerogpu.grid_seconds(Model(), list(range(20)), GenerationConfig(seeds=list(range(8)))) == zerogpu.MAX_SECONDS
    # the model's default steps count when the request leaves them out
    assert zerogpu.grid_seconds(Model(), [1, 2], GenerationConfig(seeds=[0, 1])) > zerogpu.MIN_SECONDS
    with pytest.raises(gr.Error, match="larger than the maximum"):
        emulated_gpu(len, duration=zerogpu.MAX_SECONDS + 1)([1])
