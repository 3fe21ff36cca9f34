"""Shared fixtures: tiny backends built once per session, a private RECAP_HOME per test."""

from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session")
def tiny():
    from recap.backends import load_backend

    return load_backend("tiny")


@pytest.fixture(scope="session")
def tiny_audioldm():
    from recap.backends import load_backend

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
