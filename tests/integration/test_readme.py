"""The README as a newcomer follows it: the shell blocks marked ``<!-- runnable -->`` run as
written (on a free port instead of 5000, with skopeo's login file in the test's folder), and
the access rules of its Authentication example do what its text says."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import require_tool
from tests.integration.auth.helpers import basic, write_htpasswd
from tests.support.clients import free_port
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient

README = Path(__file__).resolve().parents[2] / "README.md"
RUNNABLE = re.compile(r"<!-- runnable -->\n```sh\n(.*?)```", re.DOTALL)


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def _run_walkthrough(tmp_path: Path, blocks: list[str], port: int,
                     timeout: float = 180) -> tuple[int, str]:
    """The blocks as one bash script with ``GW`` on ``port``, as a reader whose port 5000 is
    taken sets it: its exit status and output."""
    script = "set -euo pipefail\n" + "\n".join(blocks)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_GATEWAY_")}
    env.update({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "GW": f"127.0.0.1:{port}",
                "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
                "PYTHONPATH": str(README.parent)})
    process = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        # whatever the script left behind (the gateway and its emulator) goes with it
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return process.returncode, output


def test_the_shared_endpoint_walkthrough_runs_as_written(tmp_path: Path) -> None:
    require_tool("skopeo")
    require_tool("htpasswd")
    blocks = RUNNABLE.findall(_section("A shared endpoint with logins in 5 minutes"))
    assert len(blocks) >= 4, "the walkthrough lost its runnable blocks"
    # The reader's shell may hold a job of its own (the quick start's dockerd): stopping the
    # gateway at the end must not stop that one.
    other = ["sleep 600 >/dev/null 2>&1 & other=$!", *blocks,
             'sleep 1; kill -0 "$other" && echo "the other background job lives"',
             'kill "$other"']
    port = free_port()
    returncode, output = _run_walkthrough(tmp_path, other, port)
    assert returncode == 0, output[-4000:]
    assert "gateway.yaml is valid" in output
    assert "alice may not push to team-b/app: denied, as the rules say" in output
    # what skopeo shows of the refusal says who may not do what
    assert "denied: requested access to the resource is denied: alice may not push to " \
        "team-b/app" in output, output[-3000:]
    assert re.search(r'"Digest": "sha256:[0-9a-f]{64}"', output), output[-2000:]
    # demo-image suggests a push to this gateway, not to the default port
    assert f"docker://127.0.0.1:{port}/demo/app:v1" in output, output[:2000]
    assert "127.0.0.1:5000" not in output, output[:2000]
    assert "the other background job lives" in output, output[-2000:]
    log = (tmp_path / "gw-demo" / "gateway.log").read_text()
    assert "Traceback" not in log and " WARNING " not in log, log[-3000:]
    assert "shutting down" in log, "the walkthrough's last block did not stop the gateway"


def test_the_walkthrough_stops_and_says_why_when_its_port_is_taken(tmp_path: Path) -> None:
    """The wait for the gateway ends when it could not start, its log shown."""
    require_tool("htpasswd")
    blocks = RUNNABLE.findall(_section("A shared endpoint with logins in 5 minutes"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        _, output = _run_walkthrough(tmp_path, blocks[:2], taken.getsockname()[1], timeout=60)
    assert "cannot listen on" in output and "in use" in output, output[-2000:]


async def _anonymous_pull(session: aiohttp.ClientSession, url: str) -> int:
    """A manifest GET without credentials, through the token dance docker does."""
    async with session.get(url) as first:
        if first.status != 401:
            return first.status
        challenge = first.headers["WWW-Authenticate"]
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    async with session.get(params.pop("realm"), params=params) as answer:
        assert answer.status == 200, await answer.text()
        token = (await answer.json())["token"]
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as retried:
        return retried.status


async def test_the_authentication_example_rules_do_what_the_text_says(tmp_path: Path) -> None:
    """admin may push anywhere (public/** too), anyone may pull public/**, alice (team-a)
    may push team-a/** and not team-b/**."""
    blocks = re.findall(r"```yaml\n(.*?)```", _section("Authentication"), re.DOTALL)
    example: dict[str, Any] = next(yaml.safe_load(b) for b in blocks if "rules:" in b)
    users = write_htpasswd(tmp_path / "htpasswd", {"alice": "alice-pw", "admin": "admin-pw"})
    example["auth"]["htpasswd_file"] = str(users)
    example.pop("tls", None)  # the example's certificate files are not here
    example.pop("listen", None)  # GatewayProcess listens on a free loopback port
    with GatewayProcess(tmp_path / "gw", example) as gateway:
        async with aiohttp.ClientSession() as anonymous:
            async with aiohttp.ClientSession(headers=basic("admin", "admin-pw")) as s:
                await OciClient(s, gateway.url).push_image("public/x", "v1", [b"public" * 50])
            status = await _anonymous_pull(anonymous, f"{gateway.url}/v2/public/x/manifests/v1")
            assert status == 200
            async with aiohttp.ClientSession(headers=basic("alice", "alice-pw")) as s:
                alice = OciClient(s, gateway.url)
                await alice.push_image("team-a/app", "v1", [b"team-a" * 50])
                async with s.post(f"{gateway.url}/v2/team-b/app/blobs/uploads/") as refused:
                    assert refused.status == 403, await refused.text()
                    body = await refused.json()
                    assert body["errors"][0]["code"] == "DENIED"
            # and anonymous callers may not push even where they may pull
            async with anonymous.post(f"{gateway.url}/v2/public/y/blobs/uploads/") as r:
                assert r.status == 401


pytestmark = pytest.mark.timeout(300)
