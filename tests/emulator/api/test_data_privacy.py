"""``ecr-gateway emulator`` keeps its data (layers of private repositories, its signing
secret, the request log) to its own user, in its default folder as in one it is given."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from tests.emulator.api.helpers import push_layer
from tests.support.emulator import ecr_client


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _launch(cwd: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "emulator", "--listen", "127.0.0.1:0", *extra],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})


async def test_the_default_data_folder_is_private(tmp_path: Path) -> None:
    process = _launch(tmp_path)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[1]
        async with ecr_client(url) as ecr:
            await ecr.create_repository(repositoryName="team/app")
            layer = await push_layer(ecr, "team/app", b"private bytes" * 1000)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    data = tmp_path / ".ecr-emulator"
    assert _mode(data) == 0o700
    encoded = layer.split(":", 1)[1]
    assert _mode(data / "blobs" / "sha256" / encoded[:2] / encoded) == 0o600
    assert _mode(data / "requests.log") == 0o600


def test_a_linked_data_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o755)
    (tmp_path / "data").symlink_to(tmp_path / "elsewhere")
    process = _launch(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()  # one that served instead of refusing
    assert process.returncode == 1
    assert "is not a folder" in stderr
    assert not list((tmp_path / "elsewhere").iterdir())
