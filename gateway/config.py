"""Configuration: typed sections with defaults, loaded from YAML and the environment.

Every key has a default, so an empty file (or none) gives the embedded-emulator setup.
Environment variables override the file: ``ECR_GATEWAY_<SECTION>__<KEY>`` with ``__``
between levels, values parsed as YAML (``ECR_GATEWAY_BLOBS__MODE=proxy``,
``ECR_GATEWAY_LISTEN=0.0.0.0:5000``). Unknown keys and bad values are refused at start with
the key's dotted path and the reason.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "ECR_GATEWAY_"


class ConfigError(ValueError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass
class RepositorySettings:
    """What CreateRepository is given when ``create_on_push`` creates a repository, and what
    is applied to it right after (the gateway's repository creation template)."""

    image_tag_mutability: str = "MUTABLE"
    scan_on_push: bool = False
    encryption_type: str = "AES256"
    kms_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # SetRepositoryPolicy: an IAM policy document (a mapping, or its JSON text).
    repository_policy: Any = None
    # PutLifecyclePolicy (ECR only): {"rules": [...]} (a mapping, or its JSON text).
    lifecycle_policy: Any = None

    def policy_text(self) -> str | None:
        return _json_text(self.repository_policy)

    def lifecycle_text(self) -> str | None:
        return _json_text(self.lifecycle_policy)


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, indent=2)


@dataclass
class RouteConfig:
    """Client repository names under ``prefix`` map to ECR repositories under
    ``repository_prefix`` in ``registry_id``/``region``. The longest matching prefix wins."""

    prefix: str = ""
    repository_prefix: str = ""
    registry_id: str | None = None
    region: str | None = None  # None: upstream.region
    create_on_push: bool = True
    # Pulls need no client credentials on this route (honoured by the auth layer).
    anonymous_pull: bool = False
    repository: RepositorySettings = field(default_factory=RepositorySettings)
    # "ecr", or "ecr-public": the repositories are ECR Public's (us-east-1), pushed through
    # its API and pulled from its registry endpoint (gateway/ecr/public.py).
    upstream_kind: str = "ecr"
    # ECR Public: the registry endpoint pulls go to. None: https://public.ecr.aws, or the
    # embedded emulator's with upstream.mode embedded.
    registry_url: str | None = None
    # ECR Public: the alias in pull paths (<registry_url>/v2/<alias>/<repository>/...).
    # None: the registry's primary alias (DescribeRegistries); "": names carry the alias.
    registry_alias: str | None = None
    # ECR Public: "from_annotations" fills the repository's catalog data (description,
    # about, usage, architectures, operating systems) from each tagged image pushed.
    catalog_data: str = "none"


@dataclass
class PullThroughConfig:
    """The registry a mirror fills ECR from when ECR does not hold what a client asks for
    (gateway/pullthrough/): any OCI registry, anonymous, with the docker token flow or Basic
    auth. ``password_file`` holds the password (never the configuration itself)."""

    url: str = ""
    username: str | None = None
    password_file: str | None = None
    # How long a tag is trusted before one HEAD asks the upstream whether it moved.
    tag_ttl_seconds: float = 300.0
    # An index's children copied into ECR: "all", or only those clients ask for.
    platforms: str = "all"
    # Connect and read timeout of each upstream request.
    timeout_seconds: float = 30.0

    def password(self) -> str | None:
        if not self.password_file:
            return None
        return Path(self.password_file).read_text().strip()


@dataclass
class MirrorConfig:
    """Where requests for one upstream registry go when a mirror client names it with
    ``?ns=<host>`` (containerd does, on every request to a mirror). ``<host>/<name>`` is
    served from the ECR repository ``repository_prefix/<name>``: ``docker.io`` with prefix
    ``docker-hub`` maps ``docker.io/library/nginx`` to ``docker-hub/library/nginx``, as an
    ECR pull-through cache rule with that prefix names it. For an ECR host
    (``<account>.dkr.ecr.<region>.amazonaws.com``) registry_id and region default to the
    ones in the host name. Mirror routes are pull-only: nothing is created on push."""

    repository_prefix: str = ""
    registry_id: str | None = None  # None: from an ECR host name, else the caller's own
    region: str | None = None  # None: from an ECR host name, else upstream.region
    # Pulls through this mirror need no credentials (honoured by the auth layer, within its
    # access rules). Off by default: containerd can send a per-node credential instead.
    anonymous_pull: bool = False
    # public.ecr.aws only (an ECR Public mirror): the registry endpoint pulls go to. None:
    # https://public.ecr.aws, or the embedded emulator's with upstream.mode embedded.
    registry_url: str | None = None
    # Fill ECR from this registry on a miss (pull-through); None: serve what ECR holds.
    upstream: PullThroughConfig | None = None


@dataclass
class CacheConfig:
    """The pull path's in-memory caches (per process)."""

    # How long a tag → digest answer is reused (0: every tag read asks ECR).
    tag_ttl_seconds: float = 5.0
    # Manifests by digest (immutable), least recently used dropped beyond this size.
    manifest_max_bytes: int = 64 * 1024**2
    # A manifest by digest is served from the cache this long after ECR last confirmed it;
    # older, it is asked for again (an image deleted elsewhere is not served beyond this).
    manifest_revalidate_seconds: float = 5.0
    # Presigned download URLs are reused this long (well within their validity).
    download_url_ttl_seconds: float = 300.0
    # Tag lists and the catalog kept for paging (for tag_ttl_seconds), least recently read
    # dropped beyond this estimate of their size.
    listing_max_bytes: int = 64 * 1024**2


@dataclass
class UpstreamConfig:
    mode: str = "embedded"  # "embedded": start the ECR emulator; "aws": a real (or given) ECR
    region: str = "us-east-1"
    endpoint_url: str | None = None
    # The ECR Public API (routes with upstream_kind ecr-public). None: endpoint_url.
    public_endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    retry_budget_seconds: float = 10.0
    call_timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 5.0
    max_connections: int = 64
    # The gateway's own HTTP client (blob downloads in proxy mode and for mounts, the ECR
    # Public registry): to open a connection, to wait for a free one in the pool, and the
    # longest silence while reading an answer. An upstream that stops answering fails the
    # request with 503 instead of holding it for ever.
    http_connect_timeout_seconds: float = 10.0
    http_pool_timeout_seconds: float = 30.0
    http_read_timeout_seconds: float = 60.0
    # Circuit breaker: after this many consecutive outage failures (no answer, 5xx) calls to
    # the endpoint fail at once with 503 for breaker_open_seconds, then one probe goes (0: off).
    breaker_failures: int = 5
    breaker_open_seconds: float = 2.0


@dataclass
class StagingConfig:
    """Uploaded blobs kept locally until an image references them (ECR cannot serve them)."""

    max_bytes: int = 10 * 1024**3


@dataclass
class BlobCacheConfig:
    """Proxy mode: a local copy of every blob served, shared by all repositories."""

    path: str | None = None  # None: no blob cache
    max_bytes: int = 20 * 1024**3


@dataclass
class BlobsConfig:
    mode: str = "redirect"  # "redirect" (307 to the download URL) or "proxy"
    staging: StagingConfig = field(default_factory=StagingConfig)
    cache: BlobCacheConfig = field(default_factory=BlobCacheConfig)


@dataclass
class UploadsConfig:
    idle_timeout_seconds: float = 3600.0


@dataclass
class LimitsConfig:
    """Bounds against resource exhaustion (gateway/oci/limits.py); 0 disables a bound."""

    max_manifest_bytes: int = 4 * 1024**2  # ECR's own PutImage limit is 4 MiB
    max_uploads_per_client: int = 128  # upload requests in progress per user or address
    max_uploads_total: int = 512  # upload requests in progress over all clients
    max_open_uploads: int = 10000  # upload sessions open at once
    body_idle_timeout_seconds: float = 60.0  # a request body silent this long is cut (408)
    body_timeout_seconds: float = 3600.0  # a request body taking longer is cut (408)
    header_timeout_seconds: float = 60.0  # to send a request's headers (and keep-alive idle)
    max_header_bytes: int = 8190  # one request line or header field
    max_headers: int = 100  # header fields per request
    max_page_size: int = 1000  # the largest `n` of a tags or catalog page


@dataclass
class StateConfig:
    """Where upload sessions live: ``local`` (this process, spilled to data_dir) or ``redis``
    (shared by every replica, so any replica can continue any session)."""

    backend: str = "local"
    # redis://host:port/db, redis+sentinel://h1:26379,h2:26379/service[/db] or
    # redis+cluster://h1:6379,h2:6379 (gateway/state/connect.py); a password here shows in
    # configs.
    redis_url: str | None = None
    # A file holding the Redis password (a mounted Secret): kept out of the URL and config.
    redis_password_file: str | None = None
    # A file holding the Sentinels' own password, when they ask for one (redis+sentinel).
    redis_sentinel_password_file: str | None = None
    key_prefix: str = "ecr-gateway:"
    lock_ttl_seconds: float = 15.0  # a dead replica's session lock frees itself after this
    lock_wait_seconds: float = 60.0  # a request waits this long for a busy session
    # How the other replicas reach this one (for staged blobs read through another replica),
    # e.g. http://10.0.0.5:5000. None: the listen address, unless it is a wildcard.
    peer_url: str | None = None


@dataclass
class TokenConfig:
    """The gateway's own token server (docker token auth)."""

    # Where clients are sent for tokens (and send their passwords). None: the host the
    # client used if it is in realm_hosts (or a loopback name on a loopback listener), else
    # the address the connection arrived on.
    realm: str | None = None
    realm_hosts: list[str] = field(default_factory=list)  # host[:port] as clients write it
    service: str = "ecr-gateway"
    issuer: str = "ecr-gateway"
    ttl_seconds: int = 300
    refresh_ttl_seconds: int = 14 * 86400  # 0: never hand out refresh tokens
    signing_key_file: str | None = None  # None: generated into data_dir/auth (mode 0600)


@dataclass
class AccessRuleConfig:
    """Repository pattern → users/groups → actions; the first matching rule decides.

    A rule with ``ecr_repository`` instead matches the ECR repository a request resolves to
    (after routes and mirrors): such rules can only narrow what the name rules allow, and
    are needed to push or delete in an ECR repository a mirror serves."""

    repository: str = "**"
    ecr_repository: str | None = None
    users: list[str] = field(default_factory=list)  # "*": every authenticated user
    groups: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)  # pull, push, delete, catalog
    anonymous: bool = False  # also applies to callers without credentials (pull only)


@dataclass
class RateLimitConfig:
    """Failed logins tolerated per user name and per client address within the window."""

    window_seconds: float = 300.0
    max_failures_per_user: int = 10
    max_failures_per_address: int = 50


@dataclass
class AuthConfig:
    mode: str = "none"  # "none", "htpasswd" or "aws"
    allow_anonymous_on_public_address: bool = False
    htpasswd_file: str | None = None
    token: TokenConfig = field(default_factory=TokenConfig)
    groups: dict[str, list[str]] = field(default_factory=dict)
    rules: list[AccessRuleConfig] = field(default_factory=list)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)


@dataclass
class TlsConfig:
    """HTTPS served by the gateway itself; both files are re-read when they change."""

    cert_file: str | None = None
    key_file: str | None = None
    reload_interval_seconds: float = 5.0


@dataclass
class Config:
    listen: str = "127.0.0.1:5000"
    data_dir: str = "./.ecr-gateway"
    log_level: str = "info"
    log_format: str = "text"  # "text" or "json" (one JSON object per line)
    shutdown_grace_seconds: float = 30.0  # SIGTERM: in-flight requests get this long
    # Peers (CIDRs) whose X-Forwarded-Proto/-Host/-For are believed; nobody else's are.
    trusted_proxies: list[str] = field(default_factory=list)
    # HOST:PORT of a listener serving only /metrics (no credentials asked there). None:
    # /metrics on the main listener, behind a login when authentication is on.
    metrics_listen: str | None = None
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    routes: list[RouteConfig] = field(default_factory=list)
    # Upstream registry host (containerd's ?ns=) → ECR target. Empty: ns is ignored and
    # `routes` serve every request; else a request whose ns is not listed gets NAME_UNKNOWN.
    mirrors: dict[str, MirrorConfig] = field(default_factory=dict)
    cache: CacheConfig = field(default_factory=CacheConfig)
    blobs: BlobsConfig = field(default_factory=BlobsConfig)
    uploads: UploadsConfig = field(default_factory=UploadsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def effective_routes(self) -> list[RouteConfig]:
        """The configured routes, plus a catch-all default when none covers every name."""
        routes = list(self.routes)
        if not any(route.prefix == "" for route in routes):
            routes.append(RouteConfig())
        return routes


_CHOICES = {
    "upstream.mode": ("embedded", "aws"),
    "blobs.mode": ("redirect", "proxy"),
    "log_level": ("debug", "info", "warning", "error"),
    "auth.mode": ("none", "htpasswd", "aws"),
    "log_format": ("text", "json"),
    "state.backend": ("local", "redis"),
    "routes.repository.image_tag_mutability": ("MUTABLE", "IMMUTABLE"),
    "routes.repository.encryption_type": ("AES256", "KMS"),
    "routes.upstream_kind": ("ecr", "ecr-public"),
    "routes.catalog_data": ("none", "from_annotations"),
}


# What containerd puts in ?ns=: a lower-case registry host, optionally with a port.
_MIRROR_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
                          r"(:[0-9]{1,5})?$")


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(path or "(top level)", "must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, raw in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in known:
            raise ConfigError(key_path, "unknown key")
        values[key] = _convert(hints[key], raw, key_path)
    return cls(**values)


def _convert(hint: Any, raw: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw is None:
            return None
        return _convert(options[0], raw, path)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), raw or {}, path)
    if origin is list:
        if not isinstance(raw, list):
            raise ConfigError(path, "must be a list")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, dict):
            raise ConfigError(path, "must be a mapping")
        value_hint = typing.get_args(hint)[1]
        if dataclasses.is_dataclass(value_hint) or typing.get_origin(value_hint) is list:
            return {str(k): _convert(value_hint, v, f"{path}.{k}") for k, v in raw.items()}
        return {str(k): str(v) for k, v in raw.items()}
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(path, "must be true or false")
        return raw
    if hint in (int, float):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(path, f"must be a number, got {raw!r}")
        if raw < 0:
            raise ConfigError(path, "must not be negative")
        return hint(raw)
    if hint is str:
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise ConfigError(path, f"must be a string, got {raw!r}")
        value = str(raw)
        generic = path.split("[")[0] + (path.split("]", 1)[1] if "]" in path else "")
        choices = _CHOICES.get(generic)
        if choices and value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(choices)}, got {value!r}")
        return value
    return raw


def _env_overrides(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = name[len(ENV_PREFIX):].lower().split("__")
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(value) if value != "" else None
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _check(config: Config) -> None:
    try:
        host, port = config.listen_host, config.listen_port
    except (ValueError, IndexError):
        raise ConfigError("listen", f"must be HOST:PORT, got {config.listen!r}") from None
    if not host or not 0 <= port <= 65535:
        raise ConfigError("listen", f"must be HOST:PORT, got {config.listen!r}")
    for i, cidr in enumerate(config.trusted_proxies):
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"trusted_proxies[{i}]", f"is not an address or CIDR: {cidr!r}"
                              ) from None
    if config.metrics_listen is not None:
        m_host, _, m_port = config.metrics_listen.rpartition(":")
        if not m_host or not m_port.isdigit() or int(m_port) > 65535:
            raise ConfigError("metrics_listen", f"must be HOST:PORT, got "
                              f"{config.metrics_listen!r}")
    for key in ("http_connect_timeout_seconds", "http_pool_timeout_seconds",
                "http_read_timeout_seconds"):
        if getattr(config.upstream, key) <= 0:
            raise ConfigError(f"upstream.{key}", "must be more than 0")
    if config.state.backend == "redis" and not config.state.redis_url:
        raise ConfigError("state.redis_url", "is required when state.backend is redis")
    if config.state.redis_url:
        from gateway.state.connect import parse_redis_url

        try:
            parse_redis_url(config.state.redis_url)
        except ValueError as exc:
            raise ConfigError("state.redis_url", str(exc)) from None
    if config.state.redis_password_file and config.state.redis_url and \
            re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", config.state.redis_url):
        raise ConfigError("state.redis_password_file", "and a password in state.redis_url: "
                          "give one of them")
    _check_auth(config)
    prefixes = [route.prefix for route in config.routes]
    if len(prefixes) != len(set(prefixes)):
        raise ConfigError("routes", "two routes have the same prefix")
    for i, route in enumerate(config.routes):
        if route.prefix.endswith("/") or route.repository_prefix.endswith("/"):
            raise ConfigError(f"routes[{i}]", "prefixes are written without a trailing slash")
        _check_route(route, f"routes[{i}]")
    for host, mirror in config.mirrors.items():
        if not _MIRROR_HOST.match(host):
            raise ConfigError(f"mirrors.{host}", "must be a registry host name (host[:port])")
        if mirror.repository_prefix.endswith("/"):
            raise ConfigError(f"mirrors.{host}.repository_prefix",
                              "prefixes are written without a trailing slash")
        if mirror.registry_url is not None and host != "public.ecr.aws":
            raise ConfigError(f"mirrors.{host}.registry_url",
                              "only for public.ecr.aws (an ECR Public mirror)")
        if mirror.upstream is not None:
            _check_pull_through(mirror.upstream, f"mirrors.{host}.upstream")


def _check_pull_through(upstream: PullThroughConfig, where: str) -> None:
    url = urllib.parse.urlsplit(upstream.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"{where}.url", f"must be an http(s):// registry URL, got "
                                          f"{upstream.url!r}")
    if url.username or url.password:
        raise ConfigError(f"{where}.url", "credentials go in username and password_file")
    if url.scheme == "http" and not _is_loopback(url.hostname):
        raise ConfigError(f"{where}.url", "http:// only for a loopback registry; use https://")
    if upstream.platforms not in ("all", "requested"):
        raise ConfigError(f"{where}.platforms",
                          f"must be one of all, requested, got {upstream.platforms!r}")
    if upstream.password_file is not None:
        if not upstream.username:
            raise ConfigError(f"{where}.password_file", "needs username")
        try:
            upstream.password()
        except OSError as exc:
            raise ConfigError(f"{where}.password_file",
                              f"cannot be read: {exc.strerror or exc}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_route(route: RouteConfig, where: str) -> None:
    settings = route.repository
    public = route.upstream_kind == "ecr-public"
    if public and route.region not in (None, "us-east-1"):
        raise ConfigError(f"{where}.region", "ECR Public is in us-east-1 only")
    if route.catalog_data != "none" and not public:
        raise ConfigError(f"{where}.catalog_data", "catalog data is ECR Public's "
                          "(upstream_kind: ecr-public)")
    for key in ("registry_url", "registry_alias"):
        if getattr(route, key) is not None and not public:
            raise ConfigError(f"{where}.{key}", "only for upstream_kind: ecr-public")
    if public and settings.lifecycle_policy is not None:
        raise ConfigError(f"{where}.repository.lifecycle_policy",
                          "ECR Public has no lifecycle policies")
    for key in ("repository_policy", "lifecycle_policy"):
        value = getattr(settings, key)
        if value is None:
            continue
        try:
            document = json.loads(value) if isinstance(value, str) else value
        except ValueError as exc:
            raise ConfigError(f"{where}.repository.{key}", f"is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{where}.repository.{key}", "must be a mapping (a JSON object)")
    lifecycle = settings.lifecycle_text()
    if lifecycle is not None:
        from ecr_model.lifecycle_policy import PolicyError, parse

        try:  # the rules ECR itself checks, so that no push meets a refusal
            parse(lifecycle)
        except PolicyError as exc:
            raise ConfigError(f"{where}.repository.lifecycle_policy", str(exc)) from None


def _check_auth(config: Config) -> None:
    auth, tls = config.auth, config.tls
    if auth.mode == "htpasswd" and not auth.htpasswd_file:
        raise ConfigError("auth.htpasswd_file", "is required when auth.mode is htpasswd")
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("tls", "cert_file and key_file go together")
    realm = auth.token.realm
    if realm is not None and not re.match(r"^https?://[^/\s]+", realm):
        raise ConfigError("auth.token.realm", f"must be an http(s) URL, got {realm!r}")
    if auth.token.ttl_seconds < 60:
        raise ConfigError("auth.token.ttl_seconds", "must be at least 60")
    for i, rule in enumerate(auth.rules):
        if rule.ecr_repository is not None and rule.repository != "**":
            raise ConfigError(f"auth.rules[{i}]", "a rule names repository or ecr_repository, "
                              "not both")
        if rule.ecr_repository is not None and "catalog" in rule.actions:
            raise ConfigError(f"auth.rules[{i}].actions", "catalog is granted by repository "
                              "rules, not ecr_repository ones")
        unknown = set(rule.actions) - {"pull", "push", "delete", "catalog"}
        if unknown:
            raise ConfigError(f"auth.rules[{i}].actions",
                              f"unknown action {sorted(unknown)[0]!r} (pull, push, delete, "
                              "catalog)")
        missing = [group for group in rule.groups if group not in auth.groups]
        if missing:
            raise ConfigError(f"auth.rules[{i}].groups", f"group {missing[0]!r} is not defined "
                              "in auth.groups")


def load_config(path: str | None = None, *, environ: typing.Mapping[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← file ← environment ← command-line overrides."""
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle)
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("(top level)", "must be a mapping")
        data = loaded or {}
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    data = _merge(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    config: Config = _build(Config, data, "")
    _check(config)
    return config
