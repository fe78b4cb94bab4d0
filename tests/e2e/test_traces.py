"""OpenTelemetry: a real dockerd pushes and pulls through a gateway whose OTEL_* environment
points at an OTLP/HTTP receiver here; the spans that the SDK's own exporter sends form the
expected tree: a SERVER span per request, an ECR span per action attempt under it, an HTTP
CLIENT span per outbound blob read (proxy mode) under its GET, with no secret anywhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import Docker
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.images import docker_archive
from tests.support.otlp import OtlpReceiver

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
SERVER, CLIENT = 2, 3  # opentelemetry.proto Span.SpanKind values


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def gateway(upstream: EmulatorProcess, receiver: OtlpReceiver,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """This module's gateway exports traces to the receiver (proxy mode: blob reads are
    the gateway's own outbound HTTP calls)."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_SERVICE_NAME": "gateway-under-test"}
    with GatewayProcess(tmp_path_factory.mktemp("gateway"), {"blobs": {"mode": "proxy"}},
                        upstream_url=upstream.url, env=env) as gw:
        yield gw


def _wait_for(receiver: OtlpReceiver, predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(receiver.spans):
        assert time.monotonic() < deadline, f"spans never arrived: {receiver.spans[-20:]}"
        time.sleep(0.1)


def test_push_and_pull_span_tree(gateway: GatewayProcess, receiver: OtlpReceiver,
                                 docker: Docker, repo: str, tmp_path: Path) -> None:
    ref = f"{gateway.host}/{repo}:v1"
    archive = docker_archive(tmp_path / "image.tar", [3 * MiB, 2048], ref)
    docker("load", "-i", str(archive.path))
    docker("push", ref)
    docker("rmi", ref)
    docker("pull", ref)

    def ecr(name: str) -> list[dict[str, Any]]:
        return [s for s in receiver.spans if s["name"] == f"ECR {name}"
                and s["attributes"].get("aws.ecr.repository") == repo]

    _wait_for(receiver, lambda spans: ecr("PutImage") and any(
        s["kind"] == CLIENT and s["name"] == "HTTP GET" for s in spans))
    spans = {s["id"]: s for s in receiver.spans}
    assert receiver.resources[0]["service.name"] == "gateway-under-test"

    # Each ECR action of the push is a child of the request span that made it.
    # (a part goes up during the PATCH that completes it, or with the closing PUT's tail)
    for action, methods in (("InitiateLayerUpload", {"POST"}),
                            ("UploadLayerPart", {"PATCH", "PUT"}),
                            ("CompleteLayerUpload", {"PUT"}), ("PutImage", {"PUT"})):
        found = ecr(action)
        assert found, f"no span for {action}"
        for span in found:
            parent = spans[span["parent"]]
            assert parent["kind"] == SERVER, (action, parent)
            assert parent["attributes"]["http.request.method"] in methods, (action, parent)
            assert parent["trace"] == span["trace"]
            assert span["kind"] == CLIENT
            assert span["attributes"]["rpc.method"] == action
            assert span["attributes"]["ecr_gateway.attempt"] >= 1
            # ok, or ECR's error code (the first InitiateLayerUpload into a repository that
            # does not exist yet answers RepositoryNotFoundException: created, then again)
            outcome = span["attributes"]["ecr_gateway.outcome"]
            assert (span["status"] == 2) == (outcome != "ok"), span  # STATUS_CODE_ERROR
        assert any(s["attributes"]["ecr_gateway.outcome"] == "ok" for s in found), action

    # Server spans are named by route and carry the access log's request id.
    (put_image,) = ecr("PutImage")
    manifest_put = spans[put_image["parent"]]
    assert manifest_put["name"] == f"PUT {manifest_put['attributes']['http.route']}"
    assert manifest_put["attributes"]["http.response.status_code"] == 201
    logged = {e["request_id"]: e for e in gateway.access_log()}
    request_id = manifest_put["attributes"]["ecr_gateway.request_id"]
    assert logged[request_id]["method"] == "PUT"
    assert logged[request_id]["repository"] == repo

    # The pull's blob reads: an outbound HTTP span under each GET, its URL without the query
    # (a presigned URL's signature lives there).
    reads = [s for s in receiver.spans if s["kind"] == CLIENT and s["name"] == "HTTP GET"]
    assert reads
    for span in reads:
        parent = spans[span["parent"]]
        assert parent["kind"] == SERVER and parent["attributes"]["http.request.method"] == "GET"
        assert "?" not in span["attributes"]["url.full"]
        assert span["attributes"]["http.response.status_code"] == 200

    # Nothing secret in any attribute.
    secret = gateway.config["upstream"]["secret_access_key"]
    for span in receiver.spans:
        for value in span["attributes"].values():
            text = str(value)
            assert secret not in text and "X-Amz-Signature" not in text, span
