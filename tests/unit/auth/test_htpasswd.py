"""The htpasswd file: bcrypt only, re-read on change, unknown users cost as much as known."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from gateway.auth.htpasswd import HtpasswdFile
from tests.conftest import require_tool
from tests.integration.auth.helpers import write_htpasswd


async def test_verify_good_bad_and_unknown(tmp_path: Path) -> None:
    users = HtpasswdFile(write_htpasswd(tmp_path / "h", {"alice": "s3cret", "bob": "other"}))
    found = await users.verify("alice", "s3cret")
    assert found is not None and found.name == "alice"
    assert await users.verify("alice", "S3cret") is None
    assert await users.verify("alice", "") is None
    assert await users.verify("carol", "s3cret") is None
    assert await users.verify("bob", "s3cret") is None  # another user's password


async def test_file_written_by_htpasswd_tool(tmp_path: Path) -> None:
    require_tool("htpasswd")
    path = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-B", "-b", "-c", str(path), "alice", "pw1"], check=True,
                   capture_output=True)
    subprocess.run(["htpasswd", "-B", "-b", str(path), "bob", "pw2"], check=True,
                   capture_output=True)
    users = HtpasswdFile(path)
    assert users.users() == ["alice", "bob"]
    assert await users.verify("bob", "pw2") is not None


async def test_changes_are_picked_up_without_restart(tmp_path: Path) -> None:
    path = write_htpasswd(tmp_path / "h", {"alice": "old"})
    users = HtpasswdFile(path)
    before = users.user("alice")
    assert await users.verify("alice", "old") is not None
    replacement = write_htpasswd(tmp_path / "h.new", {"alice": "new", "dave": "pw"})
    os.replace(replacement, path)  # what `htpasswd` and config managers do
    assert await users.verify("alice", "old") is None  # also drops remembered successes
    assert await users.verify("alice", "new") is not None
    assert await users.verify("dave", "pw") is not None
    after = users.user("alice")
    assert before is not None and after is not None
    assert before.fingerprint != after.fingerprint  # refresh tokens of the old password end
    path.write_text("")
    assert users.user("alice") is None


async def test_non_bcrypt_entries_are_skipped(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    path = write_htpasswd(tmp_path / "h", {"alice": "pw"})
    with open(path, "a") as handle:
        handle.write("legacy:$apr1$abc$def\nplain:password\n# comment\n\n")
    with caplog.at_level(logging.WARNING):
        users = HtpasswdFile(path)
    assert users.users() == ["alice"]
    assert "legacy" in caplog.text and "htpasswd -B" in caplog.text
    assert await users.verify("plain", "password") is None


async def test_unreadable_file_keeps_the_users_loaded(tmp_path: Path) -> None:
    path = write_htpasswd(tmp_path / "h", {"alice": "pw"})
    users = HtpasswdFile(path)
    shutil.move(path, tmp_path / "moved")
    assert await users.verify("alice", "pw") is not None


async def test_long_passwords_are_cut_like_htpasswd(tmp_path: Path) -> None:
    password = "x" * 80
    users = HtpasswdFile(write_htpasswd(tmp_path / "h", {"alice": password[:72]}))
    assert await users.verify("alice", password) is not None


async def test_unknown_user_costs_a_bcrypt_round(tmp_path: Path) -> None:
    """Timing does not tell whether a user exists: unknown names are checked against a
    hash of the same cost (compared with a wrong password for a real user)."""
    users = HtpasswdFile(write_htpasswd(tmp_path / "h", {"alice": "pw"}, rounds=10))

    async def timed(name: str) -> float:
        users._verified.clear()
        started = time.perf_counter()
        for _ in range(3):
            await users.verify(name, "wrong")
        return time.perf_counter() - started

    known, unknown = await timed("alice"), await timed("nobody")
    assert unknown > known * 0.5, (known, unknown)


def test_a_file_mixing_bcrypt_costs_is_named(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A user who does not exist is checked at the file's highest cost: users hashed cheaper
    answer faster, which tells who exists. The operator is told, with the cost to use."""
    cheap = write_htpasswd(tmp_path / "cheap", {"alice": "pw"}, rounds=4).read_text()
    dear = write_htpasswd(tmp_path / "dear", {"bob": "pw"}, rounds=6).read_text()
    mixed = tmp_path / "mixed"
    mixed.write_text(cheap + dear)
    with caplog.at_level(logging.WARNING):
        HtpasswdFile(write_htpasswd(tmp_path / "one", {"a": "x", "b": "y"}, rounds=4))
    assert "mixes bcrypt costs" not in caplog.text
    with caplog.at_level(logging.WARNING):
        HtpasswdFile(mixed)
    assert "mixes bcrypt costs (4, 6)" in caplog.text and "htpasswd -B -C 6" in caplog.text
    assert "pw" not in caplog.text.replace("htpasswd", "")
