"""`corral up`'s access token file: made private, reused only when it is ours and private, never
adopted through a symlink or from a file someone else planted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import click
import pytest

from corral.cli.serve import _token_file


def test_a_new_token_is_private_and_reused(tmp_path: Path) -> None:
    token, path = _token_file(tmp_path)
    assert path == tmp_path / "token" and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _token_file(tmp_path)[0] == token
    path.write_text("")  # an empty file of ours: a new token in it
    again, _ = _token_file(tmp_path)
    assert again and again != token and path.read_text().strip() == again


def test_a_symlinked_token_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    planted = tmp_path / "elsewhere"
    planted.write_text("attackers-token\n")
    planted.chmod(0o600)
    data = tmp_path / "data"
    data.mkdir()
    (data / "token").symlink_to(planted)
    with pytest.raises(click.ClickException, match="not a link"):
        _token_file(data)
    assert planted.read_text() == "attackers-token\n"
    (data / "token").unlink()
    (data / "token").symlink_to(tmp_path / "missing")  # dangling: not followed to create a file there either
    with pytest.raises(click.ClickException):
        _token_file(data)
    assert not (tmp_path / "missing").exists()


def test_a_token_others_may_read_or_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("shared-token\n")
    for mode in (0o644, 0o620, 0o606):
        path.chmod(mode)
        with pytest.raises(click.ClickException, match="other users"):
            _token_file(tmp_path)
        assert stat.S_IMODE(path.stat().st_mode) == mode  # left as it is, for the operator to see


@pytest.mark.skipif(os.getuid() != 0, reason="making a file owned by another user needs root")
def test_a_token_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("planted-token\n")
    path.chmod(0o600)
    os.chown(path, 12345, 12345)
    with pytest.raises(click.ClickException, match="not a regular file owned by you"):
        _token_file(tmp_path)
