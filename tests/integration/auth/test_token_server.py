"""The gateway as its own token server: challenge, GET /token, the OAuth2 POST, refresh
tokens, htpasswd reloads and the failed-login limit."""

from __future__ import annotations

import asyncio
import datetime
import os
import urllib.parse
from pathlib import Path

import aiohttp

from tests.integration.auth.conftest import PASSWORDS
from tests.integration.auth.helpers import (
    SERVICE,
    basic,
    bearer,
    fetch_token,
    granted,
    parse_challenge,
    request,
    token_for,
    write_htpasswd,
)
from tests.support.gateway import GatewayProcess

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def form(**fields: str) -> bytes:
    return urllib.parse.urlencode(fields).encode()


async def test_base_endpoint_challenges_callers_without_credentials(
        authgw: GatewayProcess, session: aiohttp.ClientSession) -> None:
    for path in ("/v2/", "/v2"):
        answer = await request(session, "GET", authgw.url + path)
        assert answer.status == 401
        assert answer.code == "UNAUTHORIZED"
        challenge = parse_challenge(answer.headers["WWW-Authenticate"])
        assert challenge == {"realm": f"{authgw.url}/token", "service": SERVICE}
        assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    good = await request(session, "GET", authgw.url + "/v2/", basic("alice", "alice-pw"))
    assert good.status == 200
    wrong = await request(session, "GET", authgw.url + "/v2/", basic("alice", "nope"))
    assert wrong.status == 401 and wrong.code == "UNAUTHORIZED"


async def test_token_for_good_credentials(authgw: GatewayProcess,
                                          session: aiohttp.ClientSession) -> None:
    answer = await fetch_token(session, authgw.url,
                               ["repository:team-a/app:pull,push", "repository:team-b/x:pull",
                                "registry:catalog:*"], ("alice", "alice-pw"))
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    issued = datetime.datetime.fromisoformat(body["issued_at"].replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - issued).total_seconds()) < 60
    assert "refresh_token" not in body  # not asked for (no offline_token)
    # The intersection of what was asked and what the rules allow.
    assert granted(body["token"]) == {"repository:team-a/app": {"pull", "push"},
                                      "registry:catalog": {"*"}}
    assert answer.headers["Cache-Control"] == "no-store"
    ping = await request(session, "GET", authgw.url + "/v2/", bearer(body["token"]))
    assert ping.status == 200


async def test_wrong_or_malformed_credentials_get_no_token(
        authgw: GatewayProcess, session: aiohttp.ClientSession) -> None:
    scope = ["repository:team-a/app:pull"]
    for credentials in (("alice", "wrong"), ("nobody", "alice-pw"), ("alice", "")):
        answer = await fetch_token(session, authgw.url, scope, credentials)
        assert answer.status == 401, credentials
        assert answer.code == "UNAUTHORIZED"
        assert "token" not in answer.body.decode()
    for header in ("Basic !!!notbase64", "Basic " + "YWxpY2U=", "Digest abc"):
        answer = await request(session, "GET", f"{authgw.url}/token?service={SERVICE}",
                               {"Authorization": header})
        assert answer.status == 401, header


async def test_anonymous_tokens_grant_only_anonymous_pulls(
        authgw: GatewayProcess, session: aiohttp.ClientSession) -> None:
    token = await token_for(session, authgw.url, [
        "repository:public/base:pull,push", "repository:team-a/app:pull",
        "registry:catalog:*"])
    assert granted(token) == {"repository:public/base": {"pull"}}


async def test_oauth_password_grant_and_refresh_tokens(
        authgw: GatewayProcess, session: aiohttp.ClientSession) -> None:
    """containerd POSTs grant_type=password first; docker keeps a refresh token after
    `docker login` and exchanges it with grant_type=refresh_token."""
    url = f"{authgw.url}/token"
    answer = await request(session, "POST", url, FORM, form(
        grant_type="password", username="alice", password="alice-pw", service=SERVICE,
        client_id="containerd-client", scope="repository:team-a/app:pull", ))
    assert answer.status == 200, answer.body
    body = answer.json()
    assert granted(body["access_token"]) == {"repository:team-a/app": {"pull"}}
    assert "refresh_token" not in body
    assert body["scope"] == "repository:team-a/app:pull"

    offline = await request(session, "POST", url, FORM, form(
        grant_type="password", username="alice", password="alice-pw", service=SERVICE,
        client_id="docker", access_type="offline"))
    refresh = offline.json()["refresh_token"]
    exchanged = await request(session, "POST", url, FORM, form(
        grant_type="refresh_token", refresh_token=refresh, service=SERVICE, client_id="docker",
        scope="repository:team-a/app:pull,push repository:team-b/x:pull"))
    assert exchanged.status == 200, exchanged.body
    assert granted(exchanged.json()["access_token"]) == {"repository:team-a/app":
                                                         {"pull", "push"}}
    # A refresh token is not an access token.
    misuse = await request(session, "GET", f"{authgw.url}/v2/team-a/app/tags/list",
                           bearer(refresh))
    assert misuse.status == 401
    assert parse_challenge(misuse.headers["WWW-Authenticate"])["error"] == "invalid_token"

    wrong = await request(session, "POST", url, FORM, form(
        grant_type="password", username="alice", password="nope", service=SERVICE))
    assert wrong.status == 401
    forged = await request(session, "POST", url, FORM, form(
        grant_type="refresh_token", refresh_token=refresh[:-4] + "AAAA", service=SERVICE))
    assert forged.status == 401
    unknown = await request(session, "POST", url, FORM, form(grant_type="client_credentials"))
    assert unknown.status == 400 and unknown.code == "UNSUPPORTED"


async def test_get_offline_token_like_docker_login(authgw: GatewayProcess,
                                                   session: aiohttp.ClientSession) -> None:
    answer = await fetch_token(session, authgw.url, [], ("ci-a", "ci-a-pw"),
                               offline_token="true", client_id="docker", account="ci-a")
    assert answer.status == 200
    assert answer.json()["refresh_token"].count(".") == 2
    assert granted(answer.json()["token"]) == {}


async def test_password_change_and_new_users_without_restart(
        authgw: GatewayProcess, htpasswd: Path, session: aiohttp.ClientSession) -> None:
    """The htpasswd file is re-read when it changes: a new password works at once, the old
    one and refresh tokens issued for it stop working, a new user can log in."""
    offline = await fetch_token(session, authgw.url, [], ("bob", "bob-pw"),
                                offline_token="true")
    refresh = offline.json()["refresh_token"]
    original = await asyncio.to_thread(htpasswd.read_text)
    try:
        replacement = write_htpasswd(htpasswd.with_name("next"),
                                     {**PASSWORDS, "bob": "bob-new-pw", "erin": "erin-pw"})
        os.replace(replacement, htpasswd)
        assert (await fetch_token(session, authgw.url, [], ("bob", "bob-pw"))).status == 401
        assert (await fetch_token(session, authgw.url, [], ("bob", "bob-new-pw"))).status == 200
        assert (await fetch_token(session, authgw.url, [], ("erin", "erin-pw"))).status == 200
        answer = await request(session, "POST", f"{authgw.url}/token", FORM,
                               form(grant_type="refresh_token", refresh_token=refresh))
        assert answer.status == 401
    finally:
        await asyncio.to_thread(htpasswd.write_text, original)


async def test_failed_logins_are_rate_limited(authgw: GatewayProcess,
                                              session: aiohttp.ClientSession) -> None:
    """After 5 failures for one user even the right password is refused for a while (429
    with Retry-After), on the token endpoint and with Basic on requests alike."""
    for _ in range(5):
        answer = await fetch_token(session, authgw.url, [], ("victim", "guess"))
        assert answer.status == 401
    blocked = await fetch_token(session, authgw.url, [], ("victim", "victim-pw"))
    assert blocked.status == 429 and blocked.code == "TOOMANYREQUESTS"
    assert 0 < int(blocked.headers["Retry-After"]) <= 300
    direct = await request(session, "GET", authgw.url + "/v2/", basic("victim", "victim-pw"))
    assert direct.status == 429
    # Other users (from the same address, under its own limit) are not affected.
    assert (await fetch_token(session, authgw.url, [], ("alice", "alice-pw"))).status == 200


async def test_concurrent_logins_do_not_stall_the_gateway(
        authgw: GatewayProcess, session: aiohttp.ClientSession) -> None:
    """bcrypt runs off the event loop: 20 logins at once all succeed."""
    answers = await asyncio.gather(*(
        fetch_token(session, authgw.url, ["repository:team-a/app:pull"], ("viewer", "viewer-pw"))
        for _ in range(20)))
    assert {a.status for a in answers} == {200}


async def test_access_tokens_end_when_the_user_is_removed_or_their_password_changes(
        authgw: GatewayProcess, htpasswd: Path, session: aiohttp.ClientSession) -> None:
    """A token already issued does not outlive its user's entry: removing a user whose
    password leaked, or changing it, stops their tokens at once, not minutes later."""
    scope = ["repository:team-a/app:pull"]
    original = await asyncio.to_thread(htpasswd.read_text)
    tokens = {user: await token_for(session, authgw.url, scope, (user, PASSWORDS[user]))
              for user in ("ci-a", "viewer")}
    url = f"{authgw.url}/v2/team-a/app/tags/list"
    for token in tokens.values():
        assert (await request(session, "GET", url, bearer(token))).status != 401
    try:
        kept = {name: pw for name, pw in PASSWORDS.items() if name != "ci-a"}
        replacement = write_htpasswd(htpasswd.with_name("without"),
                                     {**kept, "viewer": "viewer-new-pw"})
        os.replace(replacement, htpasswd)
        for user, token in tokens.items():
            answer = await request(session, "GET", url, bearer(token))
            assert answer.status == 401, (user, answer.status, answer.body)
            assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
        fresh = await token_for(session, authgw.url, scope, ("viewer", "viewer-new-pw"))
        assert (await request(session, "GET", url, bearer(fresh))).status != 401
    finally:
        await asyncio.to_thread(htpasswd.write_text, original)


async def test_unreadable_token_forms_are_400(authgw: GatewayProcess,
                                              session: aiohttp.ClientSession) -> None:
    """A form aiohttp cannot parse is the client's fault: 400, no traceback, nothing echoed."""
    url = f"{authgw.url}/token"
    part = (b'--xx\r\nContent-Type: text/plain; charset=bogus\r\nContent-Disposition: '
            b'form-data; name="grant_type"\r\n\r\npassword\r\n--xx--\r\n')
    for content_type, body in [
        ("application/x-www-form-urlencoded; charset=bogus", form(grant_type="password")),
        ("application/x-www-form-urlencoded", b"grant_type=password&username=\xff&password=x"),
        ("multipart/form-data", b"grant_type=password"),  # no boundary
        ("multipart/form-data; boundary=xx", b"no boundary in here"),
        ("multipart/form-data; boundary=xx", part),
    ]:
        answer = await request(session, "POST", url, {"Content-Type": content_type}, body)
        assert answer.status == 400, (content_type, answer.status, answer.body[:200])
        assert answer.code == "UNSUPPORTED"
        assert b"password" not in answer.body and b"\xff" not in answer.body
    # A body that is not in its Content-Encoding breaks while aiohttp reads the form.
    answer = await request(session, "POST", url, {**FORM, "Content-Encoding": "gzip"},
                           form(grant_type="password"))
    assert answer.status == 400 and answer.code == "UNSUPPORTED", answer.body[:200]
    await asyncio.sleep(0.2)  # the log arrives through a pipe
    assert not [line for line in authgw.log_lines if "Traceback" in line]


async def test_a_token_request_names_at_most_100_scopes(authgw: GatewayProcess,
                                                        session: aiohttp.ClientSession) -> None:
    """One login asking for 20,000 scopes in a form of 700 KB got a token of 4.4 MB after
    0.4 s of the event loop (every other request waited), a token no request header can
    carry; now 400 before the password is checked."""
    many = " ".join(f"repository:team-a/app{i}:pull,push" for i in range(20_000))
    answer = await request(session, "POST", f"{authgw.url}/token", FORM, form(
        grant_type="password", username="alice", password="alice-pw", scope=many))
    assert answer.status == 400 and answer.code == "UNSUPPORTED", answer.body[:200]
    assert answer.json()["errors"][0]["detail"] == {"scopes": 20_000, "limit": 100}
    query = [("service", SERVICE), *(("scope", f"repository:public/a{i}:pull")
                                     for i in range(101))]
    url = f"{authgw.url}/token?{urllib.parse.urlencode(query)}"
    assert (await request(session, "GET", url)).status == 400
    enough = " ".join(f"repository:team-a/app{i}:pull,push" for i in range(100))
    answer = await request(session, "POST", f"{authgw.url}/token", FORM, form(
        grant_type="password", username="alice", password="alice-pw", scope=enough))
    assert answer.status == 200 and len(granted(answer.json()["token"])) == 100
