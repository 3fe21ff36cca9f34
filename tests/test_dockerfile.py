"""The Dockerfile and the Space set-up do what the README says (no Docker engine needed).

The README sets recap up with ``bash setup.sh && .venv/bin/python app.py``; the image must run
that same set-up (Debian packages from packages.txt, pinned Python packages from
requirements.txt), serve on port 7860 on all interfaces, and not run as root.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def readme_command() -> list[str]:
    """The README's set-up-and-start command, split into its two steps."""
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "setup.sh" in ln and "app.py" in ln and not ln.startswith("#"))
    return [shlex.split(part) for part in line.split("&&")]


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("---", 2)[1]
    return {k.strip(): v.strip().strip('"') for k, v in (ln.split(":", 1) for ln in block.strip().splitlines())}


def test_the_image_runs_the_readme_setup_as_root_then_serves_as_a_user():
    steps = instructions(ROOT / "Dockerfile")
    kinds = [k for k, _ in steps]
    setup, start = readme_command()
    assert setup == ["bash", "setup.sh"] and start == [".venv/bin/python", "app.py"]
    # The README's set-up runs before the switch to the unprivileged user (apt-get needs root).
    setup_at = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "bash setup.sh" in a)
    user_at = max(i for i, k in enumerate(kinds) if k == "USER")
    assert setup_at < user_at
    user = steps[user_at][1]
    assert user not in ("root", "0") and not user.startswith("0:")
    assert any(k == "RUN" and "useradd" in a and "--uid 1000" in a and user in a for k, a in steps)
    # The whole project is copied before the set-up, owned by that user.
    copy_at = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and a.split()[-2:] == [".", "."])
    assert copy_at < setup_at and f"--chown={user}" in steps[copy_at][1]
    # It starts the app exactly as the README does, on port 7860 on every interface.
    assert json.loads(next(a for k, a in steps if k == "CMD")) == start
    assert ("EXPOSE", "7860") in steps
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "GRADIO_SERVER_NAME=0.0.0.0" in env and "GRADIO_SERVER_PORT=7860" in env
    # The base image's Python is the one the Space runs.
    assert re.match(rf"python:{re.escape(front_matter()['python_version'])}\b", steps[0][1])


def test_setup_installs_packages_txt_and_requirements_txt():
    setup = (ROOT / "setup.sh").read_text()
    assert "packages.txt" in setup and "apt-get install" in setup
    assert re.search(r"pip install -q -r requirements\.txt", setup)
    assert (ROOT / "packages.txt").read_text().split() and (ROOT / "requirements.txt").is_file()


def test_local_builds_and_data_stay_out_of_the_image():
    ignored = {ln.strip().rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".venv", "recap_data", "test-artifacts", ".git"} <= ignored


def test_the_space_front_matter_points_at_the_app_with_the_pinned_gradio():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert meta["sdk_version"] == pinned
    assert meta.get("suggested_hardware")
