"""`ecr-gateway serve`: the zero-argument embedded default, and refusal of bad config."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.emulator import ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_serve_with_no_arguments_is_a_working_registry(tmp_path: Path) -> None:
    if not _port_free(5000):
        pytest.fail("127.0.0.1:5000 is taken; the zero-argument default needs it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**env, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.strip() == "ecr-gateway listening on http://127.0.0.1:5000", ready
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, "http://127.0.0.1:5000")
            _, manifest = await client.push_image("demo/app", "v1", [os.urandom(4096)])
            async with session.get("http://127.0.0.1:5000/v2/demo/app/manifests/v1") as r:
                assert r.status == 200 and await r.read() == manifest
        # State lives under ./.ecr-gateway, the emulator's included.
        assert (tmp_path / ".ecr-gateway" / "emulator").is_dir()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr[-2000:]
    assert "embedded ECR emulator at http://127.0.0.1:" in stderr


@pytest.mark.parametrize("text,expected", [
    ("blobs:\n  mode: sideways\n", "blobs.mode: must be one of redirect, proxy"),
    ("upstream:\n  regoin: eu-west-1\n", "upstream.regoin: unknown key"),
])
def test_bad_config_is_refused_with_key_and_reason(tmp_path: Path, text: str,
                                                   expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert expected in result.stderr


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("blobs:\n  mode: proxy\n")
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "ECR_GATEWAY_BLOBS__MODE": "nonsense"})
    assert result.returncode == 2 and "blobs.mode" in result.stderr


async def test_the_embedded_emulator_is_private_and_never_a_redirect_target(
        tmp_path: Path) -> None:
    """The embedded default hands its emulator a fresh random key per start (file mode
    0600); the emulator refuses any other key and has no control endpoints; blob reads are
    streamed by the gateway instead of a 307 to the emulator's private address."""
    gateway = GatewayProcess(tmp_path / "gw", {"blobs": {"mode": "redirect"}})
    credentials = tmp_path / "gw" / "emulator" / "credentials"
    with gateway:
        emulator_url = _embedded_url(gateway)
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        first_key = credentials.read_text()
        layer = os.urandom(300_000)
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, gateway.url)
            await client.push_image("private/app", "v1", [layer])
            digest = digest_of(layer)
            async with session.get(f"{gateway.url}/v2/private/app/blobs/{digest}",
                                   allow_redirects=False) as r:
                assert r.status == 200, r.headers.get("Location")
                assert await r.read() == layer
            async with session.get(f"{emulator_url}/_emulator/requests") as r:
                assert r.status == 404
        async with ecr_client(emulator_url, access_key_id="AKIDEMBEDDEDGUESS",
                              secret_access_key="guess",
                              retries={"total_max_attempts": 1}) as ecr:
            with pytest.raises(ecr.exceptions.ClientError) as info:
                await ecr.describe_repositories()
        assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
        gateway.restart()
        assert credentials.read_text() != first_key  # a new key for every start
        async with aiohttp.ClientSession() as session:
            assert await OciClient(session, gateway.url).get_blob("private/app", digest) == layer
    assert not any(first_key.split("aws_secret_access_key = ")[1].strip() in line
                   for line in gateway.log_lines)


async def test_the_embedded_emulators_data_is_no_other_users(tmp_path: Path) -> None:
    """The embedded emulator's folder holds every layer and manifest pushed (files another
    local user could read, bypassing the gateway): it is mode 0700, also when an older
    version left it open to everyone; a link in its place stops the start."""
    gateway = GatewayProcess(tmp_path / "gw")
    folder = tmp_path / "gw" / "emulator"
    layer = os.urandom(5000)
    with gateway:
        async with aiohttp.ClientSession() as session:
            await OciClient(session, gateway.url).push_image("private/data", "v1", [layer])
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        gateway.stop()
        folder.chmod(0o755)
        gateway.start()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        async with aiohttp.ClientSession() as session:
            assert await OciClient(session, gateway.url).get_blob(
                "private/data", digest_of(layer)) == layer
    folder.rename(tmp_path / "elsewhere")
    folder.symlink_to(tmp_path / "elsewhere")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "gw")],
        capture_output=True, text=True, timeout=60, env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")},
            "PYTHONPATH": str(Path(__file__).parents[2])})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "refusing to start: data_dir:" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_embedded_emulator_gets_none_of_the_gateways_credentials(tmp_path: Path) -> None:
    """The emulator process inherits what the interpreter and its own settings need, not the
    gateway's secrets given by environment (another process's memory to leak them from)."""
    secret = "wJalrXUtnFEMI-canary-" + os.urandom(6).hex()
    gateway = GatewayProcess(tmp_path / "gw", env={
        "AWS_SECRET_ACCESS_KEY": secret, "OTEL_EXPORTER_OTLP_HEADERS": f"authorization={secret}",
        "REDIS_PASSWORD": secret, "ECR_EMULATOR_MAX_PART_SIZE": "20971520"})
    with gateway:
        _embedded_url(gateway)
        assert gateway.process is not None
        children = Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children")
        (child,) = children.read_text().split()
        environ = dict(entry.split("=", 1) for entry in Path(f"/proc/{child}/environ")
                       .read_bytes().decode().split("\0") if "=" in entry)
    assert not [name for name, value in environ.items() if secret in value]
    assert environ.get("ECR_EMULATOR_MAX_PART_SIZE") == "20971520"
    assert "PATH" in environ


def _embedded_url(gateway: GatewayProcess) -> str:
    for line in gateway.log_lines:
        match = re.search(r"embedded ECR emulator at (http://\S+)", line)
        if match:
            return match[1]
    raise AssertionError("no embedded emulator line in:\n" + "\n".join(gateway.log_lines))
