"""Client keys: what an address counts as for the per-client limits (``limits.client_key``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.auth.client_keys import ClientKeys, client_keys, embedded_ipv4, parse_nat64_prefixes
from gateway.auth.ratelimit import FailedLogins
from gateway.config import ConfigError, load_config

# RFC 6052 section 2.4: 192.0.2.33 under each prefix length.
RFC6052_EXAMPLES = [
    ("2001:db8::/32", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100::"),
    ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
    ("64:ff9b::/96", "64:ff9b::192.0.2.33"),
]


@pytest.mark.parametrize("prefix,address", RFC6052_EXAMPLES)
def test_the_ipv4_address_is_read_where_rfc_6052_puts_it(prefix: str, address: str) -> None:
    net = ipaddress.IPv6Network(prefix)
    assert str(embedded_ipv4(ipaddress.IPv6Address(address), net.prefixlen)) == "192.0.2.33"
    keys = ClientKeys(nat64_prefixes=parse_nat64_prefixes([prefix]))
    assert keys.of(address) == "192.0.2.33"


def test_the_u_octet_and_the_suffix_do_not_make_another_client() -> None:
    """Translators ignore the suffix (and the u octet is zero): a host able to vary them
    would otherwise be 2**56 clients."""
    keys = ClientKeys(nat64_prefixes=parse_nat64_prefixes(["2001:db8:122::/48"]))
    assert keys.of("2001:db8:122:c000:2:2100::") == keys.of("2001:db8:122:c000:ff02:21ff:ffff:1")
    assert keys.of("2001:db8:122:c000:ff02:21ff:ffff:1") == "192.0.2.33"


def test_clients_behind_an_operator_prefix_count_apart() -> None:
    """With only the well-known prefix known, every IPv4 client of a translator using its
    own prefix was one key: the translator's /64."""
    default = ClientKeys()
    assert default.of("64:ff9b:1:2::c000:221") == default.of("64:ff9b:1:2::c000:222") \
        == "64:ff9b:1:2::/64"
    keys = ClientKeys(nat64_prefixes=parse_nat64_prefixes(["64:ff9b::/96",
                                                           "64:ff9b:1:2::/96"]))
    assert keys.of("64:ff9b:1:2::c000:221") == "192.0.2.33"
    assert keys.of("64:ff9b:1:2::c000:222") == "192.0.2.34"
    assert keys.of("64:ff9b::c000:221") == "192.0.2.33"  # the well-known one still counts
    assert keys.of("64:ff9b:1:3::c000:221") == "64:ff9b:1:3::/64"  # not a listed prefix


def test_the_most_specific_prefix_decides() -> None:
    keys = ClientKeys(nat64_prefixes=parse_nat64_prefixes(["2001:db8::/32",
                                                           "2001:db8:122:344::/96"]))
    assert keys.of("2001:db8:122:344::192.0.2.33") == "192.0.2.33"
    assert keys.of("2001:db8:c000:221::") == "192.0.2.33"


def test_an_ipv6_address_carrying_an_ipv4_client_counts_by_that_client() -> None:
    """A translator's /64 holds every IPv4 client it translates: one of them must not lock
    out all the others, nor be more than one client."""
    keys = ClientKeys()
    assert keys.of("64:ff9b::c633:6409") == "198.51.100.9"  # NAT64 (RFC 6052)
    assert keys.of("::ffff:198.51.100.9") == "198.51.100.9"
    assert keys.of("2001:0:4136:e378:8000:63bf:3fff:fdd2") == "192.0.2.45"  # Teredo
    assert keys.of("2002:c000:204:1::5") == keys.of("2002:c000:204:2::9") == "192.0.2.4"
    assert keys.of("2001:db8:0:7::1") == "2001:db8:0:7::/64"
    assert keys.of("198.51.100.9") == "198.51.100.9"
    assert keys.of(None) is None
    assert keys.of("unix socket") == "unix socket"


def test_prefix_lengths_widen_or_narrow_a_client() -> None:
    """A site handed a /48 is one client at 48; the pods of one /64 are many at 128."""
    site = ClientKeys(ipv6_prefix_length=48)
    assert site.of("2001:db8:7:1::1") == site.of("2001:db8:7:ff00::1") == "2001:db8:7::/48"
    pods = ClientKeys(ipv6_prefix_length=128)
    assert pods.of("2001:db8:7:1::1") == "2001:db8:7:1::1/128"
    assert pods.of("2001:db8:7:1::2") == "2001:db8:7:1::2/128"
    assert pods.of("64:ff9b::c633:6409") == "198.51.100.9"  # a translated client still one
    nets = ClientKeys(ipv4_prefix_length=24)
    assert nets.of("198.51.100.9") == nets.of("64:ff9b::c633:6480") == "198.51.100.0/24"


def test_failed_logins_count_by_the_configured_keys() -> None:
    limits = FailedLogins(60, per_user=100, per_address=2,
                          keys=ClientKeys(nat64_prefixes=parse_nat64_prefixes(
                              ["64:ff9b:1:2::/96"])))
    limits.failed("a", "64:ff9b:1:2::c000:221")
    limits.failed("b", "64:ff9b:1:2::c000:221")
    assert limits.retry_after("c", "192.0.2.33") is not None
    assert limits.retry_after("c", "64:ff9b:1:2::c000:222") is None  # another IPv4 client


def _load(tmp_path: Path, text: str) -> ClientKeys:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return client_keys(load_config(str(path), environ={}))


def test_the_setting_is_read(tmp_path: Path) -> None:
    keys = _load(tmp_path, "limits:\n  client_key:\n    ipv6_prefix_length: 56\n"
                           "    nat64_prefixes: ['64:ff9b:1::/48', '64:ff9b::/96']\n")
    assert keys.ipv6_prefix_length == 56
    assert [str(p) for p in keys.nat64_prefixes] == ["64:ff9b::/96", "64:ff9b:1::/48"]
    assert client_keys(load_config(None, environ={})) == ClientKeys()


@pytest.mark.parametrize("value,key,reason", [
    ("nat64_prefixes: ['64:ff9b::/80']", "nat64_prefixes[0]", "/32, /40, /48, /56, /64 or /96"),
    ("nat64_prefixes: ['64:ff9b::/96', '10.0.0.0/8']", "nat64_prefixes[1]",
     "not an IPv6 prefix"),
    ("nat64_prefixes: ['64:ff9b::1/96']", "nat64_prefixes[0]", "bits set past its length"),
    ("nat64_prefixes: ['nat64']", "nat64_prefixes[0]", "not an IPv6 prefix"),
    ("nat64_prefixes: ['2001:db8:0:0:ff00::/96']", "nat64_prefixes[0]", "u\" octet"),
    ("ipv6_prefix_length: 16", "ipv6_prefix_length", "at least 32"),
    ("ipv6_prefix_length: 129", "ipv6_prefix_length", "less than or equal to 128"),
    ("ipv6_prefix_length: '64'", "ipv6_prefix_length", "whole number"),
    ("ipv4_prefix_length: 33", "ipv4_prefix_length", "less than or equal to 32"),
])
def test_a_bad_setting_is_refused_at_load(tmp_path: Path, value: str, key: str,
                                          reason: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"limits:\n  client_key:\n    {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert caught.value.key == f"limits.client_key.{key}"
    assert reason in caught.value.reason
