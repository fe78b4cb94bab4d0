"""Which token realms a pull-through upstream may send the gateway to (with its upstream
credentials): its own host, a well-known registry's realm host, a configured one; https, or
http on loopback. A shared domain is not enough: another tenant of it is another party."""

from __future__ import annotations

import pytest

from gateway.pullthrough.upstream import realm_allowed


@pytest.mark.parametrize(("realm", "upstream", "listed"), [
    ("https://auth.docker.io/token", "https://registry-1.docker.io", ()),
    ("https://ghcr.io/token", "https://ghcr.io", ()),
    ("https://gitlab.com/jwt/auth", "https://registry.gitlab.com", ()),
    ("https://authn.nvidia.com/token", "https://nvcr.io", ()),
    ("https://auth.example.net/token", "https://registry.example.com", ("auth.example.net",)),
    ("https://mine.azurecr.io/oauth2/token", "https://mine.azurecr.io", ()),
    ("http://127.0.0.1:5000/token", "http://127.0.0.1:5000", ()),
    ("http://localhost/token", "http://localhost:80", ()),
    ("http://127.0.0.1:5001/token", "http://127.0.0.1:5000", ("127.0.0.1",)),
    ("https://REGISTRY.example.com:8443/token", "https://registry.example.com", ()),
])
def test_the_registry_s_own_realms_are_asked(realm: str, upstream: str,
                                             listed: tuple[str, ...]) -> None:
    assert realm_allowed(realm, upstream, listed)


@pytest.mark.parametrize(("realm", "upstream"), [
    ("https://attacker.example/token", "https://registry-1.docker.io"),
    ("https://evil.io/token", "https://ghcr.io"),  # "io" is nobody's domain
    ("https://docker.io.attacker.example/token", "https://registry-1.docker.io"),
    ("http://auth.docker.io/token", "https://registry-1.docker.io"),  # credentials in clear
    ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:5000"),
    ("https://10.0.0.2/token", "https://10.0.0.1"),
    ("https://user:pw@auth.docker.io/token", "https://registry-1.docker.io"),
    ("file:///etc/passwd", "https://registry-1.docker.io"),
    ("/token", "https://registry-1.docker.io"),
    # A shared suffix is not a shared owner: another tenant's host, or a sibling.
    ("https://theirs.azurecr.io/oauth2/token", "https://mine.azurecr.io"),
    ("https://other-project.pkg.dev/token", "https://europe-docker.pkg.dev"),
    ("https://hub.docker.io/token", "https://registry-1.docker.io"),
    ("https://auth.example.com/token", "https://registry.example.com"),
    # Loopback is every local service's host: another port there is another service (the
    # emulator's, Redis's), another scheme another listener.
    ("http://127.0.0.1:6379/token", "http://127.0.0.1:5000"),
    ("http://localhost/token", "http://localhost:5000"),
    ("https://127.0.0.1:5000/token", "http://127.0.0.1:5000"),
    ("http://[::1]:5001/token", "http://[::1]:5000"),
    ("http://127.0.0.1:99999/token", "http://127.0.0.1:5000"),
])
def test_other_hosts_are_never_asked(realm: str, upstream: str) -> None:
    assert not realm_allowed(realm, upstream)
