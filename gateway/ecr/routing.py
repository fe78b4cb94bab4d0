"""Which ECR repository (registry, region, name) a client's repository name maps to."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import RouteConfig


@dataclass(frozen=True)
class Target:
    route: RouteConfig
    repository: str  # the ECR repository name
    region: str

    @property
    def registry_id(self) -> str | None:
        return self.route.registry_id

    def ids(self) -> dict[str, str]:
        """The registryId/repositoryName parameters every repository-scoped action takes."""
        params = {"repositoryName": self.repository}
        if self.route.registry_id:
            params["registryId"] = self.route.registry_id
        return params


class Router:
    def __init__(self, routes: list[RouteConfig], default_region: str) -> None:
        # Longest prefix first so "team-a/ci" beats "team-a" beats "".
        self._routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self._region = default_region

    @property
    def routes(self) -> list[RouteConfig]:
        return list(self._routes)

    def region_of(self, route: RouteConfig) -> str:
        return route.region or self._region

    def resolve(self, name: str) -> Target | None:
        for route in self._routes:
            rest = _strip(name, route.prefix)
            if rest is not None:
                return Target(route, _join(route.repository_prefix, rest), self.region_of(route))
        return None

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
