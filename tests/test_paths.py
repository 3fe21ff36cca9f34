"""Folders are replaced whole: a reader sees the old folder or the complete new one."""

from __future__ import annotations

import pytest

from recap.paths import replace_dir


def _folder(path, files):
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_a_staged_folder_replaces_the_old_one_whole(tmp_path):
    target = _folder(tmp_path / "tokens", {"draw-1": "old", "draw-9": "stale"})
    staged = _folder(tmp_path / ".tokens.tmp", {"draw-1": "new"})
    replace_dir(staged, target)
    assert {p.name: p.read_text() for p in target.iterdir()} == {"draw-1": "new"}  # no stale file survives
    assert not staged.exists() and not (tmp_path / "tokens.old").exists()


def test_a_missing_staged_folder_leaves_the_target_as_it_was(tmp_path):
    target = _folder(tmp_path / "tokens", {"draw-1": "old"})
    with pytest.raises(FileNotFoundError, match="left as it was"):
        replace_dir(tmp_path / ".tokens.tmp", target)
    assert (target / "draw-1").read_text() == "old"
