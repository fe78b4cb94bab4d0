"""The WWW-Authenticate challenge: realm from the request or the configuration, quoting."""

from __future__ import annotations

from unittest import mock

from aiohttp.test_utils import make_mocked_request

from gateway.auth.challenge import Challenger
from gateway.auth.scopes import needed_scope


def test_realm_follows_the_host_only_when_it_is_allowed() -> None:
    request = make_mocked_request("GET", "/v2/", headers={"Host": "gw.example:5000"})
    challenger = Challenger(None, "ecr-gateway", frozenset({"gw.example:5000"}),
                            listen="10.0.0.5:5000")
    header = challenger.header(request, needed_scope("a/b", "push"))
    assert header == ('Bearer realm="http://gw.example:5000/token",service="ecr-gateway",'
                      'scope="repository:a/b:pull,push"')
    transport = mock.Mock()
    transport.get_extra_info.return_value = None  # the socket cannot tell: the listen address
    forged = make_mocked_request("GET", "/v2/", headers={"Host": "evil.example"},
                                 transport=transport)
    assert challenger.realm_for(forged) == "http://10.0.0.5:5000/token"


def test_several_scopes_in_one_challenge() -> None:
    request = make_mocked_request("POST", "/v2/t/blobs/uploads/", headers={"Host": "x"})
    challenger = Challenger("https://gw/token", "ecr-gateway")
    error = challenger.unauthorized(request, [needed_scope("t", "push"),
                                              needed_scope("s", "pull")])
    assert 'scope="repository:t:pull,push repository:s:pull"' in error.headers[
        "WWW-Authenticate"]
    assert len(error.body()["errors"][0]["detail"]) == 2


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


def test_a_loopback_listener_takes_only_a_plain_host_header() -> None:
    """A client on this machine may name the host it used, but a Host header that is not a
    host and a port ('localhost:5000@evil.example') never moves the realm."""
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("127.0.0.1", 5000)
    challenger = Challenger(None, "ecr-gateway", listen="127.0.0.1:5000")

    def realm(host: str) -> str:
        return challenger.realm_for(make_mocked_request("GET", "/v2/", headers={"Host": host},
                                                        transport=transport))

    assert realm("localhost:5000") == "http://localhost:5000/token"
    assert realm("[::1]:5000") == "http://[::1]:5000/token"
    for forged in ("localhost:5000@evil.example", "127.0.0.1:1/../x", "localhost\\evil",
                   "localhost:5000/x", "localhost:abc"):
        assert realm(forged) == "http://127.0.0.1:5000/token", forged
