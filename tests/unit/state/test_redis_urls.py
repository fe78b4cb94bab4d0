"""``state.redis_url``: one server, a Sentinel-managed master or a Redis Cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.state.connect import RedisTarget, parse_redis_url


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://h:6379/0", RedisTarget("single", "redis://h:6379/0")),
    ("rediss://:pw@h:6380/2", RedisTarget("single", "rediss://:pw@h:6380/2", tls=True)),
    ("redis+sentinel://s1:26379,s2:26380/mymaster",
     RedisTarget("sentinel", "redis+sentinel://s1:26379,s2:26380/mymaster",
                 nodes=(("s1", 26379), ("s2", 26380)), service="mymaster")),
    ("rediss+sentinel://:p%40ss@[::1]:26379/svc/3",
     RedisTarget("sentinel", "rediss+sentinel://:p%40ss@[::1]:26379/svc/3", tls=True,
                 nodes=(("::1", 26379),), service="svc", db=3, password="p@ss")),
    ("redis+cluster://n1:7000,n2:7001",
     RedisTarget("cluster", "redis+cluster://n1:7000,n2:7001",
                 nodes=(("n1", 7000), ("n2", 7001)))),
])
def test_parsed(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected
    assert parse_redis_url(url).password == expected.password  # not compared above


@pytest.mark.parametrize(("url", "complaint"), [
    ("memcached://h:1", "must start with"),
    ("redis+sentinel://s1:26379", "service name"),
    ("redis+sentinel://s1:26379/svc/x", "database must be a number"),
    ("redis+sentinel://s1/svc", "host:port"),
    ("redis+cluster://n1:7000/1", "only database 0"),
    ("redis+cluster://n1:99999", "host:port"),
])
def test_refused_with_a_reason_and_no_secret(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        parse_redis_url(url.replace("://", "://:secretpw@", 1))
    assert "secretpw" not in str(caught.value)


def test_checked_when_the_configuration_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("state:\n  backend: redis\n  redis_url: redis+sentinel://s1:26379\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert "state.redis_url" in str(caught.value)
    path.write_text("state:\n  backend: redis\n  redis_url: redis+sentinel://:pw@s1:26379/m\n"
                    "  redis_password_file: /run/secrets/redis\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert "give one of them" in str(caught.value)


@pytest.mark.parametrize("url", [
    "redis+sentinel://:s3cr/etPW@s1:26379/svc",
    "redis+cluster://:s3cr/etPW@n1:7000",
    "redis://:s3cr/etPW@r:6379/0",
    "rediss://user:s3cr?etPW@r:6380",
    "redis+sentinel://:s3cr#etPW@s1:26379/svc/x",
])
def test_a_password_with_a_slash_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValueError, match="percent-encoded") as caught:
        parse_redis_url(url)
    assert "s3cr" not in str(caught.value) and "etPW" not in str(caught.value)


def test_doctor_and_check_config_never_show_a_piece_of_the_password(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    for url in ("redis+sentinel://:s3cr/etPW@127.0.0.1:1/svc", "redis://:s3cr/etPW@127.0.0.1:1/0",
                "redis+cluster://:s3cr/etPW@127.0.0.1:1"):
        path.write_text(f"state:\n  backend: redis\n  redis_url: '{url}'\n")
        for command in (["check-config", str(path)], ["doctor", "--config", str(path)]):
            result = subprocess.run([sys.executable, "-m", "gateway.cli", *command],
                                    capture_output=True, text=True, timeout=60)
            shown = result.stdout + result.stderr
            assert result.returncode != 0, shown
            assert "s3cr" not in shown and "etPW" not in shown, (command, shown)
            assert "Traceback" not in shown
