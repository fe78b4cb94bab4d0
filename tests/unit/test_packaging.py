"""The runtime dependencies: what pyproject.toml declares is pinned in requirements.lock, with
only extras the packages define; every pin of every lock carries the hashes pip checks; a
checkout's own virtualenv is never committed."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> list[tuple[str, list[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = []
    for requirement in project["dependencies"]:
        match = _REQUIREMENT.match(requirement)
        assert match, requirement
        extras = [e.strip() for e in (match[2] or "").split(",") if e.strip()]
        found.append((_canonical(match[1]), extras))
    return found


def _pinned(lock: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / lock).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if match:
            pins[_canonical(match[1])] = match[2]
    return pins


def test_every_runtime_dependency_is_pinned_with_real_extras() -> None:
    pins = _pinned("requirements.lock")
    for name, extras in _declared():
        assert name in pins, f"{name} is declared in pyproject.toml, not in requirements.lock"
        offered = metadata.metadata(name).get_all("Provides-Extra") or []
        for extra in extras:
            assert extra in offered, f"{name} has no extra {extra!r} (it offers {offered})"


def test_boto3_is_part_of_the_runtime_at_the_tested_version() -> None:
    """The README points boto3 at the emulator: it must come with the gateway, in the same
    version the tests use."""
    runtime, test = _pinned("requirements.lock"), _pinned("requirements-test.lock")
    for name in ("boto3", "botocore", "s3transfer", "jmespath"):
        assert runtime.get(name) == test.get(name), name


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-test.lock",
                                  "requirements-build.lock"])
def test_every_pin_carries_its_hashes(lock: str) -> None:
    """A mirror or index serving other bytes under a pinned version is refused by pip's
    hash-checking mode, which the install scripts and the image turn on."""
    text = (ROOT / lock).read_text()
    assert _pinned(lock), lock
    # one requirement per entry: the pin line, its "\\"-continued hashes, then "# via" lines
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    for entry in entries:
        name = entry.split("==", 1)[0]
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{lock}: {name} has no hash"
    pin_lines = re.findall(r"^[A-Za-z0-9_.-]+==", text, flags=re.MULTILINE)
    assert len(entries) == len(pin_lines), lock


def test_the_installs_check_hashes() -> None:
    for script in ("scripts/install.sh", "deploy/Dockerfile"):
        text = (ROOT / script).read_text()
        assert "--require-hashes -r requirements-build.lock" in text, script
        assert text.count("--require-hashes") >= 2, script


def test_the_virtualenv_is_ignored() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".venv/" in ignored or ".venv" in ignored
