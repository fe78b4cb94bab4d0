"""The dependencies' internals the gateway relies on, one test per surface (pyproject.toml
bounds each dependency to the minor release these were checked against). A failure names
the dependency and the surface that changed, so that an upgrade says what to look at."""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.ecr import partbody


def surface(dependency: str, name: str, holds: bool, detail: object = "") -> None:
    """Fail naming the dependency and its surface (the bound in pyproject.toml says why)."""
    assert holds, (f"{dependency}: {name} changed ({detail}); the gateway relies on it, see "
                   f"pyproject.toml and tests/unit/test_dependency_surfaces.py")


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


# -- aiohttp ---------------------------------------------------------------------------------


def test_aiohttp_request_handler_handle_error() -> None:
    from aiohttp.web_protocol import RequestHandler  # gateway/oci/server.py overrides it

    found = _parameters(RequestHandler.handle_error)
    surface("aiohttp", "web_protocol.RequestHandler.handle_error(request, status, exc, message)",
            found == ["self", "request", "status", "exc", "message"], found)


async def test_aiohttp_server_loop_and_kwargs() -> None:
    from gateway.oci.server import _OciRequestHandler, _OciServer

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handler, max_headers=7)
    surface("aiohttp", "web.Server._loop and ._kwargs",
            hasattr(server, "_loop") and getattr(server, "_kwargs", {}).get("max_headers") == 7,
            sorted(vars(server)))
    server.__class__ = _OciServer
    surface("aiohttp", "RequestHandler(manager, loop=..., **kwargs)",
            isinstance(server(), _OciRequestHandler))


def test_asyncio_ssl_protocol() -> None:
    # gateway/oci/tls_admission.py serves TLS on a socket it admitted, as start_tls does
    from asyncio.sslproto import SSLProtocol

    found = _parameters(SSLProtocol.__init__)
    surface("asyncio", "sslproto.SSLProtocol(loop, app_protocol, sslcontext, waiter, "
            "server_side=, ssl_handshake_timeout=) and its connection_lost",
            found[:5] == ["self", "loop", "app_protocol", "sslcontext", "waiter"]
            and {"server_side", "ssl_handshake_timeout", "ssl_shutdown_timeout"} <= set(found)
            and _parameters(SSLProtocol.connection_lost) == ["self", "exc"], found)
    # ... and bounds its closing: the hook asyncio calls once the TLS session is over
    hook = getattr(SSLProtocol, "_on_shutdown_complete", None)
    surface("asyncio", "sslproto.SSLProtocol._on_shutdown_complete(shutdown_exc)",
            hook is not None and _parameters(hook) == ["self", "shutdown_exc"],
            sorted(name for name in vars(SSLProtocol) if "shutdown" in name))


async def test_aiohttp_app_runner_make_server() -> None:
    from gateway.oci.server import OciAppRunner, _OciServer

    runner = OciAppRunner(web.Application())
    await runner.setup()
    try:
        surface("aiohttp", "web.AppRunner._make_server (called by setup)",
                isinstance(runner.server, _OciServer), type(runner.server))
    finally:
        await runner.cleanup()


def test_aiohttp_file_response_path(tmp_path: Path) -> None:
    target = tmp_path / "blob"
    response = web.FileResponse(target)  # gateway/observability/access.py reads its size
    surface("aiohttp", "web.FileResponse._path", getattr(response, "_path", None) == target,
            getattr(response, "_path", "missing"))


def test_aiohttp_file_response_sendfile_hooks() -> None:
    # ecr_emulator/downloads.py overrides _sendfile and calls _sendfile_fallback.
    hooks = (_parameters(web.FileResponse._sendfile),
             _parameters(web.FileResponse._sendfile_fallback))
    surface("aiohttp", "web.FileResponse._sendfile / _sendfile_fallback",
            hooks == (["self", "request", "fobj", "offset", "count"],
                      ["self", "writer", "fobj", "offset", "count"]), hooks)


def test_aiohttp_server_size_arguments() -> None:
    from aiohttp.web_protocol import RequestHandler

    from gateway.oci.limits import server_options

    wanted = set(server_options(max_header_bytes=1, max_headers=1, header_timeout=1))
    accepted = set(_parameters(RequestHandler.__init__))
    surface("aiohttp", "RequestHandler's max_line_size/max_field_size/max_headers/"
            "keepalive_timeout arguments", wanted <= accepted, wanted - accepted)


def test_aiohttp_bad_http_method_line() -> None:
    from aiohttp.http_exceptions import BadHttpMethod

    from gateway.oci.server import _is_tls_probe

    error = BadHttpMethod(line="\x16\x03\x01")
    surface("aiohttp", "http_exceptions.BadHttpMethod(line=...).line",
            getattr(error, "line", None) == "\x16\x03\x01" and _is_tls_probe(error))


async def test_aiohttp_stream_reader_total_bytes_and_writer_output_size() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen["total_bytes"] = getattr(request.content, "total_bytes", None)
        response = web.StreamResponse()
        writer = await response.prepare(request)
        seen["output_size"] = getattr(writer, "output_size", None)
        assert writer is not None
        writer.output_size += 0  # gateway/oci/files.py counts what sendfile sent
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/", handler)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        async with client.post("/", data=b"x" * 1000) as answer:
            assert answer.status == 200
    surface("aiohttp", "StreamReader.total_bytes", seen["total_bytes"] == 1000, seen)
    surface("aiohttp", "StreamWriter.output_size",
            isinstance(seen["output_size"], int) and seen["output_size"] > 0, seen)


def test_aiohttp_connects_to_address_like_hosts_without_the_resolver() -> None:
    """ecr_model/redirect_targets.py judges these hosts itself (host_refusal): aiohttp skips
    the resolver, and so the redirect policy's TargetResolver, for what it takes for an
    address; a host it resolves (``0x7f.1``) is judged by the resolver."""
    from aiohttp.helpers import is_ip_address

    from ecr_model.redirect_targets import host_refusal

    taken = {host: is_ip_address(host) for host in ("127.1", "2130706433", "127.0.0.1.",
                                                    "::1", "0x7f.1", "cdn.example")}
    surface("aiohttp", "helpers.is_ip_address (digits and dots, or a colon)",
            taken == {"127.1": True, "2130706433": True, "127.0.0.1.": True, "::1": True,
                      "0x7f.1": False, "cdn.example": False}, taken)
    assert all(host_refusal(host) is not None for host, address in taken.items() if address)


# -- botocore / aiobotocore ----------------------------------------------------------------

_PART = b"\x01\x02\x03" * 40_000  # above partbody.MIN_BYTES: the hooks take it


@pytest.fixture
async def ecr() -> AsyncIterator[tuple[Any, list[tuple[dict[str, str], bytes]]]]:
    """An aiobotocore ECR client with the gateway's hooks, talking to a local server that
    records each request and answers an empty JSON document."""
    from aiobotocore.session import get_session

    received: list[tuple[dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(body=b"{}", content_type="application/x-amz-json-1.1")

    app = web.Application()
    app.router.add_post("/", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        context = get_session().create_client(
            "ecr", region_name="us-east-1", endpoint_url=str(server.make_url("/")),
            aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
        async with context as client:
            partbody.install(client)
            yield client, received


def _upload(client: Any) -> Any:
    return client.upload_layer_part(repositoryName="app", uploadId="u", partFirstByte=0,
                                    partLastByte=len(_PART) - 1, layerPartBlob=_PART)


def test_botocore_service_id_hyphenize() -> None:
    import botocore.session

    model = botocore.session.get_session().get_service_model("ecr")
    surface("botocore", "service_model.service_id.hyphenize()",
            model.service_id.hyphenize() == "ecr", model.service_id)


async def test_botocore_before_parameter_build_hook(ecr: tuple[Any, list[Any]]) -> None:
    client, _ = ecr
    seen: dict[str, Any] = {}

    def after_ours(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        seen.update(blob=params.get(partbody.MEMBER), context=dict(context))

    client.meta.events.register(f"before-parameter-build.ecr.{partbody.OPERATION}",
                                after_ours)
    await _upload(client)
    surface("botocore", "before-parameter-build event (params, context), params mutable",
            seen.get("blob") == b"" and partbody._CONTEXT_KEY in seen.get("context", {}),
            {key: type(value) for key, value in seen.items()})


async def test_botocore_before_call_hook(ecr: tuple[Any, list[Any]]) -> None:
    client, _ = ecr
    seen: dict[str, Any] = {}

    def after_ours(params: dict[str, Any], **_: Any) -> None:
        seen.update(body=params.get("body"), headers=dict(params.get("headers", {})))

    client.meta.events.register(f"before-call.ecr.{partbody.OPERATION}", after_ours)
    await _upload(client)
    headers = seen.get("headers", {})
    surface("aiobotocore", "before-call event: an awaited async handler edits params' "
            "body and headers", hasattr(seen.get("body"), "__aiter__")
            and "X-Amz-Content-SHA256" in headers and "Content-Length" in headers, seen)


async def test_aiobotocore_sends_an_async_iterable_body(ecr: tuple[Any, list[Any]]) -> None:
    client, received = ecr
    await _upload(client)
    headers, body = received[-1]
    document = json.loads(body)
    surface("aiobotocore", "an async-iterable request body sent whole with its "
            "Content-Length", document.get("layerPartBlob") == base64.b64encode(_PART).decode()
            and headers.get("Content-Length") == str(len(body)), headers)


async def test_botocore_sigv4_takes_a_preset_payload_hash(
        ecr: tuple[Any, list[Any]]) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url="https://api.ecr.us-east-1.amazonaws.com/",
                         data=b"not what is hashed",
                         headers={"X-Amz-Content-SHA256": "preset"})
    signer = SigV4Auth(Credentials("AKIDEXAMPLE", "secret"), "ecr", "us-east-1")
    canonical = signer.canonical_request(request)
    client, received = ecr
    await _upload(client)
    headers, body = received[-1]
    surface("botocore", "SigV4Auth uses a preset X-Amz-Content-SHA256 as the payload hash",
            canonical.endswith("\npreset")
            and headers.get("X-Amz-Content-SHA256") == hashlib.sha256(body).hexdigest()
            and "Authorization" in headers, canonical.rsplit("\n", 1)[-1])
