"""Start-time refusals and warnings about the listen address, auth and TLS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ecr_model.hosts import is_loopback
from gateway.auth.exposure import check_exposure
from gateway.config import ConfigError, load_config


def config(listen: str, **sections: object) -> object:
    return load_config(None, environ={}, overrides={"listen": listen, **sections})


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
    ("registry.example.com", False),
])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_no_auth_on_loopback_is_fine() -> None:
    assert check_exposure(config("127.0.0.1:5000")) == []  # type: ignore[arg-type]


def test_no_auth_behind_a_trusted_proxy_on_loopback_is_refused() -> None:
    """A proxy on this host (nginx publishing 127.0.0.1:5000) forwards other hosts'
    requests: loopback is then no boundary."""
    proxied = {"trusted_proxies": ["127.0.0.1"]}
    with pytest.raises(ConfigError, match="behind the proxies of trusted_proxies"):
        check_exposure(config("127.0.0.1:5000", **proxied))  # type: ignore[arg-type]
    warnings = check_exposure(config(  # type: ignore[arg-type]
        "127.0.0.1:5000", auth={"allow_anonymous_on_public_address": True}, **proxied))
    assert len(warnings) == 1 and "NO AUTHENTICATION" in warnings[0]
    # Proxies elsewhere cannot reach a loopback listener.
    assert check_exposure(config(  # type: ignore[arg-type]
        "127.0.0.1:5000", trusted_proxies=["10.0.0.0/8", "fd00::/8"])) == []


def test_no_auth_on_a_public_address_is_refused() -> None:
    with pytest.raises(ConfigError, match="allow_anonymous_on_public_address"):
        check_exposure(config("0.0.0.0:5000"))  # type: ignore[arg-type]


def test_no_auth_on_a_public_address_when_allowed_warns() -> None:
    warnings = check_exposure(config(  # type: ignore[arg-type]
        "0.0.0.0:5000", auth={"allow_anonymous_on_public_address": True}))
    assert len(warnings) == 1 and "NO AUTHENTICATION" in warnings[0]


def test_no_auth_with_an_ecr_public_route_says_pushes_are_published() -> None:
    """Without authentication, a push through an ECR Public route publishes to the whole
    internet: the refusal and the warning say so, and name the route."""
    routes = [{"prefix": "pub", "upstream_kind": "ecr-public"}, {"prefix": ""}]
    with pytest.raises(ConfigError) as info:
        check_exposure(config("0.0.0.0:5000", routes=routes))  # type: ignore[arg-type]
    assert "published to the internet" in str(info.value)
    warnings = check_exposure(config(  # type: ignore[arg-type]
        "0.0.0.0:5000", routes=routes, auth={"allow_anonymous_on_public_address": True}))
    assert len(warnings) == 1 and "NO AUTHENTICATION" in warnings[0]
    assert "published to the internet (ECR Public)" in warnings[0]
    assert "routes[0] (prefix 'pub')" in warnings[0]


def test_auth_without_tls_on_a_public_address_warns(tmp_path: Path) -> None:
    auth = {"mode": "htpasswd", "htpasswd_file": str(tmp_path / "h")}
    warnings = check_exposure(config("0.0.0.0:5000", auth=auth))  # type: ignore[arg-type]
    assert len(warnings) == 1 and "WITHOUT TLS" in warnings[0]
    with_tls = config("0.0.0.0:5000", auth=auth,
                      tls={"cert_file": "c.pem", "key_file": "k.pem"})
    assert check_exposure(with_tls) == []  # type: ignore[arg-type]


def test_serve_refuses_before_listening(tmp_path: Path) -> None:
    """The real command exits with 2 and says why, without ever binding the address."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--listen", "0.0.0.0:0",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and "auth.mode" in result.stderr
    assert "listening" not in result.stdout


def _htpasswd(tmp_path: Path, text: str) -> dict[str, object]:
    path = tmp_path / "htpasswd"
    path.write_text(text)
    return {"mode": "htpasswd", "htpasswd_file": str(path)}


USER = "robot:$2y$04$" + "a" * 53 + "\n"
TLS = {"cert_file": "c.pem", "key_file": "k.pem"}


def test_an_htpasswd_file_without_users_is_no_authentication(tmp_path: Path) -> None:
    auth = _htpasswd(tmp_path, "# nobody yet\n\n")
    with pytest.raises(ConfigError, match="no users") as refused:
        check_exposure(config("0.0.0.0:5000", auth=auth, tls=TLS))  # type: ignore[arg-type]
    assert refused.value.key == "auth.htpasswd_file"
    assert check_exposure(config("127.0.0.1:5000", auth=auth)) == []  # type: ignore[arg-type]
    allowed = {**auth, "allow_anonymous_on_public_address": True}
    (warning,) = check_exposure(config("0.0.0.0:5000", auth=allowed,  # type: ignore[arg-type]
                                       tls=TLS))
    assert "NO USERS" in warning


@pytest.mark.parametrize(("sections", "key"), [
    ({"auth": {"rules": [{"repository": "**", "anonymous": True, "actions": ["pull"]}]}},
     "auth.rules[0].anonymous"),
    ({"routes": [{"prefix": "public", "anonymous_pull": True}]}, "routes[0].anonymous_pull"),
    ({"mirrors": {"docker.io": {"anonymous_pull": True}}}, "mirrors.docker.io.anonymous_pull"),
])
def test_anonymous_pulls_on_a_public_address_need_the_flag(
        tmp_path: Path, sections: dict[str, dict[str, object]], key: str) -> None:
    for mode in ("htpasswd", "aws"):
        auth = {**_htpasswd(tmp_path, USER), "mode": mode, **sections.get("auth", {})}
        rest = {k: v for k, v in sections.items() if k != "auth"}
        with pytest.raises(ConfigError) as refused:
            check_exposure(config("0.0.0.0:5000", auth=auth, tls=TLS,  # type: ignore[arg-type]
                                  **rest))
        assert refused.value.key == key and "without credentials" in refused.value.reason
        assert check_exposure(config("127.0.0.1:5000", auth=auth,  # type: ignore[arg-type]
                                     **rest)) == []
        flagged = {**auth, "allow_anonymous_on_public_address": True}
        (warning,) = check_exposure(config("0.0.0.0:5000", auth=flagged,  # type: ignore[arg-type]
                                           tls=TLS, **rest))
        assert "ANONYMOUS PULL" in warning and key in warning


def test_closed_mirrors_and_credentialed_rules_start_anywhere(tmp_path: Path) -> None:
    auth = {**_htpasswd(tmp_path, USER),
            "rules": [{"repository": "**", "users": ["*"], "actions": ["pull"]},
                      {"ecr_repository": "**", "anonymous": True, "actions": ["pull"]}]}
    assert check_exposure(config("0.0.0.0:5000", auth=auth, tls=TLS,  # type: ignore[arg-type]
                                 mirrors={"docker.io": {}})) == []
