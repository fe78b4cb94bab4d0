"""``ecr-gateway check-config``: validation, the effective configuration, secrets masked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config import load_config
from gateway.tools.check_config import effective, secret_values

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_prints_the_effective_configuration_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "upstream": {"mode": "aws", "access_key_id": "AKIDEXAMPLE",
                     "secret_access_key": SECRET, "session_token": "FwoGZXIvYXdzEXAMPLE"},
        "state": {"backend": "redis", "redis_url": "redis://:hunter2hunter2@redis:6379/0"},
        "routes": [{"prefix": "ci", "repository_prefix": "ci"}]}))
    result = _run("check-config", str(config),
                  env={"ECR_GATEWAY_BLOBS__MODE": "proxy"})
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and "FwoGZXIvYXdzEXAMPLE" not in result.stdout
    assert "hunter2hunter2" not in result.stdout
    shown = yaml.safe_load(result.stdout)
    assert shown["upstream"]["secret_access_key"] == "***"
    assert shown["upstream"]["access_key_id"] == "AKIDEXAMPLE"  # an id, not a secret
    assert shown["state"]["redis_url"] == "redis://:***@redis:6379/0"
    assert shown["blobs"]["mode"] == "proxy"  # the environment's override is included
    # The catch-all route the gateway adds is part of what it will really use.
    assert [r["prefix"] for r in shown["routes"]] == ["ci", ""]


def test_names_the_bad_key_and_fails(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("state:\n  backend: memcached\n")
    result = _run("check-config", str(config))
    assert result.returncode == 2
    assert "state.backend" in result.stderr and "local, redis" in result.stderr
    config.write_text("state:\n  backend: redis\n")
    assert main(["check-config", str(config)]) == 2
    assert "state.redis_url" in capsys.readouterr().err


def test_a_file_it_cannot_read_is_named_without_an_option(tmp_path: Path) -> None:
    """check-config takes the file as its argument: an unreadable one is not a --config
    problem, nor "invalid"."""
    for path in (tmp_path / "missing.yaml", tmp_path):
        result = _run("check-config", str(path))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"ecr-gateway: cannot read {path}: "
            + ("No such file or directory" if path != tmp_path else "Is a directory")]


@pytest.mark.parametrize(("text", "expected"), [
    ("auth:\n  mod: htpasswd\n", ":2:3: invalid: auth.mod: unknown key (did you mean "
     "'mode'?)"),
    ("limits:\n  max_page_size: lots\n", ":2:3: invalid: limits.max_page_size: must be a "
     "whole number, got 'lots'"),
    ("listen: 5000\n", ":1:1: invalid: listen: must be HOST:PORT, got '5000'"),
])
def test_a_common_mistake_is_named_where_it_is(tmp_path: Path, text: str,
                                                expected: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    result = _run("check-config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{config}{expected}", result.stderr


def test_refuses_what_serve_would_refuse(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("listen: 0.0.0.0:5000\nauth:\n  mode: none\n")
    assert main(["check-config", str(config)]) == 2
    assert "auth.mode" in capsys.readouterr().err


def test_example_configuration_and_every_deploy_configuration_are_valid(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ECR_GATEWAY_")]:
        monkeypatch.delenv(name)
    root = Path(__file__).resolve().parents[3]
    files = [root / "config.example.yaml",
             *sorted((root / "deploy").rglob("config.yaml"))]
    assert len(files) >= 5  # the example, the image's default, the three overlays
    for path in files:
        # they name files of the machines they are deployed to
        code = main(["check-config", "--skip-file-checks", str(path)])
        out = capsys.readouterr()
        assert code == 0, (path, out.err)
        assert yaml.safe_load(out.out)["listen"]


def test_secret_values_feed_the_log_redaction() -> None:
    config = load_config(None, environ={
        "ECR_GATEWAY_UPSTREAM__SECRET_ACCESS_KEY": SECRET,
        "ECR_GATEWAY_STATE__REDIS_URL": "rediss://user:pa55word@r:6380/1"})
    assert set(secret_values(config)) == {SECRET, "pa55word"}
    assert effective(config)["upstream"]["secret_access_key"] == "***"


def _htpasswd_config(tmp_path: Path, **auth: object) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"auth": {"mode": "htpasswd", **auth}}))
    return config


def test_a_missing_htpasswd_file_is_invalid(tmp_path: Path) -> None:
    rules = [{"repository": "**", "users": ["*"], "actions": ["pull"]}]
    missing = tmp_path / "nowhere" / "htpasswd"
    config = _htpasswd_config(tmp_path, htpasswd_file=str(missing), rules=rules)
    result = _run("check-config", str(config))
    assert result.returncode == 2, result.stdout
    assert f"auth.htpasswd_file: {missing} does not exist" in result.stderr
    assert "valid." not in result.stdout
    missing.parent.mkdir()
    missing.write_text("")
    assert _run("check-config", str(config)).returncode == 0


def test_htpasswd_mode_without_rules_is_invalid(tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text("")
    result = _run("check-config", str(_htpasswd_config(tmp_path, htpasswd_file=str(users))))
    assert result.returncode == 2, result.stdout
    assert "auth.rules: none, so nothing is allowed" in result.stderr


def test_a_bad_environment_variable_is_named_instead_of_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("listen: 127.0.0.1:5000\n")
    result = _run("check-config", str(config), env={"ECR_GATEWAY_UPSTREAM__REGOIN": "x"})
    assert result.returncode == 2
    assert result.stderr.startswith("ECR_GATEWAY_UPSTREAM__REGOIN (environment variable): "
                                    "invalid: upstream.regoin: unknown key"), result.stderr
    assert str(config) not in result.stderr
    # a mistake in the file is still the file's, with its line and column
    config.write_text("listen: 127.0.0.1:5000\nupstream:\n  regoin: x\n")
    result = _run("check-config", str(config))
    assert result.stderr.startswith(f"{config}:3:3: invalid: upstream.regoin: unknown key"), \
        result.stderr


def test_attacker_reading_check_config_sees_no_piece_of_a_password_with_an_at(
        tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state": {
        "backend": "redis", "redis_url": "redis+sentinel://:p@ss-w0rd@s1:26379,s2:26379/m"}}))
    result = _run("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert "ss-w0rd" not in result.stdout
    shown = yaml.safe_load(result.stdout)
    assert shown["state"]["redis_url"] == "redis+sentinel://:***@s1:26379,s2:26379/m"


def test_route_upstream_and_redis_passwords_feed_the_log_redaction(tmp_path: Path) -> None:
    (tmp_path / "upstream").write_text("route-upstream-pw\n")
    (tmp_path / "redis").write_text("redis-file-pw\n")
    (tmp_path / "sentinel").write_text("sentinel-file-pw\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "state": {"backend": "redis", "redis_url": "redis+sentinel://s1:26379/m",
                  "redis_password_file": str(tmp_path / "redis"),
                  "redis_sentinel_password_file": str(tmp_path / "sentinel")},
        "routes": [{"prefix": "hub", "repository_prefix": "docker-hub", "upstream": {
            "url": "https://registry.example.com", "username": "puller",
            "password_file": str(tmp_path / "upstream")}}]}))
    assert set(secret_values(load_config(str(config), environ={}))) == {
        "route-upstream-pw", "redis-file-pw", "sentinel-file-pw"}


@pytest.mark.parametrize("url", [
    "unix:///run/redis/redis.sock?db=0&password=qu3ry-pw%26more",
    "redis://redis:6379/0?password=qu3ry-pw%26more",
    "rediss://redis:6380/1?ssl_cert_reqs=required&PASSWORD=qu3ry-pw%26more&db=1",
])
def test_a_redis_password_in_the_url_query_is_masked_and_redacted(tmp_path: Path,
                                                                   url: str) -> None:
    """The Redis client reads ``?password=`` of any Redis URL (the usual way for a unix
    socket): check-config shows it masked, and the log redaction knows it, encoded or not."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state": {"backend": "redis", "redis_url": url}}))
    result = _run("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert "qu3ry-pw" not in result.stdout, result.stdout
    shown = yaml.safe_load(result.stdout)["state"]["redis_url"]
    assert shown == url.replace("qu3ry-pw%26more", "***"), shown
    found = secret_values(load_config(str(config), environ={}))
    assert {"qu3ry-pw%26more", "qu3ry-pw&more"} <= set(found), found
