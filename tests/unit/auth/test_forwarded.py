"""X-Forwarded-* are believed only from trusted proxies; the client address is the rightmost
untrusted hop."""

from __future__ import annotations

from unittest import mock

from aiohttp.test_utils import make_mocked_request

from gateway.auth.forwarded import ProxyTrust, parse_networks


def _request(peer: str, **headers: str) -> object:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default)
    return make_mocked_request("GET", "/v2/", headers=headers, transport=transport)


TRUST = ProxyTrust(parse_networks(["10.0.0.0/8", "fd00::/8"]))


def test_untrusted_peer_headers_are_ignored() -> None:
    request = _request("203.0.113.7", **{"X-Forwarded-For": "1.2.3.4",
                                         "X-Forwarded-Proto": "https",
                                         "X-Forwarded-Host": "evil.example"})
    assert TRUST.client_address(request) == "203.0.113.7"  # type: ignore[arg-type]
    assert TRUST.scheme(request) == "http"  # type: ignore[arg-type]
    assert TRUST.forwarded_host(request) is None  # type: ignore[arg-type]


def test_trusted_proxy_gives_the_rightmost_untrusted_address() -> None:
    request = _request("10.1.1.1", **{"X-Forwarded-For": "6.6.6.6, 198.51.100.2, 10.2.2.2",
                                      "X-Forwarded-Proto": "https",
                                      "X-Forwarded-Host": "gw.example.com"})
    assert TRUST.client_address(request) == "198.51.100.2"  # type: ignore[arg-type]
    assert TRUST.scheme(request) == "https"  # type: ignore[arg-type]
    assert TRUST.forwarded_host(request) == "gw.example.com"  # type: ignore[arg-type]


def test_garbage_is_not_an_address() -> None:
    request = _request("10.1.1.1", **{"X-Forwarded-For": "not-an-ip"})
    assert TRUST.client_address(request) == "10.1.1.1"  # type: ignore[arg-type]
    assert not ProxyTrust().trusts("10.1.1.1")
