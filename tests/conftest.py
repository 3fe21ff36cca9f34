"""Shared fixtures: tiny backends built once per session, a private RECAP_HOME per test."""

from __future__ import annotations

import os
import warnings

# The tiny models are dominated by per-op overhead, and several tests start subprocesses next to
# the test process: one thread each avoids oversubscribing a 2-core machine (measured: the
# generation tests run 2x faster than with torch's default of one thread per core).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Under pytest-xdist each worker gets its own Gradio cache, so that tests measuring what a request
# leaves on disk see only their own worker's files.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import tempfile

    os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix=f"gradio-{os.environ['PYTEST_XDIST_WORKER']}-"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session")
def tiny():
    from recap.backends.loading import load_backend

    return load_backend("tiny")


@pytest.fixture(scope="session")
def tiny_audioldm():
    from recap.backends.loading import load_backend

    return load_backend("tiny-audioldm")


@pytest.fixture(params=["tiny", "tiny-audioldm"])
def any_tiny(request):
    """Each test using it runs on both model families."""
    return request.getfixturevalue(request.param.replace("-", "_"))


@pytest.fixture(autouse=True)
def recap_home(tmp_path, monkeypatch):
    home = tmp_path / "recap_home"
    monkeypatch.setenv("RECAP_HOME", str(home))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RECAP_LLM_MODEL", "RECAP_MODEL"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    """Two 1 s beeps (440 and 660 Hz) at 16 kHz: training clips and sources for the app's tests."""
    import numpy as np
    import soundfile as sf

    folder = tmp_path_factory.mktemp("clips")
    t = np.arange(16000) / 16000
    out = []
    for i, hz in enumerate((440.0, 660.0)):
        path = folder / f"beep-{i}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16000)
        out.append(str(path))
    return out
