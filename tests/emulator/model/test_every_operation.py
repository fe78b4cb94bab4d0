"""Every operation of botocore's ECR model is answered: none is UnknownOperationException."""

from __future__ import annotations

from typing import Any

import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from botocore.session import get_session

from tests.support.emulator import EmulatorProcess, ecr_client

OPERATIONS = sorted(get_session().get_service_model("ecr").operation_names)


@pytest.fixture
async def unchecked(model_emulator: EmulatorProcess) -> Any:
    # Client-side validation off: the emulator itself must refuse the empty input.
    async with ecr_client(model_emulator.url, retries={"total_max_attempts": 1},
                          parameter_validation=False) as client:
        yield client


def test_the_model_has_every_operation_the_brief_counts() -> None:
    assert len(OPERATIONS) >= 58


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_operation_is_answered(unchecked: Any, operation: str) -> None:
    method = getattr(unchecked, xform_name(operation))
    try:
        await method()
    except ClientError as exc:
        error = exc.response["Error"]["Code"]
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        assert error != "UnknownOperationException", exc
        assert status < 500, exc
        # An operation with required members refuses their absence as its model says.
        required = get_session().get_service_model("ecr").operation_model(
            operation).input_shape
        if required is not None and required.required_members:
            assert error in ("InvalidParameterException", "ValidationException"), exc
