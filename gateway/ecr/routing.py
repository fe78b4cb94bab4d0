"""Which ECR repository (registry, region, name) a client's repository name maps to.

Names map through ``routes`` (longest prefix wins). A mirror client (containerd) also names
the upstream registry it wants with ``?ns=<host>``; when ``mirrors`` are configured, that
host picks the target instead: ``mirrors[ns]`` maps ``<host>/<name>`` onto
``repository_prefix/<name>`` in its registry and region, and a host that is not listed
resolves to nothing (404 NAME_UNKNOWN, so containerd moves on to its next host). Resolution
is local: an unmapped name costs no upstream call. ``public.ecr.aws`` is ECR Public: its
mirror route pulls ``public.ecr.aws/<alias>/<name>`` from the ECR Public registry endpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from gateway.config import Config, ConfigError, MirrorConfig, RepositorySettings, RouteConfig
from gateway.oci.errors import NAME_INVALID, OciError
from gateway.oci.names import is_name
from gateway.oci.request import Credentials, RequestContext

# <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]: an ECR registry's own host name.
_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
# What ECR's API takes as a repository name (its model's RepositoryName) beyond the OCI
# grammar that gateway/oci/names.py already checked: 2 to 256 characters once routed (a
# route's repository_prefix counts); ECR Public at most 205, with single separators only.
_ECR_NAME_MIN = 2
_ECR_NAME_MAX = 256
_ECR_NAME = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
                       r"(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
_PUBLIC_NAME_MAX = 205
_PUBLIC_NAME = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
# ECR Public's registry (routes with upstream_kind ecr-public; see gateway/ecr/public.py).
ECR_PUBLIC_HOST = "public.ecr.aws"
ECR_PUBLIC_REGION = "us-east-1"
# What containerd puts in ?ns=: a lower-case registry host, optionally with a port.
_MIRROR_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
                          r"(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class Target:
    route: RouteConfig
    repository: str  # the ECR repository name
    region: str
    # Whose view of the repository (auth.mode aws: the caller's own keys; None: the
    # gateway's identity), and where the request counts its ECR calls.
    caller: Credentials | None = None
    calls: list[str] | None = field(default=None, compare=False, repr=False)

    def for_request(self, ctx: RequestContext) -> Target:
        return replace(self, caller=ctx.caller, calls=ctx.calls)

    @property
    def registry_id(self) -> str | None:
        return self.route.registry_id

    @property
    def key(self) -> tuple[str | None, str, str]:
        """Identifies the ECR repository: (registry id, region, repository name).

        When callers sign with their own AWS keys (auth.mode aws) it is also whose view of
        the repository this is (the registry id gets ``@<access key id>``): IAM may let one
        identity read what another may not, so cached answers are never shared between them.
        """
        registry = self.route.registry_id
        if self.route.upstream_kind == "ecr-public":  # another registry than ECR's
            registry = f"ecr-public:{registry or ''}"
            # And whose: the same text names a repository of the account's registry on a
            # route (its primary alias: None) and, on the public.ecr.aws mirror (alias "",
            # names carry it), the repository of whoever holds the alias it starts with.
            alias = self.route.registry_alias
            if alias is not None:
                registry += f"/{alias}"
        if self.caller is not None:
            return (f"{registry or ''}@{self.caller.access_key_id}", self.region,
                    self.repository)
        return (registry, self.region, self.repository)

    def check_name(self) -> Target:
        """400 NAME_INVALID for a repository name ECR would refuse, before any call."""
        name = self.repository
        fits = len(name) >= _ECR_NAME_MIN
        if self.route.upstream_kind == "ecr-public":
            fits = fits and len(name) <= _PUBLIC_NAME_MAX and bool(_PUBLIC_NAME.match(name))
        else:  # the prefix and the name each fit the grammar; joined, the length may not
            fits = fits and len(name) <= _ECR_NAME_MAX and bool(_ECR_NAME.match(name))
        if not fits:
            raise OciError(NAME_INVALID, {"repository": name[:300]},
                           message="ECR cannot hold a repository of this name")
        return self

    def ids(self) -> dict[str, str]:
        """The registryId/repositoryName parameters every repository-scoped action takes."""
        params = {"repositoryName": self.repository}
        if self.route.registry_id:
            params["registryId"] = self.route.registry_id
        return params


def mirror_route(host: str, mirror: MirrorConfig) -> RouteConfig:
    """The (pull-only) route a mirror entry stands for."""
    if host == ECR_PUBLIC_HOST:  # names carry the registry alias: public.ecr.aws/<alias>/...
        return RouteConfig(prefix="", repository_prefix=mirror.repository_prefix,
                           region=ECR_PUBLIC_REGION, create_on_push=False,
                           anonymous_pull=mirror.anonymous_pull, upstream_kind="ecr-public",
                           registry_url=mirror.registry_url, registry_alias="")
    registry_id, region = mirror.registry_id, mirror.region
    ecr = _ECR_HOST.match(host)
    if ecr:
        registry_id = registry_id or ecr[1]
        region = region or ecr[2]
    return RouteConfig(prefix="", repository_prefix=mirror.repository_prefix,
                       registry_id=registry_id, region=region, create_on_push=False,
                       anonymous_pull=mirror.anonymous_pull)


class Router:
    def __init__(self, routes: list[RouteConfig], default_region: str,
                 mirrors: dict[str, MirrorConfig] | None = None) -> None:
        # Longest prefix first so "team-a/ci" beats "team-a" beats "".
        self._routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self._region = default_region
        self._mirrors = {host: mirror_route(host, m) for host, m in (mirrors or {}).items()}

    @classmethod
    def from_config(cls, config: Config) -> Router:
        return cls(config.effective_routes(), config.upstream.region, config.mirrors)

    @property
    def routes(self) -> list[RouteConfig]:
        return list(self._routes)

    def region_of(self, route: RouteConfig) -> str:
        if route.upstream_kind == "ecr-public":
            return ECR_PUBLIC_REGION
        return route.region or self._region

    def resolve(self, name: str, ns: str | None = None) -> Target | None:
        """The target of ``name``; ``ns`` is the upstream host a mirror client named."""
        if ns is not None and self._mirrors:
            mirror = self._mirrors.get(ns)
            if mirror is None:
                return None
            return Target(mirror, _join(mirror.repository_prefix, name), self.region_of(mirror))
        for route in self._routes:
            rest = _strip(name, route.prefix)
            if rest is not None:
                return Target(route, _join(route.repository_prefix, rest), self.region_of(route))
        return None

    def unrouted_reason(self, name: str, ns: str | None) -> str:
        """Why :meth:`resolve` found no target, in words for the error message."""
        if ns is not None and self._mirrors:
            return f"this gateway is not a mirror of {ns}"
        return "no route serves this name"

    def through_mirror(self, ns: str | None) -> bool:
        """Whether a request naming ``ns`` is served by a mirror (else ``ns`` is ignored)."""
        return ns is not None and ns in self._mirrors

    def anonymous_pull(self, name: str, ns: str | None = None) -> bool:
        """Whether the route serving this request lets anyone pull (for the auth layer)."""
        target = self.resolve(name, ns)
        return target is not None and target.route.anonymous_pull

    def mirrored(self, target: Target) -> bool:
        """Whether ``target``'s ECR repository is one a mirror serves (under a mirror's
        repository_prefix, in the same kind of registry and region; a registry id left to
        default may be any), whichever route or mirror the request came through."""
        for mirror in self._mirrors.values():
            if (mirror.upstream_kind == target.route.upstream_kind
                    and self.region_of(mirror) == target.region
                    and (mirror.registry_id is None or target.registry_id is None
                         or mirror.registry_id == target.registry_id)
                    and _strip(target.repository, mirror.repository_prefix) is not None):
                return True
        return False

    def client_name(self, route: RouteConfig, repository: str) -> str | None:
        """The client-facing name of an ECR repository seen through ``route`` (or None)."""
        rest = _strip(repository, route.repository_prefix)
        if rest is None:
            return None
        name = _join(route.prefix, rest)
        # Only if this route is the one that would serve the name back.
        target = self.resolve(name)
        return name if target is not None and target.route is route else None


def _strip(name: str, prefix: str) -> str | None:
    if not prefix:
        return name
    if name == prefix:
        return ""
    if name.startswith(prefix + "/"):
        return name[len(prefix) + 1:]
    return None


def _join(prefix: str, rest: str) -> str:
    return f"{prefix}/{rest}" if prefix and rest else (prefix or rest)


# The configuration's checks of routes and mirrors (called by gateway/config/models.py).


# A pull-through fill writes with the gateway's own identity on any caller's pull: into ECR
# Public that would let a pull (a pull-only user's, an anonymous one's) create repositories
# and publish to the internet what the upstream served to the gateway's credentials.
_PUBLIC_FILL = ("ECR Public cannot be filled from an upstream: a fill writes with the "
                "gateway's identity on any pull, so every puller could publish to the internet "
                "what the upstream serves the gateway (use an ECR route or mirror)")


def check_routes(routes: list[RouteConfig]) -> None:
    prefixes = [route.prefix for route in routes]
    if len(prefixes) != len(set(prefixes)):
        raise ConfigError("routes", "two routes have the same prefix")


def check_route(route: RouteConfig) -> None:
    """One route's keys agree with each other and with its kind (ECR or ECR Public)."""
    if route.prefix.endswith("/") or route.repository_prefix.endswith("/"):
        raise ConfigError("", "prefixes are written without a trailing slash")
    if route.prefix and not is_name(route.prefix):
        # No name would ever match it: its names would go to a shorter prefix's route (the
        # catch-all, perhaps ECR Public: a push meant for this route published).
        raise ConfigError("prefix", "no repository name starts with it: names are "
                          "lower-case letters, digits and . _ - between / (the OCI grammar)")
    public = route.upstream_kind == "ecr-public"
    if public and route.region not in (None, ECR_PUBLIC_REGION):
        raise ConfigError("region", "ECR Public is in us-east-1 only")
    if route.catalog_data != "none" and not public:
        raise ConfigError("catalog_data", "catalog data is ECR Public's "
                          "(upstream_kind: ecr-public)")
    for key in ("registry_url", "registry_alias"):
        if getattr(route, key) is not None and not public:
            raise ConfigError(key, "only for upstream_kind: ecr-public")
    if public and route.upstream is not None:
        raise ConfigError("upstream", _PUBLIC_FILL)
    _check_registry_url("registry_url", route.registry_url)
    if public and route.repository.lifecycle_policy is not None:
        raise ConfigError("repository.lifecycle_policy", "ECR Public has no lifecycle policies")
    check_repository_settings(route.repository)


def _check_registry_url(key: str | tuple[str, ...], registry_url: str | None) -> None:
    """An ECR Public registry endpoint gets the gateway's ECR Public password (it opens
    pushes to the account's public registry): https, or http on loopback, with no
    credentials in the URL (they would be in error bodies and logs)."""
    from gateway.pullthrough.upstream import registry_url_problem

    problem = None if registry_url is None else registry_url_problem(registry_url)
    if problem is not None:
        raise ConfigError(key, problem)


def check_repository_settings(settings: RepositorySettings) -> None:
    """A route's ``repository`` section: the policy documents are JSON objects, and the
    lifecycle policy passes the rules ECR itself checks, so that no push meets a refusal."""
    for key in ("repository_policy", "lifecycle_policy"):
        value = getattr(settings, key)
        if value is None:
            continue
        if not isinstance(value, (str, dict)):
            raise ConfigError(f"repository.{key}", "must be a mapping (a JSON object)")
        try:
            document = json.loads(value) if isinstance(value, str) else value
        except ValueError as exc:
            raise ConfigError(f"repository.{key}", f"is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"repository.{key}", "must be a mapping (a JSON object)")
    lifecycle = settings.lifecycle_text()
    if lifecycle is not None:
        from ecr_model.lifecycle_policy import PolicyError, parse

        try:
            parse(lifecycle)
        except PolicyError as exc:
            raise ConfigError("repository.lifecycle_policy", str(exc)) from None


def check_mirrors(mirrors: Mapping[str, MirrorConfig], routes: Sequence[RouteConfig] = (),
                  region: str = "") -> None:
    for host, mirror in mirrors.items():
        if not _MIRROR_HOST.match(host):
            raise ConfigError(("mirrors", host), "must be a registry host name (host[:port])")
        if mirror.repository_prefix.endswith("/"):
            raise ConfigError(("mirrors", host, "repository_prefix"),
                              "prefixes are written without a trailing slash")
        if mirror.registry_url is not None and host != ECR_PUBLIC_HOST:
            raise ConfigError(("mirrors", host, "registry_url"),
                              "only for public.ecr.aws (an ECR Public mirror)")
        _check_registry_url(("mirrors", host, "registry_url"), mirror.registry_url)
        if host == ECR_PUBLIC_HOST and mirror.upstream is not None:
            raise ConfigError(("mirrors", host, "upstream"), _PUBLIC_FILL)
    for host, mirror in mirrors.items():
        if mirror.upstream is not None:
            _check_pull_through_namespace(host, mirrors, routes, region)


def _check_pull_through_namespace(host: str, mirrors: Mapping[str, MirrorConfig],
                                  routes: Sequence[RouteConfig], region: str) -> None:
    """The ECR repositories a mirror with an ``upstream`` fills (``repository_prefix/**``)
    are its alone. It writes them with the gateway's own identity on any client's pull, so
    a repository some route maps its names onto, or another mirror serves, would have its
    tags replaced by the upstream's images. Refused: an empty prefix (every repository), and
    a route's or another mirror's repository_prefix equal to it or inside it (in the same
    registry and region). One whose repositories merely hold the mirror's (the catch-all
    route ``""`` onto ``""``) reaches them only with names spelled with the mirror's prefix;
    a push there is a push into a mirror's ECR repository (it needs an ``ecr_repository``
    rule), and a mirror's clients never write. Two mirrors with upstreams never nest: the
    outer one's check finds the inner one."""
    mirror = mirrors[host]
    key = ("mirrors", host, "repository_prefix")
    prefix = mirror.repository_prefix
    if not prefix:
        raise ConfigError(key, f"a mirror with an upstream needs its own repository_prefix: it "
                          "fills ECR repositories with the gateway's identity, and with no "
                          f"prefix those are every route's repositories ({host}/team/app "
                          "would replace the images of team/app)")
    own = mirror_route(host, mirror)
    others = [(f"mirrors.{name}", mirror_route(name, other))
              for name, other in mirrors.items() if name != host]
    others += [(f"routes[{index}] (prefix {route.prefix!r})", route)
               for index, route in enumerate(routes)]
    for where, other in others:
        if _same_registry(own, other, region) and \
                _strip(other.repository_prefix, prefix) is not None:
            raise ConfigError(key, f"{prefix!r} holds the ECR repositories of {where}, "
                              f"repository_prefix {other.repository_prefix!r}: a mirror with "
                              "an upstream fills its repositories with the gateway's identity, "
                              "so they must be its alone (its upstream would replace the "
                              "images found there); give it a prefix of its own")


def check_pull_through_routes(routes: Sequence[RouteConfig],
                              mirrors: Mapping[str, MirrorConfig], region: str) -> None:
    """The ECR repositories a route with an ``upstream`` fills are its own, as a mirror's
    are (:func:`_check_pull_through_namespace`): it writes them with the gateway's identity
    on any pull of its names, so where another route (the catch-all added when no route has
    the prefix ``""`` included) or a mirror maps its names onto the same repositories, a
    caller allowed only to pull ``hub/team/app:prod`` would have the upstream's
    ``team/app:prod`` replace what ``team/app:prod`` names for everyone. Refused: another
    route's or mirror's repository_prefix equal to the route's or inside it (in the same
    registry and region), unless the route's names that map there all go to a longer route.
    One whose repositories merely hold the route's stays allowed, as for mirrors."""
    configured = list(routes)
    every = configured + ([] if any(r.prefix == "" for r in configured) else [RouteConfig()])
    for index, route in enumerate(configured):
        if route.upstream is None:
            continue
        others = [(f"routes[{at}] (prefix {other.prefix!r})" if at < len(configured) else
                   "the catch-all route every name no route takes goes to (prefix '' onto "
                   "repository_prefix '')", other)
                  for at, other in enumerate(every) if other is not route]
        others += [(f"mirrors.{host}", mirror_route(host, mirror))
                   for host, mirror in mirrors.items()]
        for where, other in others:
            inside = _strip(other.repository_prefix, route.repository_prefix)
            if inside is None or not _same_registry(route, other, region):
                continue
            # The route's names that map onto the other's repositories, unless a longer
            # route takes all of them.
            names = _join(route.prefix, inside)
            if any(len(longer.prefix) > len(route.prefix)
                   and _strip(names, longer.prefix) is not None for longer in every):
                continue
            example = _join(names, "app")
            raise ConfigError(
                ("routes", str(index), "repository_prefix"),
                f"{route.repository_prefix!r} holds the ECR repositories of {where}, "
                f"repository_prefix {other.repository_prefix!r}: a route with an upstream "
                "fills its repositories with the gateway's identity on any pull, so they must "
                f"be its alone (a pull of {example}:latest would put the upstream's image "
                f"in ECR as {_join(other.repository_prefix, 'app')}:latest); give it a "
                "repository_prefix of its own")


def _same_registry(one: RouteConfig, other: RouteConfig, region: str) -> bool:
    """Whether two routes may name repositories of one registry (as Router.mirrored judges:
    a registry id left to default may be any)."""
    def where(route: RouteConfig) -> str:
        return ECR_PUBLIC_REGION if route.upstream_kind == "ecr-public" \
            else route.region or region

    return (one.upstream_kind == other.upstream_kind and where(one) == where(other)
            and (one.registry_id is None or other.registry_id is None
                 or one.registry_id == other.registry_id))
