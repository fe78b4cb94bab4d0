"""Runs the atheris harness (atheris_parsers.py) for a bounded number of inputs in a
subprocess: libFuzzer exits non-zero and prints the crashing input if any parser raised
anything but an OciError. Skipped where atheris is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.fuzz.strategies import LONG

pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")

ROOT = Path(__file__).parents[3]


def test_atheris_finds_no_crash(tmp_path: Path) -> None:
    from tests.unit.fuzz.atheris_parsers import seeds

    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    for number, seed in enumerate(seeds()):
        (corpus / f"seed-{number}").write_bytes(seed)
    runs = 1_000_000 if LONG else 50_000
    result = subprocess.run(
        [sys.executable, "-m", "tests.unit.fuzz.atheris_parsers", str(corpus), f"-runs={runs}",
         "-max_len=4096", "-seed=1", "-print_final_stats=1", f"-artifact_prefix={artifacts}/"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    done = [line for line in output.splitlines() if "DONE" in line]
    print(f"\natheris: {done[-1] if done else output[-500:]}")
    assert not list(artifacts.iterdir()), "crash artifacts were written"
