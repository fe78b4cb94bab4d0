"""What ``ecr-gateway serve`` says at start and about its clients' probes: a taken port and an
unusable data directory are one line each, the data directory is named absolute, a TLS probe
on the plain port is no warning, a missing AWS credential is named."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess


def test_a_port_in_use_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", "--listen", f"127.0.0.1:{port}",
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ecr-gateway: ") and f"127.0.0.1:{port}" in lines[0], lines
    assert "in use" in lines[0]
    assert "--listen" in lines[0], "the refusal does not say how to choose another address"
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr
    # The embedded emulator was never started: it would have made its data folder.
    assert not (tmp_path / "data" / "emulator").exists()


@pytest.mark.parametrize("data_dir", ["a-file", "a-file/data"])
def test_a_data_dir_that_cannot_be_used_is_one_line_and_starts_nothing(
        tmp_path: Path, data_dir: str) -> None:
    """A file where the folder should be, or a folder under a file: the setting named and
    how to choose another, not a traceback from the embedded emulator's start."""
    (tmp_path / "a-file").write_text("not a folder\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")}
    with socket.create_server(("127.0.0.1", 0)) as free:
        port = free.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--listen", f"127.0.0.1:{port}",
         "--data-dir", data_dir], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        check=False, env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"ecr-gateway: cannot use data_dir {tmp_path / data_dir}: ")
    assert "--data-dir" in lines[0], "the refusal does not say how to choose another folder"
    assert (tmp_path / "a-file").read_text() == "not a folder\n"
    with socket.create_server(("127.0.0.1", port)):
        pass  # the port was let go


@pytest.mark.parametrize("auth", [
    # a typo in the path: every login would fail as "wrong user name or password"
    {"htpasswd_file": "htpaswd"},
    {"htpasswd_file": "htpasswd", "token": {"signing_key_file": "signing-key.pem"}},
])
def test_a_file_the_configuration_names_that_is_missing_stops_the_start(
        tmp_path: Path, auth: dict[str, object]) -> None:
    """What check-config calls invalid, serve refuses: one line naming the key and the file,
    not a gateway nobody can log in to, nor a traceback after the emulator started."""
    (tmp_path / "htpasswd").write_text("")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"auth": {
        "mode": "htpasswd", **auth,
        "rules": [{"repository": "**", "users": ["*"], "actions": ["pull"]}]}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--listen",
         "127.0.0.1:0", "--data-dir", "data"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("ecr-gateway: refusing to start: auth."), result.stderr
    assert "does not exist" in result.stderr and "listening" not in result.stdout
    assert not (tmp_path / "data").exists()  # nothing started


def test_the_data_directory_is_logged_absolute(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", "relative-data"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    absolute = str((tmp_path / "relative-data").resolve())
    assert f"data directory: {absolute}" in stderr, stderr
    assert f"(data in {absolute}/emulator)" in stderr, stderr


def test_a_tls_probe_on_the_plain_port_is_not_a_warning(tmp_path: Path) -> None:
    """docker and skopeo try HTTPS first; the gateway answers it as before, logged at debug."""
    with GatewayProcess(tmp_path, {"log_level": "debug"}) as gateway:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
            try:
                context.wrap_socket(raw, server_hostname="127.0.0.1").close()
            except (ssl.SSLError, OSError):
                pass  # the expected outcome: the port speaks plain HTTP
        with urllib.request.urlopen(f"{gateway.url}/v2/", timeout=10) as answer:
            assert answer.status == 200
    probe = [line for line in gateway.log_lines if "HTTPS traffic on an HTTP port" in line]
    assert probe, gateway.log_lines[-20:]
    assert all(" DEBUG " in line and " WARNING " not in line for line in probe), probe


def test_a_configuration_that_is_not_yaml_is_refused_without_quoting_it(
        tmp_path: Path) -> None:
    """The YAML parser's own message quotes the line it stopped at (or an alias it could not
    find, ``*pw``): a secret written there would reach the log of every failed start, and
    check-config's output. Line and column say where instead."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    broken = {
        "unterminated": f'upstream:\n  mode: aws\n  secret_access_key: "{secret}\n',
        "colon": f"state:\n  backend: redis\n  redis_url: redis://:{secret}: x@r:6379/0\n",
        "alias": f"upstream:\n  mode: aws\n  secret_access_key: *{secret.replace('/', '')}\n",
        # a value starting with ! is a tag; the parser quotes one holding ' in double quotes
        "tag": f"upstream:\n  mode: aws\n  secret_access_key: !{secret}'s\n",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")}
    for name, text in broken.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        for command in (["serve", "--config", str(path), "--listen", "127.0.0.1:0",
                         "--data-dir", str(tmp_path / "data")],
                        ["check-config", str(path)]):
            result = subprocess.run([sys.executable, "-m", "gateway.cli", *command],
                                    capture_output=True, text=True, timeout=60, check=False,
                                    env=env)
            output = result.stdout + result.stderr
            assert result.returncode == 2, (name, command[0], output)
            assert secret not in output and secret[:12] not in output, (name, command[0],
                                                                        output)
            assert re.search(rf"{re.escape(str(path))}:\d+:\d+: ", result.stderr), (
                name, command[0], result.stderr)
            assert "is not valid YAML" in result.stderr and "Traceback" not in output


@pytest.mark.parametrize("chain,expected", [
    ({}, "upstream.access_key_id"),
    # a container credential endpoint that answers nothing
    ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/credentials"}, "its log"),
])
def test_a_gateway_without_aws_credentials_says_so(upstream: EmulatorProcess, tmp_path: Path,
                                                   chain: dict[str, str],
                                                   expected: str) -> None:
    """``upstream.mode: aws`` with nothing usable in the credential chain: a 503 that says
    what is missing, never a 500."""
    nowhere = str(tmp_path / "absent")
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_CONFIG_FILE": nowhere,
           "AWS_EC2_METADATA_DISABLED": "true", **chain}
    config = {"upstream": {"mode": "aws", "endpoint_url": upstream.url}}
    with GatewayProcess(tmp_path / "gw", config, env=env) as gateway:
        try:
            urllib.request.urlopen(f"{gateway.url}/v2/a/b/tags/list", timeout=60)
            raise AssertionError("answered without credentials")
        except urllib.error.HTTPError as refused:
            status, body = refused.code, json.loads(refused.read())
    assert status == 503, body
    message = body["errors"][0]["message"]
    assert "AWS credentials" in message and expected in message, message
