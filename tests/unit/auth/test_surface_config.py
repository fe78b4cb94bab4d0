"""The configuration keys of the auth surface are checked at start, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config


@pytest.mark.parametrize(("text", "key"), [
    ("trusted_proxies: [10.0.0.0/33]\n", "trusted_proxies[0]"),
    ("trusted_proxies: [proxy.example]\n", "trusted_proxies[0]"),
    ("metrics_listen: '9090'\n", "metrics_listen"),
    ("auth:\n  token:\n    realm: registry.example.com/token\n", "auth.token.realm"),
    ("upstream:\n  http_read_timeout_seconds: 0\n", "upstream.http_read_timeout_seconds"),
    ("state:\n  backend: redis\n  redis_url: 'redis://:pw@r:6379/0'\n"
     "  redis_password_file: /run/pw\n", "state.redis_password_file"),
])
def test_bad_surface_keys_are_refused(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert caught.value.key == key


def test_good_surface_keys_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("trusted_proxies: [10.0.0.0/8, '::1', 192.0.2.7]\n"
                    "metrics_listen: 127.0.0.1:9090\n"
                    "auth:\n  token:\n    realm: https://gw.example.com/token\n"
                    "    realm_hosts: [gw.example.com:5000]\n")
    config = load_config(str(path), environ={})
    assert config.trusted_proxies[0] == "10.0.0.0/8"
    assert config.auth.token.realm_hosts == ["gw.example.com:5000"]
