"""HTTPS served by the gateway: a certificate from a test CA, verified by clients that trust
that CA and refused by those that do not; new certificate files are picked up without a
restart; files that do not load stop the start with a clear message."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from tests.integration.auth.conftest import htpasswd_auth
from tests.integration.auth.helpers import TestCA, basic, request
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tlsgw(upstream: EmulatorProcess, htpasswd: Path, ca: TestCA,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("tls")
    ca.issue(folder / "server.crt", folder / "server.key", common_name="first")
    config = {"auth": htpasswd_auth(htpasswd),
              "tls": {"cert_file": str(folder / "server.crt"),
                      "key_file": str(folder / "server.key"), "reload_interval_seconds": 0.2}}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gateway:
        yield gateway


def trusting(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.cert_path))


def served_common_name(port: int, ca: TestCA) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with trusting(ca).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


async def test_https_with_the_test_ca(tlsgw: GatewayProcess, ca: TestCA) -> None:
    assert tlsgw.url.startswith("https://127.0.0.1:")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting(ca))) as s:
        challenge = await request(s, "GET", tlsgw.url + "/v2/")
        assert challenge.status == 401
        assert f'realm="{tlsgw.url}/token"' in challenge.headers["WWW-Authenticate"]
        token = await request(s, "GET", f"{tlsgw.url}/token?service=ecr-gateway",
                              basic("alice", "alice-pw"))
        assert token.status == 200


async def test_clients_without_the_ca_refuse_the_server(tlsgw: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await request(s, "GET", tlsgw.url + "/v2/")


async def test_plain_http_gets_no_answer(tlsgw: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            await request(s, "GET", f"http://{tlsgw.host}/v2/",
                          timeout=aiohttp.ClientTimeout(total=10))


async def test_new_certificate_files_are_served_without_restart(
        tlsgw: GatewayProcess, ca: TestCA, tmp_path: Path) -> None:
    config_tls = tlsgw.config["tls"]
    assert await asyncio.to_thread(served_common_name, tlsgw.port, ca) == "first"
    ca.issue(tmp_path / "new.crt", tmp_path / "new.key", common_name="second")
    # Write the key first, then the certificate: each file replaced at once, as tools do.
    os.replace(tmp_path / "new.key", config_tls["key_file"])
    os.replace(tmp_path / "new.crt", config_tls["cert_file"])
    deadline = time.monotonic() + 10
    while await asyncio.to_thread(served_common_name, tlsgw.port, ca) != "second":
        assert time.monotonic() < deadline, "the new certificate was not picked up"
        await asyncio.sleep(0.1)
    assert tlsgw.process is not None and tlsgw.process.poll() is None  # same process


async def test_a_certificate_without_its_key_leaves_the_old_pair_served(
        tlsgw: GatewayProcess, ca: TestCA, tmp_path: Path) -> None:
    """Halfway through a replacement (the certificate written, its key not yet) the pair
    served before stays served: every handshake still succeeds."""
    config_tls = tlsgw.config["tls"]
    before = await asyncio.to_thread(served_common_name, tlsgw.port, ca)
    ca.issue(tmp_path / "next.crt", tmp_path / "next.key", common_name="next")
    os.replace(tmp_path / "next.crt", config_tls["cert_file"])
    for _ in range(10):  # five reload intervals
        assert await asyncio.to_thread(served_common_name, tlsgw.port, ca) == before
        await asyncio.sleep(0.1)
    os.replace(tmp_path / "next.key", config_tls["key_file"])
    deadline = time.monotonic() + 10
    while await asyncio.to_thread(served_common_name, tlsgw.port, ca) != "next":
        assert time.monotonic() < deadline, "the completed pair was not picked up"
        await asyncio.sleep(0.1)


def test_unloadable_files_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    config = tmp_path / "config.yaml"
    config.write_text(f"tls: {{cert_file: {tmp_path / 'c.pem'}, key_file: {tmp_path / 'k.pem'}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--listen",
         "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "tls.cert_file" in result.stderr


async def test_a_key_others_can_read_is_named_at_start(
        upstream: EmulatorProcess, ca: TestCA, tmp_path: Path) -> None:
    """Whoever reads the server's key can pass for the registry: a key file open to other
    users is named in a warning, as the other secret files are."""
    ca.issue(tmp_path / "server.crt", tmp_path / "server.key", common_name="loose")
    (tmp_path / "server.key").chmod(0o644)
    config = {"tls": {"cert_file": str(tmp_path / "server.crt"),
                      "key_file": str(tmp_path / "server.key")}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
        assert await gateway.logged(f"TLS key {tmp_path / 'server.key'} is readable by others")
