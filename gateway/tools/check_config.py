"""``ecr-gateway check-config FILE``: validate a configuration file (with the environment's
``ECR_GATEWAY_*`` overrides, as ``serve`` would see it) and print the effective
configuration as YAML, every secret masked."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

from gateway.config import ENV_PREFIX, FILE_OPTION, Config, ConfigError, load_config

MASK = "***"
# Keys whose values are secrets (matched on the last part of the dotted key).
SECRET_KEYS = frozenset({"secret_access_key", "session_token", "password", "signing_key",
                         "private_key", "token_secret"})
# A URL's password runs to the last "@" of its host part (a password may hold "@").
_URL_PASSWORD = re.compile(
    r"^(?P<head>[a-z][a-z0-9+.-]*://[^/@:]*:)(?P<pw>[^/]+)(?P<tail>@[^@/]*(?:/.*)?)$",
    re.IGNORECASE)
# A secret given as a URL's query parameter (redis-py reads ``?password=`` of any Redis
# URL, and of ``unix://`` sockets it is the usual way).
_QUERY_SECRET = re.compile(r"(?P<head>[?&](?:" + "|".join(sorted(SECRET_KEYS))
                           + r")=)(?P<value>[^&#]*)", re.IGNORECASE)


def _url_secrets(value: str) -> list[str]:
    """The secrets in a URL's user info and query, as written and decoded."""
    if "://" not in value:
        return []
    found = []
    match = _URL_PASSWORD.match(value)
    if match:
        found.append(match["pw"])
    found += [m["value"] for m in _QUERY_SECRET.finditer(value) if m["value"]]
    return found + [unquote(s) for s in found if unquote(s) != s]


def _mask_url(value: str) -> str:
    if "://" not in value:
        return value
    match = _URL_PASSWORD.match(value)
    if match:
        value = f"{match['head']}{MASK}{match['tail']}"
    return _QUERY_SECRET.sub(lambda m: m["head"] + (MASK if m["value"] else ""), value)


def _walk(value: Any, key: str = "") -> Any:
    """(masked copy, secrets found) of a plain data tree."""
    if isinstance(value, dict):
        return {k: _walk(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, key) for v in value]
    if isinstance(value, str):
        if key in SECRET_KEYS and value:
            return MASK
        return _mask_url(value)
    return value


def _secrets(value: Any, key: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _secrets(v, str(k))
    elif isinstance(value, list):
        for v in value:
            found += _secrets(v, key)
    elif isinstance(value, str) and value:
        if key in SECRET_KEYS:
            found.append(value)
        found += _url_secrets(value)
    return found


def effective(config: Config) -> dict[str, Any]:
    """The configuration as plain data, secrets masked, with the routes the gateway really
    uses (the catch-all route added when none is configured)."""
    data = config.model_dump()
    data["routes"] = [route.model_dump() for route in config.effective_routes()]
    masked: dict[str, Any] = _walk(data)
    return masked


def secret_values(config: Config) -> list[str]:
    """Every secret value in the configuration (for log redaction), and the passwords of
    pull-through upstreams, which live in files the configuration names."""
    found = _secrets(config.model_dump())
    upstreams = [mirror.upstream for mirror in config.mirrors.values()]
    upstreams += [route.upstream for route in config.routes]
    for upstream in upstreams:
        if upstream is not None:
            with contextlib.suppress(OSError):
                password = upstream.password()
                if password:
                    found.append(password)
    for key in ("redis_password_file", "redis_sentinel_password_file"):
        path = getattr(config.state, key)
        with contextlib.suppress(OSError):
            if path and (password := Path(path).read_text().strip()):
                found.append(password)
    return found


def environment_source(key: str) -> str | None:
    """The ``ECR_GATEWAY_*`` variable that set ``key`` (a dotted path, maybe indexed), if
    any: the environment overrides the file, so a mistake there is not the file's. (The
    loader names the source of what it refuses; this is for the checks made after it.)"""
    dotted = key.split("[", 1)[0]
    for name in sorted(os.environ):
        if not name.startswith(ENV_PREFIX):
            continue
        path = ".".join(name[len(ENV_PREFIX):].lower().split("__"))
        if dotted == path or dotted.startswith(path + "."):
            return name
    return None


def problems(config: Config, check_files: bool = True) -> list[str]:
    """What loads but cannot work: an htpasswd gateway without rules or anonymous pulls
    (every request would be denied) and, with ``check_files``, named files that are not on
    this machine."""
    found = []
    anonymous = (any(route.anonymous_pull for route in config.routes)
                 or any(mirror.anonymous_pull for mirror in config.mirrors.values()))
    if config.auth.mode == "htpasswd" and not config.auth.rules and not anonymous:
        found.append("auth.rules: none, so nothing is allowed: with auth.mode htpasswd only "
                     "what a rule (or a route's or mirror's anonymous_pull) allows is (see "
                     "README, Authentication)")
    return found + missing_files(config) if check_files else found


def missing_files(config: Config) -> list[str]:
    """The files the configuration names that are not here to read: ``serve`` refuses to
    start without them, as check-config does."""
    found = []
    files = {"auth.htpasswd_file": config.auth.htpasswd_file,
             "auth.token.signing_key_file": config.auth.token.signing_key_file,
             "tls.cert_file": config.tls.cert_file, "tls.key_file": config.tls.key_file}
    for key, name in files.items():
        if name and not os.path.isfile(name):
            found.append(f"{key}: {name} does not exist (or is not a file)")
        elif name and not os.access(name, os.R_OK):
            found.append(f"{key}: {name} is not readable")
    return found


def run(path: str, check_files: bool = True) -> int:
    from gateway.auth.exposure import check_exposure

    try:
        config = load_config(path)
        warnings = check_exposure(config)  # what `serve` refuses to start with
    except ConfigError as exc:
        if exc.key == FILE_OPTION:  # the file itself, named here as FILE, not --config
            print(f"{exc.where}: invalid: {exc.reason}" if exc.where
                  else f"ecr-gateway: {exc.reason}", file=sys.stderr)
            return 2
        variable = environment_source(exc.key)
        where = exc.where or (f"{variable} (environment variable)" if variable else path)
        print(f"{where}: invalid: {exc}", file=sys.stderr)
        return 2
    found = problems(config, check_files)
    if found:
        for problem in found:
            print(f"{path}: invalid: {problem}", file=sys.stderr)
        return 2
    print(f"# {path}: valid. Effective configuration (file + ECR_GATEWAY_* environment; "
          f"secrets shown as {MASK}):")
    for warning in warnings:
        print("# warning: " + " ".join(warning.split()))
    print(yaml.safe_dump(effective(config), sort_keys=False, default_flow_style=False), end="")
    return 0
