"""Password files others on the machine may read are named in a warning, once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.config.secret_files import read_secret_file
from gateway.state import redis_connection


def test_a_password_file_others_can_read_is_warned_of_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    private, shared = tmp_path / "private", tmp_path / "shared"
    for path, mode in ((private, 0o600), (shared, 0o644)):
        path.write_text("s3cret pw\n")
        path.chmod(mode)
    with caplog.at_level(logging.WARNING):
        assert read_secret_file(private, "upstream password file") == "s3cret pw"
        assert caplog.records == []
        for _ in range(3):
            assert read_secret_file(shared, "upstream password file") == "s3cret pw"
    assert [r.getMessage() for r in caplog.records] == [
        f"upstream password file {shared} is readable by others (mode 644); chmod 600 it"]
    assert "s3cret" not in caplog.text


def test_the_redis_password_file_is_checked_too(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("pw\n")
    secret.chmod(0o640)
    config = load_config(None, environ={}, overrides={"state": {
        "backend": "redis", "redis_url": "redis://127.0.0.1:6379/0",
        "redis_password_file": str(secret)}})
    with caplog.at_level(logging.WARNING):
        redis_connection(config)
    assert "state.redis_password_file" in caplog.text and "mode 640" in caplog.text
