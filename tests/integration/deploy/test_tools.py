"""``iam-policy`` and ``doctor`` against the emulator, which enforces IAM-style policies per
access key: the generated policy is exactly enough for what the routes allow, and doctor
says in plain words what a weaker identity lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml

from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient

ADMIN, RESTRICTED, WEAK = "AKIDTOOLSADMIN", "AKIDTOOLSRESTRICTED", "AKIDTOOLSWEAK"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def _put_policies(emulator: EmulatorProcess, document: dict[str, Any]) -> None:
    emulator.control("PUT", "policies", document)


@pytest.fixture
def emulator(tmp_path: Path) -> Any:
    with EmulatorProcess(tmp_path / "ecr") as process:
        yield process


def _gateway_config(tmp_path: Path, emulator: EmulatorProcess) -> dict[str, Any]:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("robot:" + bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(4)).decode()
                        + "\n")
    return {
        "upstream": {"mode": "aws", "endpoint_url": emulator.url, "region": "us-east-1",
                     "access_key_id": RESTRICTED,
                     "secret_access_key": emulator.secret_for(RESTRICTED)},
        "auth": {"mode": "htpasswd", "htpasswd_file": str(htpasswd),
                 "rules": [{"repository": "ci/**", "users": ["robot"],
                            "actions": ["pull", "push"]},
                           {"repository": "**", "anonymous": True, "actions": ["pull"]}]},
        "routes": [{"prefix": "ci", "repository_prefix": "ci"},
                   {"prefix": "", "create_on_push": False}],
    }


async def test_generated_policy_is_enough_and_no_more(emulator: EmulatorProcess,
                                                      tmp_path: Path) -> None:
    config = _gateway_config(tmp_path, emulator)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = _cli("iam-policy", "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    # The emulator now holds the gateway's identity to exactly that policy.
    _put_policies(emulator, {RESTRICTED: document["Statement"]})

    # Someone with full rights puts a base image where the pull-only route maps.
    admin_env = emulator.upstream_env(ADMIN)
    with GatewayProcess(tmp_path / "admin", upstream_url=emulator.url, env=admin_env) as admin:
        async with aiohttp.ClientSession() as session:
            await OciClient(session, admin.url).push_image("shared/base", "v1", [b"base" * 99])

    with GatewayProcess(tmp_path / "gw", config) as gateway:
        robot = {"Authorization": aiohttp.encode_basic_auth("robot", "s3cret-pass")}
        async with aiohttp.ClientSession(headers=robot) as session:
            # Push through the ci route: CreateRepository, uploads, PutImage all allowed.
            digest, _ = await OciClient(session, gateway.url).push_image(
                "ci/app", "v1", [os.urandom(4096)])
            async with session.get(f"{gateway.url}/v2/ci/app/manifests/{digest}") as r:
                assert r.status == 200
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(f"{gateway.url}/v2/shared/base/manifests/v1") as r:
                assert r.status == 200, await r.text()  # pull actions suffice

    # No more than that: the identity cannot write where only pulls go, nor delete in ci/.
    async with ecr_client(emulator.url, access_key_id=RESTRICTED) as ecr:
        for call in (ecr.initiate_layer_upload(repositoryName="shared/base"),
                     ecr.batch_delete_image(repositoryName="ci/app",
                                            imageIds=[{"imageTag": "v1"}]),
                     ecr.create_repository(repositoryName="other/app")):
            with pytest.raises(Exception) as denied:
                await call
            assert "AccessDenied" in str(denied.value)


async def test_doctor_reports_in_plain_words(emulator: EmulatorProcess, tmp_path: Path) -> None:
    config = _gateway_config(tmp_path, emulator)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    async with ecr_client(emulator.url, access_key_id=ADMIN) as ecr:
        await ecr.create_repository(repositoryName="ci/app")
    policy = json.loads(_cli("iam-policy", "--config", str(config_file)).stdout)
    _put_policies(emulator, {
        RESTRICTED: policy["Statement"],
        # A weaker identity: may get a token and list repositories, may not read images.
        WEAK: [{"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken",
                                              "ecr:DescribeRepositories"], "Resource": "*"}],
        "AKIDTOOLSNOTHING": [{"Effect": "Deny", "Action": "*"}]})

    good = _cli("doctor", "--config", str(config_file))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "credentials: ECR in us-east-1 accepted the access key " + RESTRICTED in good.stdout
    assert "clock: within" in good.stdout
    assert "route 'ci' → ECR repositories ci/*" in good.stdout
    assert "(us-east-1): 1 repository, ci/app is readable" in good.stdout, good.stdout
    assert "no problems found" in good.stdout

    weak = _cli("doctor", "--config", str(config_file),
                env=emulator.upstream_env(WEAK))
    assert weak.returncode == 1
    assert "PROBLEM  route 'ci' → ECR repositories ci/* in this account (us-east-1): cannot " \
        "read ci/app: denied (AccessDeniedException)" in weak.stdout, weak.stdout

    nothing = _cli("doctor", "--config", str(config_file),
                   env=emulator.upstream_env("AKIDTOOLSNOTHING"))
    assert nothing.returncode == 1
    assert "PROBLEM  credentials: ECR in us-east-1 refused the access key AKIDTOOLSNOTHING" \
        in nothing.stdout, nothing.stdout

    broken = _cli("doctor", "--config", str(config_file),
                  env={"ECR_GATEWAY_STATE__BACKEND": "redis",
                       "ECR_GATEWAY_STATE__REDIS_URL": "redis://127.0.0.1:1/0"})
    assert broken.returncode == 1
    assert "PROBLEM  state store (redis) does not answer" in broken.stdout


def test_doctor_says_unreachable_not_refused(tmp_path: Path) -> None:
    """Nothing listens at the endpoint: no key was refused, none was even checked."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: connections are refused
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"upstream": {
        "mode": "aws", "endpoint_url": f"http://127.0.0.1:{port}", "access_key_id": RESTRICTED,
        "secret_access_key": "doctor-test-secret", "retry_budget_seconds": 1}}))
    result = _cli("doctor", "--config", str(config_file))
    assert result.returncode == 1
    assert f"PROBLEM  credentials: not checked: http://127.0.0.1:{port} is unreachable" \
        in result.stdout, result.stdout
    assert "refused" not in result.stdout


def test_doctor_says_no_credentials_not_unreachable(emulator: EmulatorProcess,
                                                    tmp_path: Path) -> None:
    """A reachable endpoint and no key anywhere in the chain: doctor names the missing
    credentials (as the gateway's 503 does), not an unreachable endpoint."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"upstream": {"mode": "aws",
                                                        "endpoint_url": emulator.url}}))
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    home = tmp_path / "home"  # no ~/.aws here
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "doctor", "--config", str(config_file)],
        capture_output=True, text=True, timeout=60,
        env={**bare, "HOME": str(home), "AWS_EC2_METADATA_DISABLED": "true"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PROBLEM  credentials: none found in the default AWS credential chain: the gateway " \
        "has no AWS credentials" in result.stdout, result.stdout
    assert "unreachable" not in result.stdout
