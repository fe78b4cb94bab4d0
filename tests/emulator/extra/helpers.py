"""Clients and documents for the tests of ECR's policies, lifecycle and tags, and of ECR
Public, in the emulator."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.support.emulator import REGION, aws_client, emulator_at, signed_headers

PUBLIC_REGION = "us-east-1"
ALIAS = "emulator"  # the emulator's default ECR Public registry alias


@contextlib.asynccontextmanager
async def public_client(url: str, *, region: str = PUBLIC_REGION,
                        access_key_id: str | None = None,
                        **config: Any) -> AsyncIterator[Any]:
    """An aiobotocore ``ecr-public`` client of the emulator (no retries unless asked)."""
    config.setdefault("retries", {"total_max_attempts": 1})
    async with aws_client("ecr-public", url, region=region, access_key_id=access_key_id,
                          **config) as client:
        yield client


def keep_last(count: int, *, tag_status: str = "any", priority: int = 1,
              **selection: Any) -> dict[str, Any]:
    """One lifecycle rule: expire all but the ``count`` newest selected images."""
    return {"rulePriority": priority, "description": f"keep the last {count}",
            "selection": {"tagStatus": tag_status, "countType": "imageCountMoreThan",
                          "countNumber": count, **selection},
            "action": {"type": "expire"}}


def lifecycle(*rules: dict[str, Any]) -> str:
    return json.dumps({"rules": list(rules)})


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def user(account: str, key: str) -> str:
    return f"arn:aws:iam::{account}:user/{key}"


async def run_lifecycle(url: str, repository: str | None = None) -> dict[str, Any]:
    """POST /_emulator/lifecycle/run: apply the policies now; what each expired."""
    query = f"?{urlencode({'repository': repository})}" if repository else ""
    emulator = emulator_at(url)
    assert emulator is not None
    target = f"{url}/_emulator/lifecycle/run{query}"
    async with aiohttp.ClientSession() as session, session.post(
            target, headers=emulator.admin_headers("POST", target)) as r:
        assert r.status == 200, await r.text()
        expired: dict[str, Any] = (await r.json())["expired"]
        return expired


async def raw_call(url: str, target: str, body: bytes, *,
                   region: str = REGION) -> tuple[int, dict[str, Any]]:
    """An API request as bytes (for input no SDK would send): (status, JSON answer)."""
    headers = signed_headers(url, body, {"X-Amz-Target": target,
                                         "Content-Type": "application/x-amz-json-1.1"},
                             region=region, service="ecr-public" if target.startswith(
                                 "SpencerFrontendService.") else "ecr")
    async with aiohttp.ClientSession() as session, session.post(url, data=body,
                                                                headers=headers) as r:
        return r.status, json.loads(await r.read())


async def registry_token(url: str, authorization_token: str | None = None) -> str:
    """A bearer token of the emulator's public registry endpoint (anonymous without the
    base64 ``AWS:<password>`` of ECR Public's GetAuthorizationToken)."""
    headers = {"Authorization": f"Basic {authorization_token}"} if authorization_token else {}
    async with aiohttp.ClientSession() as session, session.get(
            f"{url}/token", params={"service": "public.ecr.aws"}, headers=headers) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


def basic_of(authorization_data: dict[str, Any]) -> str:
    """GetAuthorizationToken's token is already base64 ``AWS:<password>``: HTTP Basic."""
    token = str(authorization_data["authorizationToken"])
    assert base64.b64decode(token).startswith(b"AWS:")
    return token
