"""What a request tells storage travels as one explicit value, and cache keys come from it."""

from __future__ import annotations

import asyncio

from gateway.config import MirrorConfig, RouteConfig
from gateway.ecr.routing import Router
from gateway.oci.request import Credentials, RequestContext


def test_a_targets_cache_key_names_the_caller_it_was_resolved_for() -> None:
    router = Router([RouteConfig(prefix="team", repository_prefix="ecr-team")], "eu-west-1")
    target = router.resolve("team/app")
    assert target is not None
    alice = RequestContext("team/app", caller=Credentials("AKIDALICE", "secret-a"))
    bob = RequestContext("team/app", caller=Credentials("AKIDBOB", "secret-b"))
    assert target.key == (None, "eu-west-1", "ecr-team/app")  # the gateway's own view
    assert target.for_request(alice).key == ("@AKIDALICE", "eu-west-1", "ecr-team/app")
    assert target.for_request(bob).key != target.for_request(alice).key
    assert "secret" not in repr(target.for_request(alice))


def test_the_context_is_a_value_not_ambient_state() -> None:
    """Two requests in flight at once each keep their own namespace and caller: nothing is
    read from the task they run in."""
    router = Router([RouteConfig()], "us-east-1",
                    {"docker.io": MirrorConfig(repository_prefix="hub")})

    async def resolve(ctx: RequestContext) -> tuple[str | None, str, str]:
        await asyncio.sleep(0)  # let the other request run in between
        target = router.resolve(ctx.name, ctx.ns)
        assert target is not None
        return target.for_request(ctx).key

    async def both() -> list[tuple[str | None, str, str]]:
        return await asyncio.gather(
            resolve(RequestContext("library/nginx", "docker.io", Credentials("AKID1", "s"))),
            resolve(RequestContext("library/nginx")))

    mirrored, plain = asyncio.run(both())
    assert mirrored == ("@AKID1", "us-east-1", "hub/library/nginx")
    assert plain == (None, "us-east-1", "library/nginx")


def test_a_mounts_source_is_the_same_request_about_another_name() -> None:
    calls: list[str] = []
    ctx = RequestContext("a/b", "ghcr.io", Credentials("AKID", "s"), "end-4a", calls)
    source = ctx.for_name("c/d")
    assert (source.name, source.ns, source.caller, source.endpoint) == (
        "c/d", "ghcr.io", ctx.caller, "end-4a")
    assert source.calls is calls  # counted on the same access-log line


def test_work_that_outlives_the_request_opens_sessions_for_nobody() -> None:
    """A pull-through copy runs on a detached context: its upload session is the gateway's,
    not counted against the client that asked (limits.max_open_uploads_per_client)."""
    ctx = RequestContext("a/b", caller=Credentials("AKID", "s"), client="user:alice")
    assert ctx.for_name("c/d").client == "user:alice"
    assert ctx.detached().client is None and ctx.detached().caller == ctx.caller
