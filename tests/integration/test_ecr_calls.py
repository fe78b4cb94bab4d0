"""What :func:`gateway.ecr.calls.call` makes of a value botocore refuses before sending it."""

from __future__ import annotations

import pytest

from gateway.ecr.calls import call
from gateway.ecr.retry import RetryPolicy
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
