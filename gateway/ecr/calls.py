"""Every ECR API call goes through :func:`call`: retries, error mapping and call counting."""

from __future__ import annotations

import contextvars
from typing import Any

from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError

from gateway.ecr.errors import SERVER_FAULTS, THROTTLES, EcrError
from gateway.ecr.retry import RetryPolicy
from gateway.observability.metrics import UPSTREAM_CALLS, upstream_attempt
from gateway.oci import errors as oci
from gateway.oci.errors import OciError

# Per-request tally of upstream calls, read by the access log.
upstream_calls: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "upstream_calls", default=None)


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in THROTTLES or code in SERVER_FAULTS or status >= 500
    return isinstance(exc, (BotoCoreError, OSError, TimeoutError))


async def call(client: Any, action: str, policy: RetryPolicy, **params: Any) -> dict[str, Any]:
    """Perform one ECR action; raise EcrError (an OciError) on failure."""
    method = getattr(client, xform_name(action))
    tally = upstream_calls.get()
    counter = UPSTREAM_CALLS.labels(action)
    attempts = 0

    async def attempt() -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        counter.inc()
        if tally is not None:
            tally.append(action)
        with upstream_attempt(action, attempts, THROTTLES):
            result: dict[str, Any] = await method(**params)
        return result

    try:
        return await policy.run(attempt, _retriable)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code not in THROTTLES and status >= 500:
            code = "ServerException"
        raise EcrError(action, code, error.get("Message", ""), exc.response) from exc
    except (BotoCoreError, OSError, TimeoutError) as exc:
        raise OciError(oci.UNAVAILABLE, {"ecr_action": action},
                       message=f"upstream ECR unreachable: {type(exc).__name__}",
                       headers={"Retry-After": "1"}) from exc
