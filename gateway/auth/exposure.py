"""Start-time checks of who can reach the gateway and how credentials travel.

On a loopback address anything goes, unless ``trusted_proxies`` names a proxy on this host
(nginx publishing ``127.0.0.1:5000``): loopback is then no boundary, as no address is. On any
other address the gateway refuses to start,
unless ``auth.allow_anonymous_on_public_address`` says so, when callers without credentials
could do anything there: ``auth.mode: none`` (they may push, pull and delete, and publish
to the internet through routes with ``upstream_kind: ecr-public``, which the refusal and the
warning name), an htpasswd file without a single user (only anonymous callers can get in), or
anonymous pulls opened by a rule (``anonymous: true``), a route or a mirror
(``anonymous_pull: true``). With the flag it
starts and says loudly what is open. Authentication on a non-loopback address without TLS
would send passwords and tokens in clear: that starts, with a prominent warning (a
TLS-terminating proxy in front may make it right).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ecr_model.hosts import is_loopback
from gateway.auth.forwarded import parse_networks
from gateway.auth.htpasswd import parse
from gateway.config import Config, ConfigError

_FLAG = "auth.allow_anonymous_on_public_address"


def has_no_users(htpasswd_file: str | None) -> bool:
    """Whether the htpasswd file is readable and lists nobody. A file not there yet (a
    Secret mounted later) is not judged: the gateway re-reads it when it appears."""
    if not htpasswd_file:
        return False
    try:
        text = Path(htpasswd_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return not parse(text, htpasswd_file)


def anonymous_pulls(config: Config) -> list[tuple[str, str]]:
    """(config key, what it opens) for every setting that lets callers without credentials
    pull something."""
    found = []
    for i, rule in enumerate(config.auth.rules):
        if rule.anonymous and "pull" in rule.actions and rule.ecr_repository is None:
            found.append((f"auth.rules[{i}].anonymous", f"repositories {rule.repository}"))
    for i, route in enumerate(config.routes):
        if route.anonymous_pull:
            found.append((f"routes[{i}].anonymous_pull",
                          f"names under {route.prefix or 'every prefix'!r}"))
    for host, mirror in config.mirrors.items():
        if mirror.anonymous_pull:
            found.append((f"mirrors.{host}.anonymous_pull", f"the {host} mirror"))
    return found


def public_routes(config: Config) -> str:
    """The routes whose pushes land in ECR Public, where the whole internet reads them."""
    return ", ".join(f"routes[{i}] (prefix {route.prefix!r})"
                     for i, route in enumerate(config.routes)
                     if route.upstream_kind == "ecr-public")


def check_exposure(config: Config) -> list[str]:
    """Warnings to log at start; raises ConfigError for a setup that must not start."""
    host = config.listen_host
    exposed = f"{host}, which is not a loopback address"
    instead = "listen on a loopback address"
    proxied = is_loopback(host)
    if proxied:
        proxies = _loopback_proxies(config.trusted_proxies)
        if not proxies:
            return []
        # A proxy on this host the gateway believes forwards other hosts' requests: loopback
        # is then no boundary (nginx publishing 127.0.0.1:5000 to the network).
        exposed = (f"{host} behind the proxies of trusted_proxies ({', '.join(proxies)}), "
                   "which forward others' requests")
        instead = "take this host out of trusted_proxies"
    auth = config.auth
    allowed = auth.allow_anonymous_on_public_address
    if auth.mode == "none":
        published = public_routes(config)
        publishes = (f"; whatever they push through {published} is published to the "
                     "internet (ECR Public)") if published else ""
        if not allowed:
            raise ConfigError(
                "auth.mode", f"is none (no authentication) while listening on {exposed}"
                f"{publishes}; configure auth (see README, "
                f"Authentication) or set {_FLAG}: true to allow this on purpose")
        return [f"NO AUTHENTICATION on {host}: anyone who can reach this address may push, "
                f"pull and delete{publishes} ({_FLAG} is true)"]
    warnings = []
    if auth.mode == "htpasswd" and has_no_users(auth.htpasswd_file):
        if not allowed:
            raise ConfigError(
                "auth.htpasswd_file", f"lists no users while listening on {exposed}: "
                "only callers without credentials can get in; add "
                f"users, {instead}, or set {_FLAG}: true")
        warnings.append(f"NO USERS in {auth.htpasswd_file} on {host}: only anonymous callers "
                        f"get in ({_FLAG} is true)")
    opened = anonymous_pulls(config)
    if opened:
        key, what = opened[0]
        if not allowed:
            raise ConfigError(
                key, f"lets anyone who can reach {exposed}, pull {what} "
                "without credentials; give pullers credentials (see README, Authentication), "
                f"{instead}, or set {_FLAG}: true to allow this on purpose")
        warnings.append(f"ANONYMOUS PULL on {host}: anyone who can reach this address may pull "
                        + "; ".join(f"{what} ({key})" for key, what in opened)
                        + f" ({_FLAG} is true)")
    if not config.tls.cert_file and not proxied:  # a proxy on this host terminates TLS
        warnings.append(f"AUTHENTICATION WITHOUT TLS on {host}: passwords and tokens cross the "
                        "network in clear; set tls.cert_file and tls.key_file (or terminate "
                        "TLS in front)")
    return warnings


def _loopback_proxies(proxies: list[str]) -> list[str]:
    """The trusted proxies that can reach a loopback listener (on this host)."""
    loopback = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    return [text for text, network in zip(proxies, parse_networks(proxies), strict=True)
            if any(network.version == own.version and network.overlaps(own)
                   for own in loopback)]
