"""``ecr-gateway doctor --config FILE``: check what the gateway needs before serving.

In order: the configuration; the state store (Redis answers); the credentials (ECR hands
the gateway a registry token); the clock (ECR refuses requests signed more than 15 minutes
off its own clock); then for every route and mirror, that the identity can list and read
the ECR repositories it maps to. Each finding is one line in plain words; the exit status
is 0 when nothing is wrong, 1 otherwise. Nothing is written upstream (push rights are not
exercised: compare with ``ecr-gateway iam-policy``).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import NoCredentialsError

from gateway.config import Config, ConfigError, load_config
from gateway.ecr.calls import call
from gateway.ecr.clients import ClientFactory
from gateway.ecr.errors import EcrError
from gateway.ecr.retry import RetryPolicy
from gateway.oci import errors as oci
from gateway.oci.errors import OciError

SKEW_LIMIT = 900.0  # ECR refuses requests signed more than 15 minutes off its clock
SKEW_WARN = 60.0


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: int = 0

    def ok(self, text: str) -> None:
        self.lines.append(f"ok       {text}")

    def note(self, text: str) -> None:
        self.lines.append(f"note     {text}")

    def problem(self, text: str) -> None:
        self.problems += 1
        self.lines.append(f"PROBLEM  {text}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, EcrError):
        if exc.code in ("AccessDeniedException", "UnrecognizedClientException",
                        "InvalidSignatureException"):
            return f"denied ({exc.code}): {exc.response.get('Error', {}).get('Message', '')}"
        return f"{exc.code}: {exc.response.get('Error', {}).get('Message', '')}"
    if isinstance(exc, OciError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _unreachable(exc: BaseException) -> bool:
    """No answer at all (connection refused, DNS, timeout), as opposed to ECR saying no."""
    return (isinstance(exc, OciError) and not isinstance(exc, EcrError)
            and exc.error is oci.UNAVAILABLE)


def _server_time(response: dict[str, Any]) -> float | None:
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None


async def _check(config: Config, report: Report) -> None:
    from gateway.app import upstream_factory
    from gateway.state import session_store

    store = session_store(config)
    try:
        await store.ping()
        report.ok(f"state store ({config.state.backend}) answers")
    except Exception as exc:
        report.problem(f"state store ({config.state.backend}) does not answer: {_why(exc)}")
    finally:
        await store.close()

    if config.upstream.mode == "embedded":
        report.note("upstream.mode is embedded: the gateway runs its own ECR emulator, so "
                    "there are no credentials, clock or repository permissions to check")
        return
    if config.upstream.access_key_id:
        who = f"the access key {config.upstream.access_key_id}"
    elif os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        who = f"the web identity of role {os.environ.get('AWS_ROLE_ARN', '?')} (IRSA)"
    else:
        who = "the default AWS credential chain"
    clients = ClientFactory(max_connections=4, timeout=min(config.upstream.call_timeout_seconds,
                                                           20.0))
    policy = RetryPolicy(budget_seconds=min(config.upstream.retry_budget_seconds, 5.0))
    upstream_for = upstream_factory(config)
    try:
        region = config.upstream.region
        client = await clients.client(upstream_for(region, None))
        started = time.time()
        try:
            answer = await call(client, "GetAuthorizationToken", policy)
        except Exception as exc:
            if isinstance(exc.__cause__, NoCredentialsError):  # nothing was sent anywhere
                report.problem(f"credentials: none found in {who}: {_why(exc)}")
                return
            if _unreachable(exc):
                where = config.upstream.endpoint_url or f"ECR in {region}"
                cause = type(exc.__cause__ or exc).__name__
                report.problem(f"credentials: not checked: {where} is unreachable ({cause})")
                return
            report.problem(f"credentials: ECR in {region} refused {who}: {_why(exc)}")
            response = getattr(exc, "response", None)
            server = _server_time(response) if isinstance(response, dict) else None
            if server is not None and abs(server - started) > SKEW_LIMIT:
                report.problem(f"clock: this machine is {started - server:+.0f} s off ECR's "
                               f"clock; requests are refused beyond {SKEW_LIMIT:.0f} s (fix NTP)")
            return
        report.ok(f"credentials: ECR in {region} accepted {who}")
        server = _server_time(answer)
        if server is None:
            report.note("clock: the upstream sent no Date header; skew not measured")
        else:
            skew = (started + time.time()) / 2 - server
            if abs(skew) > SKEW_LIMIT:
                report.problem(f"clock: {skew:+.0f} s off ECR's clock (the limit is "
                               f"{SKEW_LIMIT:.0f} s)")
            elif abs(skew) > SKEW_WARN:
                report.note(f"clock: {skew:+.0f} s off ECR's clock; fix NTP before it "
                            f"reaches {SKEW_LIMIT:.0f} s")
            else:
                report.ok(f"clock: within {max(abs(skew), 1):.0f} s of ECR's clock")
        targets: list[tuple[str, str, str | None, str, bool]] = []
        for route in config.effective_routes():
            if route.upstream_kind == "ecr-public":
                report.note(f"route '{route.prefix}': ECR Public, not checked here")
                continue
            targets.append((f"route '{route.prefix or '(every name)'}'",
                            route.region or region, route.registry_id,
                            route.repository_prefix, route.create_on_push))
        for host, mirror in config.mirrors.items():
            from gateway.tools.iam_policy import _mirror_target

            if host == "public.ecr.aws":
                report.note("mirror public.ecr.aws: ECR Public, not checked here")
                continue

            mregion, registry = _mirror_target(host, mirror.region, mirror.registry_id, config)
            targets.append((f"mirror {host}", mregion, registry, mirror.repository_prefix,
                            False))
        for label, where, registry_id, prefix, creates in targets:
            await _check_target(clients, upstream_for, policy, report, label, where,
                                registry_id, prefix, creates)
    finally:
        await clients.close()


async def _check_target(clients: ClientFactory, upstream_for: Any, policy: RetryPolicy,
                        report: Report, label: str, region: str, registry_id: str | None,
                        prefix: str, creates: bool) -> None:
    client = await clients.client(upstream_for(region, None))
    ids = {"registryId": registry_id} if registry_id else {}
    place = (f"ECR repositories {prefix + '/*' if prefix else '*'} in "
             f"{registry_id or 'this account'} ({region})")
    names: list[str] = []
    token: str | None = None
    try:
        while True:
            extra = {"nextToken": token} if token else {}
            answer = await call(client, "DescribeRepositories", policy, maxResults=1000,
                                **ids, **extra)
            names += [r["repositoryName"] for r in answer.get("repositories", [])]
            token = answer.get("nextToken")
            if not token:
                break
    except Exception as exc:
        report.problem(f"{label} → {place}: cannot list repositories: {_why(exc)}")
        return
    mine = [n for n in names if not prefix or n == prefix or n.startswith(prefix + "/")]
    if not mine:
        if creates:
            report.note(f"{label} → {place}: none exists yet; the first push creates it "
                        "(needs ecr:CreateRepository)")
        else:
            report.problem(f"{label} → {place}: none exists and this route does not create "
                           "repositories: pulls and pushes will answer NAME_UNKNOWN")
        return
    sample = sorted(mine)[0]
    try:
        await call(client, "ListImages", policy, repositoryName=sample, maxResults=1, **ids)
    except Exception as exc:
        report.problem(f"{label} → {place}: cannot read {sample}: {_why(exc)}")
        return
    count = f"{len(mine)} repositor{'y' if len(mine) == 1 else 'ies'}"
    report.ok(f"{label} → {place}: {count}, {sample} is readable")


def run(path: str | None) -> int:
    report = Report()
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"PROBLEM  configuration {exc.where or path}: {exc}")
        return 1
    report.ok(f"configuration {path or '(defaults)'} is valid")
    asyncio.run(_check(config, report))
    for line in report.lines:
        print(line)
    print(f"{report.problems} problem(s) found" if report.problems else "no problems found")
    return 1 if report.problems else 0
