"""``auth.mode: aws`` identities fail closed: nothing of a refused login is kept (neither
the keys nor their ECR client), and the known identities are bounded in number."""

from __future__ import annotations

from gateway.auth.aws import AwsIdentities
from gateway.ecr.clients import ClientFactory, Credentials, Upstream
from gateway.ecr.retry import RetryPolicy
from tests.support.emulator import EmulatorProcess, new_access_key


def identities_of(emulator: EmulatorProcess, clients: ClientFactory,
                  max_identities: int = 10_000) -> AwsIdentities:
    def upstream_of(credentials: Credentials) -> Upstream:
        return Upstream(region=emulator.region, endpoint_url=emulator.url,
                        access_key_id=credentials.access_key_id,
                        secret_access_key=credentials.secret_access_key,
                        session_token=credentials.session_token)

    return AwsIdentities(clients, upstream_of, RetryPolicy(budget_seconds=1.0),
                         max_identities=max_identities)


async def test_a_refused_login_keeps_no_identity_and_no_client(
        upstream: EmulatorProcess) -> None:
    clients = ClientFactory()
    identities = identities_of(upstream, clients)
    key = new_access_key()
    secret = upstream.add_key(key)
    try:
        for password in ("wrong-secret", f"{secret}:unexpected-token"):
            assert await identities.login(key, password) is None
            assert len(identities) == 0 and len(clients) == 0
        assert await identities.login(new_access_key("AKIDUNKNOWN"), "x") is None
        assert len(identities) == 0 and len(clients) == 0
        handle = await identities.login(key, secret)
        assert handle is not None
        assert len(identities) == 1 and len(clients) == 1
        assert await identities.credentials(handle) == Credentials(key, secret, None)
    finally:
        await clients.close()


async def test_identities_are_bounded_and_dropped_ones_close_their_client(
        upstream: EmulatorProcess) -> None:
    clients = ClientFactory()
    identities = identities_of(upstream, clients, max_identities=2)
    keys = [new_access_key() for _ in range(3)]
    try:
        handles = [await identities.login(key, upstream.secret_for(key)) for key in keys]
        assert all(handles)
        assert len(identities) == 2
        first = handles[0]
        assert first is not None
        assert await identities.credentials(first) is None  # pushed out: log in again
        assert len(clients) == 2  # its client was closed with it
    finally:
        await clients.close()


async def test_an_identity_pushed_out_keeps_no_token_and_logging_in_again_asks_ecr(
        upstream: EmulatorProcess) -> None:
    """The registry tokens are bounded with the identities: one pushed out leaves its token
    too, so its keys are checked again at the next login (here ECR no longer takes them).
    Before, the token cache (4,096 entries, against 10,000 identities) kept it, and the
    login passed on the cached token without asking ECR."""
    clients = ClientFactory()
    identities = identities_of(upstream, clients, max_identities=2)
    keys = [new_access_key() for _ in range(3)]
    try:
        handles = [await identities.login(key, upstream.secret_for(key)) for key in keys]
        assert all(handles) and len(identities) == 2  # the third pushed the first out
        upstream.inject_fault("GetAuthorizationToken", "UnrecognizedClientException",
                              status=400)  # the first key was deleted meanwhile
        asked = len(upstream.requests("GetAuthorizationToken"))
        assert await identities.login(keys[0], upstream.secret_for(keys[0])) is None
        assert len(upstream.requests("GetAuthorizationToken")) == asked + 1
        assert len(identities) == 2 and len(clients) == 2
    finally:
        upstream.clear_faults()
        await clients.close()
