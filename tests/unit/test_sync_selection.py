"""``ecr-gateway sync``'s tag selection and printing take what an upstream lists: tags of
thousands of digits, escape sequences, names a backtracking pattern takes for ever on; and
its file of images is the operator's, read without a traceback whatever it holds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.pullthrough import selection
from gateway.pullthrough.selection import TagSelection, parse_version
from gateway.pullthrough.sync import printable


async def test_a_version_of_thousands_of_digits_is_no_version() -> None:
    assert parse_version("9" * 5000) is None
    assert parse_version("1.0.0-" + "9" * 5000) is None
    assert parse_version("9" * 18) == (10**18 - 1, 0, 0, ((2, 0, ""),))
    assert parse_version("1.2.3\n") is None
    chosen = await TagSelection.of(last=2).select(
        ["1.0.0", "9" * 5000, "2.0.0", "1.0.0-" + "9" * 5000])
    assert chosen == ["1.0.0", "2.0.0"]


def test_printed_text_cannot_drive_the_terminal() -> None:
    shown = printable("v1\x1b]0;pwned\x07\x1b[2J\r\u202e")
    assert shown == "v1\\x1b]0;pwned\\x07\\x1b[2J\\r\\u202e"
    assert printable("café 1.0") == "café 1.0"


async def test_a_pattern_that_backtracks_is_ended_within_its_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``(a+)+$`` against 40 a's and a ``!`` backtracks for hours: the tags the upstream
    lists cannot hold the sync for ever. Patterns that do not backtrack select as before."""
    tags = ["a" * 40 + "!", "aaa", "v1"]
    assert await TagSelection.of(regex=r"a+|v\d").select(tags) == ["aaa", "v1"]
    monkeypatch.setattr(selection, "PATTERN_SECONDS", 2.0)
    started = time.monotonic()
    with pytest.raises(ValueError, match="took more than 2 seconds"):
        await TagSelection.of(regex="(a+)+$").select(tags)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("text", "said"), [
    ("- just\n- a list\n", "needs images: a list"),
    ("images: {source: x}\n", "needs images: a list"),
    ("images: [{source: 5, destination: a}]\n", "needs source and destination"),
    ("images: [{source: 127.0.0.1:5000/a, destination: b, tags: [1]}]\n",
     "tags must be a mapping"),
    ("images: [{source: 127.0.0.1:5000/a, destination: b, tags: {regex: '('}}]\n",
     "is not a regular expression"),
    ("images: [{source: 127.0.0.1:5000/a, destination: b, tags: {last: three}}]\n",
     "last must be a whole number"),
    ("images: [{source: 127.0.0.1:5000/a, destination: b, tags: {semver: [1]}}]\n",
     "semver must be a string"),
    ("images: [{source: 127.0.0.1:5000/a, destination: b, username: [x]}]\n",
     "username must be a string"),
    ("images: [{{\n", "not YAML"),
])
def test_a_bad_images_file_is_a_usage_error(tmp_path: Path, text: str, said: str) -> None:
    images = tmp_path / "images.yaml"
    images.write_text(text)
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "sync", "--file",
                             str(images)], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert said in result.stderr, result.stderr


@pytest.mark.parametrize("source", [
    "https://puller:s3cret-pass@registry.example.com/app:v1",
    "puller:s3cret-pass@registry.example.com/app",
    "http://puller:s3cret-pass@127.0.0.1:5000/app",
])
def test_credentials_written_into_a_source_are_refused_unsaid(tmp_path: Path,
                                                              source: str) -> None:
    """A password put in a source's URL is refused, and the refusal (in a terminal's or a CI
    job's log) names the source without it, given as arguments or in a file of images."""
    images = tmp_path / "images.yaml"
    images.write_text(f"images: [{{source: '{source}', destination: app}}]\n")
    for args in ([source, "app"], ["--file", str(images)]):
        result = subprocess.run([sys.executable, "-m", "gateway.cli", "sync", *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert "credentials go in username and password_file" in result.stderr, result.stderr
        assert "s3cret-pass" not in result.stdout + result.stderr, result.stderr
        assert "@" not in result.stderr, result.stderr
