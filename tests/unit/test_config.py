"""Configuration: defaults, file, environment overrides, and refusals naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, RouteConfig, load_config
from gateway.ecr.routing import Router


def test_defaults_give_the_embedded_setup() -> None:
    config = load_config(None, environ={})
    assert config.listen == "127.0.0.1:5000"
    assert config.upstream.mode == "embedded"
    assert config.blobs.mode == "redirect"
    assert [r.prefix for r in config.effective_routes()] == [""]


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("blobs:\n  mode: proxy\nupstream:\n  region: eu-west-1\nlisten: 0.0.0.0:1\n")
    config = load_config(str(path), environ={"ECR_GATEWAY_UPSTREAM__REGION": "ap-south-1"},
                         overrides={"listen": "127.0.0.1:7000"})
    assert config.blobs.mode == "proxy"
    assert config.upstream.region == "ap-south-1"
    assert config.listen_port == 7000


@pytest.mark.parametrize("text,key", [
    ("blobs:\n  mode: sideways\n", "blobs.mode"),
    ("nonsense: 1\n", "nonsense"),
    ("upstream:\n  retry_budget_seconds: -1\n", "upstream.retry_budget_seconds"),
    ("listen: nowhere\n", "listen"),
    ("routes:\n  - prefix: a/\n", "routes[0]"),
    ("routes:\n  - prefix: a\n    repository:\n      image_tag_mutability: SOMETIMES\n",
     "routes[0].repository.image_tag_mutability"),
    ("- just a list\n", "(top level)"),
    # the embedded emulator would replace the endpoint without a word
    ("upstream:\n  endpoint_url: http://127.0.0.1:4566\n", "upstream.endpoint_url"),
    ("upstream:\n  public_endpoint_url: http://127.0.0.1:4566\n",
     "upstream.public_endpoint_url"),
])
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert caught.value.key == key


def test_example_config_is_valid_and_complete() -> None:
    example = Path(__file__).parents[2] / "config.example.yaml"
    config = load_config(str(example), environ={})
    assert config.listen == "127.0.0.1:5000"


def test_routing_longest_prefix_and_reverse_mapping() -> None:
    routes = [RouteConfig(prefix="", repository_prefix=""),
              RouteConfig(prefix="team-a", repository_prefix="teams/a", registry_id="111"),
              RouteConfig(prefix="team-a/ci", repository_prefix="ci", region="eu-west-1")]
    router = Router(routes, "us-east-1")
    target = router.resolve("team-a/app")
    assert target and target.repository == "teams/a/app" and target.registry_id == "111"
    target = router.resolve("team-a/ci/build")
    assert target and target.repository == "ci/build" and target.region == "eu-west-1"
    target = router.resolve("team-ab/x")
    assert target and target.repository == "team-ab/x" and target.route.prefix == ""
    assert router.client_name(routes[1], "teams/a/app") == "team-a/app"
    assert router.client_name(routes[1], "other/app") is None


def test_a_refusal_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("listen: 127.0.0.1:5000\nroutes:\n  - prefix: a\n    colour: blue\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert caught.value.key == "routes[0].colour" and caught.value.reason == "unknown key"
    assert caught.value.where == f"{path}:4:5"
    assert caught.value.located() == f"{path}:4:5: routes[0].colour: unknown key"


def test_a_refusal_names_the_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cache:\n  tag_ttl_seconds: 1\n")
    environ = {"ECR_GATEWAY_CACHE__TAG_TTL_SECONDS": "5s"}
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ=environ)
    assert caught.value.where == "ECR_GATEWAY_CACHE__TAG_TTL_SECONDS (environment variable)"
    assert caught.value.reason == "must be a number, got '5s'"
    # a whole section from one variable: a mistake inside it is still that variable's
    environ = {"ECR_GATEWAY_MIRRORS": "{docker.io: {colour: blue}}"}
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ=environ)
    assert caught.value.key == "mirrors.docker.io.colour"
    assert caught.value.where == "ECR_GATEWAY_MIRRORS (environment variable)"


def test_environment_values_are_yaml_and_empty_is_null() -> None:
    config = load_config(None, environ={
        "ECR_GATEWAY_TRUSTED_PROXIES": "[10.0.0.0/8, '::1']",
        "ECR_GATEWAY_UPSTREAM__MAX_CONNECTIONS": "8",
        "ECR_GATEWAY_ROUTES": "[{prefix: a, registry_id: 123456789012}]",
        "ECR_GATEWAY_AUTH__TOKEN__REALM": "",
        "ECR_GATEWAY_BLOBS__CACHE__PATH": "/var/cache/blobs",
        "OTHER_LISTEN": "nowhere"})
    assert config.trusted_proxies == ["10.0.0.0/8", "::1"]
    assert config.upstream.max_connections == 8
    assert config.routes[0].registry_id == "123456789012"  # an account id stays a string
    assert config.auth.token.realm is None
    assert config.blobs.cache.path == "/var/cache/blobs"


@pytest.mark.parametrize(("overrides", "key", "reason"), [
    # a count is a whole number: 1.5 is refused, not cut to 1
    ({"limits": {"max_headers": 1.5}}, "limits.max_headers", "must be a whole number, got 1.5"),
    ({"cache": {"tag_ttl_seconds": "5"}}, "cache.tag_ttl_seconds", "must be a number, got '5'"),
    ({"cache": {"tag_ttl_seconds": True}}, "cache.tag_ttl_seconds", "must be a number"),
    ({"routes": [{"create_on_push": "yes"}]}, "routes[0].create_on_push",
     "must be true or false"),
    ({"routes": [{"create_on_push": 1}]}, "routes[0].create_on_push", "must be true or false"),
    ({"mirrors": {"docker.io": {"upstream": {"url": 5}}}}, "mirrors.docker.io.upstream.url",
     "must be an http(s):// registry URL"),
    ({"mirrors": {"docker.io": {"upstream": {"url": "ci:s3cret@registry.example"}}}},
     "mirrors.docker.io.upstream.url", "must be an http(s):// registry URL with a host"),
    ({"mirrors": {"docker.io": {"upstream": {"url": "https://r.example", "platforms": "x"}}}},
     "mirrors.docker.io.upstream.platforms", "must be one of all, requested, got 'x'"),
    ({"routes": "a"}, "routes", "must be a list"),
    ({"upstream": {"http_pool_timeout_seconds": 0}}, "upstream.http_pool_timeout_seconds",
     "must be more than 0"),
])
def test_types_are_checked_as_written(overrides: dict[str, object], key: str,
                                      reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={}, overrides=overrides)
    assert caught.value.key == key and reason in caught.value.reason
    assert "s3cret" not in str(caught.value)  # a URL is never echoed: it may hold a password


def test_policy_documents_keep_their_form() -> None:
    policy = {"Version": "2012-10-17", "Statement": []}
    config = load_config(None, environ={}, overrides={"routes": [
        {"prefix": "a", "repository": {"repository_policy": policy}},
        {"prefix": "b", "repository": {"repository_policy": '{"Version": "2012-10-17"}'}}]})
    assert config.routes[0].repository.repository_policy == policy
    assert config.routes[1].repository.policy_text() == '{"Version": "2012-10-17"}'


def test_empty_sections_take_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("auth:\nmirrors:\n  docker.io:\n")
    config = load_config(str(path), environ={})
    assert config.auth.mode == "none" and config.mirrors["docker.io"].anonymous_pull is False


def test_attributes_stay_assignable() -> None:
    config = load_config(None, environ={})
    config.upstream.access_key_id = "AKIDEXAMPLE"  # what serve does for the embedded emulator
    config.data_dir = "/abs"
    assert config.upstream.access_key_id == "AKIDEXAMPLE" and str(config.data_path) == "/abs"


def test_an_environment_value_that_is_not_yaml_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"ECR_GATEWAY_AUTH__GROUPS": "{team: [alice"})
    assert caught.value.where == "ECR_GATEWAY_AUTH__GROUPS (environment variable)"
    assert caught.value.key == "auth.groups" and "is not valid YAML" in caught.value.reason


def test_a_file_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("listen: [127.0.0.1:5000\n")
    with pytest.raises(ConfigError, match="is not valid YAML") as caught:
        load_config(str(path), environ={})
    assert caught.value.key == "--config"


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"upstream": {"regoin": "x"}}, "unknown key (did you mean 'region'?)"),
    ({"routes": [{"prefx": "a"}]}, "unknown key (did you mean 'prefix'?)"),
    ({"auth": {"rules": [{"action": ["pull"]}]}}, "unknown key (did you mean 'actions'?)"),
    ({"mirrors": {"docker.io": {"upstream": {"url": "https://r.example", "tag_ttl": 1}}}},
     "unknown key (did you mean 'tag_ttl_seconds'?)"),
    ({"colour": "blue"}, "unknown key"),
])
def test_a_typo_is_answered_with_the_key_meant(overrides: dict[str, object],
                                               reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={}, overrides=overrides)
    assert caught.value.reason == reason


def test_a_misplaced_secret_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={}, overrides={
            "upstream": {"secret_access_key": {"key": "wJalrXUtnFEMIEXAMPLE"}}})
    assert caught.value.reason == "must be a string, got a mapping"
    assert "wJalrXUtnFEMIEXAMPLE" not in caught.value.located()


_PULL_THROUGH = {"url": "https://registry.example.com"}


@pytest.mark.parametrize(("settings", "key", "named"), [
    # no prefix: the mirror would fill every route's repositories (evil.io/team/app → team/app)
    ({"mirrors": {"evil.io": {"upstream": _PULL_THROUGH}}}, "evil.io",
     "needs its own repository_prefix"),
    # another mirror's repositories: the same, or inside the mirror's
    ({"mirrors": {"evil.io": {"repository_prefix": "hub", "upstream": _PULL_THROUGH},
                  "docker.io": {"repository_prefix": "hub"}}}, "evil.io", "mirrors.docker.io"),
    ({"mirrors": {"evil.io": {"repository_prefix": "hub", "upstream": _PULL_THROUGH},
                  "docker.io": {"repository_prefix": "hub/x"}}}, "evil.io",
     "mirrors.docker.io"),
    # two upstreams filling nested repositories: the outer mirror is refused
    ({"mirrors": {"evil.io": {"repository_prefix": "hub/x", "upstream": _PULL_THROUGH},
                  "docker.io": {"repository_prefix": "hub", "upstream": _PULL_THROUGH}}},
     "docker.io", "mirrors.evil.io"),
    # a route whose repositories are the mirror's, or inside them
    ({"mirrors": {"evil.io": {"repository_prefix": "team", "upstream": _PULL_THROUGH}},
      "routes": [{"prefix": "a", "repository_prefix": "team"}]}, "evil.io", "routes[0]"),
    ({"mirrors": {"evil.io": {"repository_prefix": "team", "upstream": _PULL_THROUGH}},
      "routes": [{"prefix": "a"}, {"prefix": "", "repository_prefix": "team/app"}]},
     "evil.io", "routes[1]"),
    # a route pulling through another upstream into the same repositories
    ({"mirrors": {"evil.io": {"repository_prefix": "hub", "upstream": _PULL_THROUGH}},
      "routes": [{"prefix": "hub", "repository_prefix": "hub", "upstream": _PULL_THROUGH}]},
     "evil.io", "routes[0]"),
])
def test_a_pull_through_mirror_never_fills_repositories_it_shares(
        settings: dict[str, Any], key: str, named: str) -> None:
    """A mirror with an upstream writes its ECR repositories with the gateway's identity on
    any client's pull: they must be its alone, or a pull with ?ns= replaces others' tags."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={}, overrides=settings)
    assert caught.value.key == f"mirrors.{key}.repository_prefix"
    assert named in caught.value.reason
    assert "alone" in caught.value.reason or "every route" in caught.value.reason


@pytest.mark.parametrize(("settings", "index", "named"), [
    # no repository_prefix: hub/team/app fills team/app, the added catch-all's repository
    ({"routes": [{"prefix": "hub", "upstream": _PULL_THROUGH}]}, 0, "the catch-all"),
    ({"routes": [{"prefix": "", "repository_prefix": "team"},
                 {"prefix": "hub", "repository_prefix": "team", "upstream": _PULL_THROUGH}]},
     1, "routes[0]"),
    # another route's repositories inside the route's
    ({"routes": [{"prefix": "hub", "repository_prefix": "cache", "upstream": _PULL_THROUGH},
                 {"prefix": "a", "repository_prefix": "cache/team"}]}, 0, "routes[1]"),
    ({"routes": [{"prefix": "", "upstream": _PULL_THROUGH},
                 {"prefix": "a", "repository_prefix": "team"}]}, 0, "routes[1]"),
    # a mirror's repositories, read-only or filled from another upstream
    ({"mirrors": {"docker.io": {"repository_prefix": "docker-hub", "upstream": _PULL_THROUGH}},
      "routes": [{"prefix": "", "upstream": _PULL_THROUGH}]}, 0, "mirrors.docker.io"),
    ({"mirrors": {"quay.io": {"repository_prefix": "cache/quay"}},
      "routes": [{"prefix": "hub", "repository_prefix": "cache", "upstream": _PULL_THROUGH},
                 {"prefix": "", "repository_prefix": "team"}]}, 0, "mirrors.quay.io"),
    # two routes with upstreams filling nested repositories: the outer one is refused
    ({"routes": [{"prefix": "hub", "repository_prefix": "cache", "upstream": _PULL_THROUGH},
                 {"prefix": "gh", "repository_prefix": "cache/gh", "upstream": _PULL_THROUGH},
                 {"prefix": ""}]}, 0, "routes[1]"),
])
def test_a_pull_through_route_never_fills_repositories_it_shares(
        settings: dict[str, Any], index: int, named: str) -> None:
    """A route with an upstream writes the ECR repositories its names map to with the
    gateway's identity on any pull: where another route or a mirror maps its names onto
    them, a pull of hub/team/app:prod would replace what team/app:prod is for everyone."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={}, overrides=settings)
    assert caught.value.key == f"routes[{index}].repository_prefix"
    assert named in caught.value.reason
    assert "alone" in caught.value.reason


@pytest.mark.parametrize("settings", [
    {"routes": [{"prefix": "hub", "repository_prefix": "docker-hub", "upstream": _PULL_THROUGH}]},
    # the catch-all holds the route's repositories: it reaches them only by names spelled
    # with the repository_prefix, and a longer route takes the names that would reach its own
    {"routes": [{"prefix": "hub", "repository_prefix": "docker-hub", "upstream": _PULL_THROUGH},
                {"prefix": "hub/local", "repository_prefix": "docker-hub/local"},
                {"prefix": ""}], "mirrors": {"quay.io": {}}},
    {"routes": [{"prefix": "", "upstream": _PULL_THROUGH},
                {"prefix": "team", "repository_prefix": "team"}]},
    # another region's repositories are others
    {"routes": [{"prefix": "hub", "region": "eu-west-1", "upstream": _PULL_THROUGH}]},
])
def test_a_pull_through_route_with_a_namespace_of_its_own_is_accepted(
        settings: dict[str, object]) -> None:
    load_config(None, environ={}, overrides=settings)


@pytest.mark.parametrize("settings", [
    # the catch-all reaches docker-hub/** only by names spelled with the prefix (a push there
    # needs an ecr_repository rule)
    {"mirrors": {"docker.io": {"repository_prefix": "docker-hub", "upstream": _PULL_THROUGH}}},
    {"mirrors": {"docker.io": {"repository_prefix": "docker-hub", "upstream": _PULL_THROUGH},
                 "ghcr.io": {"repository_prefix": "ghcr", "upstream": _PULL_THROUGH},
                 "123456789012.dkr.ecr.us-east-1.amazonaws.com": {}, "quay.io": {}},
     "routes": [{"prefix": ""}, {"prefix": "team", "repository_prefix": "platform/team"}]},
    # a mirror without an upstream only reads: its prefix may hold another's
    {"mirrors": {"evil.io": {"repository_prefix": "hub/x", "upstream": _PULL_THROUGH},
                 "docker.io": {"repository_prefix": "hub"}}},
    {"mirrors": {"docker.io": {"repository_prefix": "docker-hub"}, "quay.io": {}},
     "routes": [{"prefix": "hub", "repository_prefix": "docker-hub"}]},
    # another region's repositories are others
    {"mirrors": {"docker.io": {"repository_prefix": "hub", "region": "eu-west-1",
                               "upstream": _PULL_THROUGH}},
     "routes": [{"prefix": "hub", "repository_prefix": "hub"}]},
])
def test_a_pull_through_mirror_with_a_namespace_of_its_own_is_accepted(
        settings: dict[str, object]) -> None:
    load_config(None, environ={}, overrides=settings)
