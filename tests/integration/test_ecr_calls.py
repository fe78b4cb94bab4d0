"""What :func:`gateway.ecr.calls.call` makes of a value botocore refuses before sending it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from gateway.ecr import calls
from gateway.ecr.calls import call
from gateway.ecr.retry import RetryPolicy
from gateway.observability.logs import Sparing
from gateway.oci.errors import OciError
from tests.support.emulator import EmulatorProcess, ecr_client


async def test_a_refused_parameter_is_a_client_error(upstream: EmulatorProcess) -> None:
    """A 4xx without Retry-After, not 503 UNAVAILABLE: waiting cannot make it acceptable.
    Nothing reaches the emulator."""
    upstream.clear_requests()
    async with ecr_client(upstream.url) as client:
        with pytest.raises(OciError) as refused:
            await call(client, "ListImages", RetryPolicy(budget_seconds=1),
                       repositoryName="x")  # ECR names have at least 2 characters
    assert refused.value.status == 400 and refused.value.error.code == "NAME_INVALID"
    assert "Retry-After" not in refused.value.headers
    # The parameter is named; botocore's text (which quotes the value) is not passed on.
    assert refused.value.detail["parameters"] == ["repositoryName"]
    assert "value" not in refused.value.message
    assert upstream.requests("ListImages") == []


async def test_no_credentials_is_said_in_the_log_once_a_minute(
        upstream: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """No key anywhere in the chain: every call is a 503 naming the fix, and the log says
    why (once a minute), where the access log alone showed only the 503s."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(calls, "_NO_CREDENTIALS_SAID", Sparing(), raising=False)
    session = get_session()
    async with session.create_client("ecr", region_name="us-east-1",
                                     endpoint_url=upstream.url) as client:
        for _ in range(3):
            with pytest.raises(OciError) as refused:
                await call(client, "ListImages", RetryPolicy(budget_seconds=1),
                           repositoryName="team/app")
            assert refused.value.status == 503
            assert refused.value.message == calls.NO_CREDENTIALS
    said = [r for r in caplog.records if r.name == "gateway.ecr.calls"
            and r.levelno == logging.WARNING and calls.NO_CREDENTIALS in r.getMessage()]
    assert len(said) == 1, caplog.text
