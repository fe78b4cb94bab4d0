"""Per-action rates (ECR's API quotas): past its bucket a call gets ThrottlingException."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from ecr_emulator.errors import AwsError
from ecr_emulator.throttle import Throttles
from tests.support.emulator import EmulatorProcess, ecr_client

RULES = {"DescribeRepositories": {"rate": 0.2, "burst": 3}}


async def test_an_action_past_its_burst_is_throttled(tmp_path: Path) -> None:
    env = {"ECR_EMULATOR_THROTTLE": json.dumps(RULES)}
    with EmulatorProcess(tmp_path / "ecr", env=env) as emulator:
        async with ecr_client(emulator.url, retries={"total_max_attempts": 1}) as ecr:
            for _ in range(3):
                await ecr.describe_repositories()
            with pytest.raises(ClientError) as info:
                await ecr.describe_repositories()
            error = info.value.response
            assert error["Error"]["Code"] == "ThrottlingException"
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
            for name in ("a1", "a2", "a3", "a4"):  # other actions are not limited
                await ecr.create_repository(repositoryName=f"throttle/{name}")
        assert emulator.requests("DescribeRepositories")[-1]["outcome"] == \
            "ThrottlingException"
        # Quotas are per account and region: another region's bucket is still full.
        async with ecr_client(emulator.url, region="eu-west-1",
                              retries={"total_max_attempts": 1}) as elsewhere:
            await elsewhere.describe_repositories()


def test_buckets_refill_at_their_rate() -> None:
    now = [0.0]
    throttles = Throttles.parse(json.dumps({"*": {"rate": 2, "burst": 2}}),
                                clock=lambda: now[0])
    throttles.check("PutImage")
    throttles.check("PutImage")
    with pytest.raises(AwsError, match="Rate exceeded"):
        throttles.check("PutImage")
    throttles.check("BatchGetImage")  # a bucket per action
    now[0] = 0.5  # one token back
    throttles.check("PutImage")
    with pytest.raises(AwsError):
        throttles.check("PutImage")


@pytest.mark.parametrize("text", ['{"PutImage": 3}', '{"PutImage": {"rate": 0}}', "[1]",
                                  "nonsense"])
def test_malformed_rules_stop_the_start(tmp_path: Path, text: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "emulator", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "ecr")], capture_output=True, text=True, timeout=30,
        env={"ECR_EMULATOR_THROTTLE": text, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert "ECR_EMULATOR_THROTTLE" in result.stderr
