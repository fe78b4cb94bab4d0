"""Every ECR API call goes through :func:`call`: retries, error mapping and call counting."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
from botocore import xform_name
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from gateway.ecr.errors import SERVER_FAULTS, THROTTLES, EcrError, oci_error_for
from gateway.ecr.retry import RetryPolicy
from gateway.observability.logs import Sparing, unsaid
from gateway.observability.metrics import UPSTREAM_CALLS, outcome_of, upstream_attempt
from gateway.observability.tracing import EcrAttemptSpan
from gateway.oci import errors as oci
from gateway.oci.errors import OciError

log = logging.getLogger(__name__)

NO_CREDENTIALS = ("the gateway has no AWS credentials: set upstream.access_key_id and"
                  " upstream.secret_access_key, or give it the AWS_* environment, a profile"
                  " or an instance role")
# Without credentials every call fails alike: the log says so once a minute (the clients
# get the 503 each time), so the operator reads the cause, not only a 503 in the access log.
_NO_CREDENTIALS_SAID = Sparing()


@dataclass(frozen=True)
class Counted:
    """An ECR client whose calls are tallied for one request's access-log line (the list is
    the RequestContext's ``calls``)."""

    client: Any
    calls: list[str]


def counted(client: Any, calls: list[str] | None) -> Any:
    """``client``, counting its calls into ``calls`` when a request counts them."""
    return client if calls is None else Counted(client, calls)


# The connection failed, was refused, timed out or closed before the whole answer arrived
# (botocore wraps most of aiohttp's errors; a body cut short can also surface unwrapped).
# These, and 5xx answers, are what the circuit breaker counts as the endpoint being down.
_TRANSIENT = (HTTPClientError, BotoConnectionError, aiohttp.ClientError, OSError, TimeoutError)


# botocore's validation report, one problem a line: what is wrong, and with which parameter.
# Only those two are repeated to the client (the report also quotes the values).
_PROBLEM = re.compile(r'^(Invalid \w+|Missing required parameter|Unknown parameter)'
                      r'(?: for parameter | in \S+: "?)([\w.\[\]]+)')


def _bad_parameters(exc: ParamValidationError, action: str) -> OciError:
    """botocore refused the request before sending it: the client asked for something ECR
    cannot take (a reference or parameter out of ECR's bounds). Never retried."""
    problems = [m.groups() for m in map(_PROBLEM.match, str(exc.kwargs.get("report", ""))
                                        .splitlines()) if m]
    names = {name for _, name in problems}
    error = oci.NAME_INVALID if "repositoryName" in names else \
        oci_error_for(action, "InvalidParameterException")
    if error.status >= 500:
        error = oci.PARAMETER_INVALID
    named = "; ".join(f"{what.lower()}: {name}" for what, name in problems) or "invalid input"
    return OciError(error, {"ecr_action": action,
                            "parameters": sorted(names)},
                    message=f"{error.message}: ECR {action} refuses the request ({named})")


def _server_fault(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code not in THROTTLES and (code in SERVER_FAULTS or status >= 500)


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        return code in THROTTLES or _server_fault(exc)
    # Not a bad request (ParamValidationError, missing credentials): retrying cannot help.
    return isinstance(exc, _TRANSIENT)


def _outage(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT) or _server_fault(exc)


async def call(client: Any, action: str, policy: RetryPolicy, **params: Any) -> dict[str, Any]:
    """Perform one ECR action; raise EcrError (an OciError) on failure."""
    tally: list[str] | None = None
    if isinstance(client, Counted):
        client, tally = client.client, client.calls
    method = getattr(client, xform_name(action))
    counter = UPSTREAM_CALLS.labels(action)
    attempts = 0

    breaker = policy.breaker
    endpoint = str(getattr(getattr(client, "meta", None), "endpoint_url", ""))

    async def attempt() -> dict[str, Any]:
        nonlocal attempts
        if breaker is not None:
            breaker.before(endpoint)  # 503 at once while the endpoint is known to be down
        attempts += 1
        counter.inc()
        if tally is not None:
            tally.append(action)
        span = EcrAttemptSpan(action, attempts, params)
        try:
            with upstream_attempt(action, attempts, THROTTLES):
                result: dict[str, Any] = await method(**params)
        except Exception as exc:
            span.finish(outcome_of(exc))
            if breaker is not None:
                (breaker.failure if _outage(exc) else breaker.success)(endpoint)
            raise
        except BaseException as exc:
            span.finish(outcome_of(exc))
            if breaker is not None:
                breaker.released(endpoint)
            raise
        span.finish("ok")
        if breaker is not None:
            breaker.success(endpoint)
        return result

    try:
        result = await policy.run(attempt, _retriable)
        # botocore's own field, counting this module's replays: a caller can tell that an
        # earlier attempt may have landed (a replayed delete that finds nothing).
        result.setdefault("ResponseMetadata", {})["RetryAttempts"] = attempts - 1
        return result
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code not in THROTTLES and status >= 500:
            code = "ServerException"
        # The client sees this message scrubbed of account ids and ARNs; operators see all.
        log.info("ECR %s answered %s: %s", action, code, error.get("Message", ""))
        raise EcrError(action, code, error.get("Message", ""), exc.response) from exc
    except ParamValidationError as exc:
        raise _bad_parameters(exc, action) from exc
    except NoCredentialsError as exc:
        # a setup mistake, not an outage: name what would fix it
        if (count := _NO_CREDENTIALS_SAID.due("none")) is not None:
            log.warning("ECR %s not called: %s%s", action, NO_CREDENTIALS, unsaid(count))
        raise OciError(oci.UNAVAILABLE, {"ecr_action": action},
                       message=NO_CREDENTIALS, headers={"Retry-After": "1"}) from exc
    except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise OciError(oci.UNAVAILABLE, {"ecr_action": action},
                       message=f"upstream ECR unreachable: {type(exc).__name__}",
                       headers={"Retry-After": "1"}) from exc
