"""Which token realm a registry's ``WWW-Authenticate`` challenge may send a pull through
cache to, with the credentials it holds for that registry.

Only the registry's own host (its own origin, scheme, host and port, when that host is
loopback: every local service shares it), the documented realm host of a well-known registry
(``registry-1.docker.io`` → ``auth.docker.io``) or a host the operator lists, over https
(http only on loopback): a challenge is the upstream's word, and a realm elsewhere would
receive the credentials, or the cache's requests, wherever the upstream pointed it. A shared
domain is not enough: ``a.azurecr.io`` and ``b.azurecr.io`` belong to different tenants.
ECR's pull through cache serves a fixed set of upstreams whose realms are all of these kinds.
"""

from __future__ import annotations

import urllib.parse

from ecr_model.hosts import is_loopback

# Registries whose token service lives on a host of its own (their documented realms).
KNOWN_REALM_HOSTS: dict[str, tuple[str, ...]] = {
    "registry-1.docker.io": ("auth.docker.io",),
    "index.docker.io": ("auth.docker.io",),
    "docker.io": ("auth.docker.io",),
    "registry.gitlab.com": ("gitlab.com",),
    "nvcr.io": ("authn.nvidia.com",),
    "docker.elastic.co": ("docker-auth.elastic.co",),
}


def realm_allowed(realm: str, upstream_url: str, listed: tuple[str, ...] = ()) -> bool:
    """Whether a token realm may be asked (with the upstream's credentials): https (http
    only on loopback), on the upstream's own host (on loopback, its own scheme and port),
    its well-known realm host, or a listed host."""
    try:
        parts, upstream = urllib.parse.urlsplit(realm), urllib.parse.urlsplit(upstream_url)
        host, own = (parts.hostname or "").lower(), (upstream.hostname or "").lower()
    except ValueError:  # an unbalanced bracket
        return False
    if not host or parts.username or parts.password:
        return False
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(host)):
        return False
    if host in KNOWN_REALM_HOSTS.get(own, ()) or host in (h.lower() for h in listed):
        return True
    if host != own:
        return False
    # Loopback is every local service's host (the emulator's, Redis's, the gateway's own
    # port): there, only the registry's own origin is the registry's.
    return not is_loopback(host) or _scheme_and_port(parts) == _scheme_and_port(upstream)


def _scheme_and_port(url: urllib.parse.SplitResult) -> tuple[str, int | None]:
    """The scheme and port a URL reaches (its scheme's default when it names none)."""
    try:
        port = url.port
    except ValueError:  # a port that is no number, or out of range: never anyone's
        return url.scheme, -1
    return url.scheme, port if port is not None else _DEFAULT_PORTS.get(url.scheme)


_DEFAULT_PORTS = {"http": 80, "https": 443}
