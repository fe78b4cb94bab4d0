"""Start-time checks of who can reach the gateway and how credentials travel.

``auth.mode: none`` lets anyone do anything: fine on loopback, refused on any other address
unless ``auth.allow_anonymous_on_public_address`` says so. Authentication on a
non-loopback address without TLS would send passwords and tokens in clear: that starts,
with a prominent warning (a TLS-terminating proxy in front may make it right).
"""

from __future__ import annotations

import ipaddress

from gateway.config import Config, ConfigError


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def check_exposure(config: Config) -> list[str]:
    """Warnings to log at start; raises ConfigError for a setup that must not start."""
    host = config.listen_host
    if is_loopback(host):
        return []
    if config.auth.mode == "none":
        if not config.auth.allow_anonymous_on_public_address:
            raise ConfigError(
                "auth.mode", f"is none (no authentication) while listening on {host}, which "
                "is not a loopback address; configure auth (see README, Authentication) or set "
                "auth.allow_anonymous_on_public_address: true to allow this on purpose")
        return [f"NO AUTHENTICATION on {host}: anyone who can reach this address may push, "
                "pull and delete (auth.allow_anonymous_on_public_address is true)"]
    if not config.tls.cert_file:
        return [f"AUTHENTICATION WITHOUT TLS on {host}: passwords and tokens cross the network "
                "in clear; set tls.cert_file and tls.key_file (or terminate TLS in front)"]
    return []
