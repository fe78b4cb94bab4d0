"""The auth and tls sections of the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config


def test_defaults_are_off() -> None:
    config = load_config(None, environ={})
    assert config.auth.mode == "none"
    assert config.auth.token.ttl_seconds == 300
    assert config.tls.cert_file is None


def test_full_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("""
auth:
  mode: htpasswd
  htpasswd_file: /etc/ecr-gateway/htpasswd
  token: {realm: "https://gw.example/token", service: gw, ttl_seconds: 120}
  groups:
    team-a: [alice, ci-a]
  rules:
    - {repository: "team-a/**", groups: [team-a], actions: [pull, push]}
    - {repository: "public/**", users: ["*"], anonymous: true, actions: [pull]}
tls: {cert_file: /c.pem, key_file: /k.pem}
""")
    config = load_config(str(path), environ={"ECR_GATEWAY_AUTH__TOKEN__TTL_SECONDS": "90"})
    assert config.auth.groups == {"team-a": ["alice", "ci-a"]}
    assert config.auth.rules[1].anonymous is True
    assert config.auth.rules[0].actions == ["pull", "push"]
    assert config.auth.token.ttl_seconds == 90
    assert config.auth.token.realm == "https://gw.example/token"
    assert config.tls.key_file == "/k.pem"


@pytest.mark.parametrize(("auth", "tls", "key"), [
    ({"mode": "ldap"}, {}, "auth.mode"),
    ({"mode": "htpasswd"}, {}, "auth.htpasswd_file"),
    ({"rules": [{"actions": ["pull", "fly"]}]}, {}, "auth.rules[0].actions"),
    ({"rules": [{"groups": ["nope"], "actions": ["pull"]}]}, {}, "auth.rules[0].groups"),
    ({"token": {"ttl_seconds": 5}}, {}, "auth.token.ttl_seconds"),
    ({}, {"cert_file": "/c.pem"}, "tls"),
])
def test_refusals_name_the_key(auth: dict[str, object], tls: dict[str, object],
                               key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={}, overrides={"auth": auth, "tls": tls})
    assert caught.value.key == key


def test_ecr_repository_rules(tmp_path: Path) -> None:
    rules = [{"ecr_repository": "docker-hub/**", "users": ["seeder"], "actions": ["push"]}]
    config = load_config(None, environ={}, overrides={"auth": {"rules": rules}})
    assert config.auth.rules[0].ecr_repository == "docker-hub/**"
    for bad, message in (({"repository": "x/**"}, "not both"), ({"actions": ["catalog"]},
                                                                 "catalog")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, environ={}, overrides={"auth": {"rules": [{**rules[0], **bad}]}})


def test_mirrors_ask_for_credentials_by_default() -> None:
    config = load_config(None, environ={}, overrides={"mirrors": {"docker.io": {}}})
    assert config.mirrors["docker.io"].anonymous_pull is False
