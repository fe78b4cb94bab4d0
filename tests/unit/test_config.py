"""Configuration: defaults, file, environment overrides, and refusals naming the key."""

from __future__ import annotations

from pathlib import Path

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
