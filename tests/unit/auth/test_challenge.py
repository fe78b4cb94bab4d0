"""The WWW-Authenticate challenge: realm from the request or the configuration, quoting."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from gateway.auth.challenge import Challenger
from gateway.auth.scopes import needed_scope


def test_realm_follows_the_address_the_client_used() -> None:
    request = make_mocked_request("GET", "/v2/", headers={"Host": "gw.example:5000"})
    header = Challenger(None, "ecr-gateway").header(request, needed_scope("a/b", "push"))
    assert header == ('Bearer realm="http://gw.example:5000/token",service="ecr-gateway",'
                      'scope="repository:a/b:pull,push"')


def test_configured_realm_error_and_quoting() -> None:
    request = make_mocked_request("GET", "/v2/", headers={"Host": "internal:5000"})
    challenger = Challenger("https://registry.example.com/token", 'we"ird')
    header = challenger.header(request, None, "insufficient_scope")
    assert header == ('Bearer realm="https://registry.example.com/token",service="we\\"ird",'
                      'error="insufficient_scope"')
    error = challenger.unauthorized(request, needed_scope(None, "catalog"))
    assert error.status == 401
    assert error.body()["errors"][0]["detail"] == [
        {"Type": "registry", "Name": "catalog", "Action": "*"}]
