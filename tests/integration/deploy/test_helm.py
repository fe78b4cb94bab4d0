"""The Helm chart (deploy/helm/ecr-gateway): each preset lints, renders, validates strictly
against the Kubernetes versions the manifests target, ships a configuration the gateway
accepts, and keeps each shape's promises: the node mirror reachable from its own node only,
the shared endpoint's Redis behind a password from a Secret."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.auth.exposure import check_exposure
from gateway.config import load_config
from gateway.tools import iam_policy
from tests.conftest import require_tool
from tests.integration.auth.helpers import TestCA
from tests.integration.deploy.test_manifests import (
    KUBERNETES_VERSIONS,
    PROMETHEUS,
    assert_metrics_policy,
    assert_redis_password_in_a_file,
    validate_strictly,
)
from tests.support.clients import run
from tests.support.gateway import GatewayProcess

CHART = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "ecr-gateway"
PRESETS = ("sidecar", "node-mirror", "shared")


def _helm() -> str:
    """helm from the test virtualenv (scripts/install-test-deps.sh puts it there) or PATH."""
    found = shutil.which("helm", path=str(Path(sys.executable).parent))
    return found or require_tool("helm")


def _template(*args: str, check: bool = True) -> Any:
    return run([_helm(), "template", "gw", str(CHART), "--kube-version",
                KUBERNETES_VERSIONS[0], *args], timeout=120, check=check)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    out = {}
    for preset in PRESETS:
        result = _template("-f", str(CHART / "presets" / f"{preset}.yaml"))
        out[preset] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment",
                                                                         "DaemonSet")]


def _gateway_containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gateway container of every pod, and of the sidecar snippet."""
    found = [c for pod in _pod_specs(docs) for c in pod["containers"]
             if c["name"] == "ecr-gateway"]
    for config_map in _kind(docs, "ConfigMap"):
        if "initContainers.yaml" in config_map["data"]:
            found += yaml.safe_load(config_map["data"]["initContainers.yaml"])
    return found


def _environment(container: dict[str, Any], pod_ip: str = "10.0.0.5") -> dict[str, str]:
    """The container's environment as the kubelet gives it: the pod's address from its
    field, ``$(NAME)`` of a variable defined earlier expanded."""
    environ: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            assert entry["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}, entry
            value = pod_ip
        else:
            value = re.sub(r"\$\((\w+)\)", lambda m: environ.get(m[1], m[0]), entry["value"])
        environ[entry["name"]] = value
    return environ


def _config(docs: list[dict[str, Any]], tmp_path: Path) -> Any:
    (config_map,) = [d for d in _kind(docs, "ConfigMap") if "config.yaml" in d["data"]]
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    return path


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_lints(preset: str) -> None:
    result = run([_helm(), "lint", str(CHART), "--strict", "--kube-version",
                  KUBERNETES_VERSIONS[0], "-f", str(CHART / "presets" / f"{preset}.yaml")],
                 timeout=120)
    assert "0 chart(s) failed" in result.stdout


# The chart is checked against the two newest Kubernetes versions kubernetes-validate knows,
# and the oldest the manifests target.
CHART_VERSIONS = sorted({KUBERNETES_VERSIONS[0], "1.36.0", kubernetes_validate.latest_version()})


@pytest.mark.parametrize("version", CHART_VERSIONS)
def test_every_rendered_resource_validates_strictly(rendered: dict[str, list[dict[str, Any]]],
                                                    version: str) -> None:
    validate_strictly(rendered, version)


@pytest.mark.parametrize("preset", PRESETS)
def test_rendered_configuration_is_accepted(rendered: dict[str, list[dict[str, Any]]],
                                            preset: str, tmp_path: Path) -> None:
    environ = {}
    if preset == "shared":  # the Deployment names Redis and its password file
        (gateway,) = _gateway_containers(rendered[preset])
        environ = _environment(gateway)
    config = load_config(str(_config(rendered[preset], tmp_path)), environ=environ)
    check_exposure(config)  # what serve would refuse raises here


def test_values_schema_refuses_a_bad_value() -> None:
    result = _template("--set", "shape=sideways", check=False)
    assert result.returncode != 0
    assert "shape must be one of" in result.stderr
    result = _template("--set", "config.listen=nowhere", check=False)
    assert result.returncode != 0 and "listen" in result.stderr
    # config's schema is the gateway's own (docs/config.schema.json): typos, wrong types
    result = _template("--set", "config.upstream.regoin=eu-west-1", check=False)
    assert result.returncode != 0 and "regoin" in result.stderr
    result = _template("--set", "config.cache.tag_ttl_seconds=-1", check=False)
    assert result.returncode != 0 and "tag_ttl_seconds" in result.stderr


def test_what_the_gateway_would_refuse_does_not_render(tmp_path: Path) -> None:
    """auth "none" on an address other hosts reach: the chart refuses it as the gateway's
    exposure check would (the default values included), rather than installing pods that
    crash-loop until someone sets the override flag; the flag itself stays explicit."""
    for args in ((), ("-f", str(CHART / "presets" / "sidecar.yaml"),
                      "--set", "config.listen=0.0.0.0:5000"),
                 ("-f", str(CHART / "presets" / "node-mirror.yaml"),
                  "--set", "config.listen=0.0.0.0:5000", "--set", "config.auth.mode=none")):
        result = _template(*args, check=False)
        assert result.returncode != 0, args
        assert "auth.mode is none" in result.stderr, result.stderr
    for args in (("--set", "config.listen=127.0.0.1:5000"),
                 ("--set", "config.auth.allow_anonymous_on_public_address=true")):
        docs = [d for d in yaml.safe_load_all(_template(*args).stdout) if d]
        config = load_config(str(_config(docs, tmp_path)), environ={})
        check_exposure(config)


@pytest.mark.parametrize("preset", PRESETS)
def test_rendered_configuration_passes_the_published_schema(
        rendered: dict[str, list[dict[str, Any]]], preset: str, tmp_path: Path) -> None:
    schema = json.loads((CHART.parents[2] / "docs" / "config.schema.json").read_text())
    document = yaml.safe_load(_config(rendered[preset], tmp_path).read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(document)]
    assert errors == []


def test_node_mirror_is_reachable_from_its_node_only(
        rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    docs = rendered["node-mirror"]
    (daemonset,) = _kind(docs, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    (gateway,) = pod["containers"]
    assert all("hostPort" not in port for port in gateway["ports"])
    config = load_config(str(_config(docs, tmp_path)), environ={})
    assert config.listen_host == "127.0.0.1"
    (hosts,) = [d for d in _kind(docs, "ConfigMap") if "docker.io.toml" in d["data"]]
    assert '[host."http://127.0.0.1:5000"]' in hosts["data"]["docker.io.toml"]
    assert not _kind(docs, "Service")


def test_node_mirror_is_pull_only(rendered: dict[str, list[dict[str, Any]]],
                                  tmp_path: Path) -> None:
    """Whatever shares the node's network (its processes, every hostNetwork pod) reaches the
    mirror without credentials: it may pull through the mirrors and nothing else, and the
    IAM policy the mirror needs grants no push or delete (as in the kustomize overlay and
    docs/security.md; CreateRepository stays for the pull-through cache's own)."""
    docs = rendered["node-mirror"]
    (config_map,) = [d for d in _kind(docs, "ConfigMap") if "config.yaml" in d["data"]]
    config = load_config(str(_config(docs, tmp_path)), environ={})
    assert config.auth.mode == "htpasswd"
    (gateway,) = _gateway_containers(docs)
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    htpasswd = Path(config.auth.htpasswd_file)
    assert htpasswd.parent == Path(mounts["gateway-config"])
    assert config_map["data"][htpasswd.name] == ""  # no users
    assert not any(rule.anonymous for rule in config.auth.rules)
    assert not any(route.anonymous_pull for route in config.routes)
    assert all(route.create_on_push is False for route in config.routes)
    (hosts,) = [d for d in _kind(docs, "ConfigMap") if "docker.io.toml" in d["data"]]
    mirrored = {key.removesuffix(".toml") for key in hosts["data"]}
    assert mirrored <= {host for host, m in config.mirrors.items() if m.anonymous_pull}
    actions = {action for statement in iam_policy.policy(config)["Statement"]
               for action in statement["Action"]}
    assert not actions & {"ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
                          "ecr:CompleteLayerUpload", "ecr:BatchDeleteImage"}, sorted(actions)


def test_shared_redis_requires_the_secret_password(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["shared"]
    deployments = {d["metadata"]["name"]: d for d in _kind(docs, "Deployment")}
    assert_redis_password_in_a_file(deployments["gw-redis"]["spec"]["template"]["spec"],
                                    "ecr-gateway-redis", "password")
    gateway = deployments["gw"]["spec"]["template"]["spec"]["containers"][0]
    env = _environment(gateway)
    assert env["ECR_GATEWAY_STATE__REDIS_URL"] == "redis://gw-redis:6379/0"
    assert env["ECR_GATEWAY_STATE__REDIS_PASSWORD_FILE"] == "/etc/ecr-gateway-redis/password"
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    assert mounts["redis-password"] == "/etc/ecr-gateway-redis"
    volumes = {v["name"]: v for v in deployments["gw"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["gateway-auth"]["secret"]["secretName"] == "ecr-gateway-auth"
    assert volumes["redis-password"]["secret"] == {
        "secretName": "ecr-gateway-redis", "defaultMode": 0o400,
        "items": [{"key": "password", "path": "password"}]}


def test_shared_redis_takes_an_existing_secret(tmp_path: Path) -> None:
    """``redis.existingSecret`` and ``redis.passwordKey`` name the Secret both Redis and the
    gateway read the password from."""
    result = _template("-f", str(CHART / "presets" / "shared.yaml"),
                       "--set", "redis.existingSecret=team-redis",
                       "--set", "redis.passwordKey=redis-password")
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    deployments = {d["metadata"]["name"]: d for d in _kind(docs, "Deployment")}
    assert_redis_password_in_a_file(deployments["gw-redis"]["spec"]["template"]["spec"],
                                    "team-redis", "redis-password")
    volumes = {v["name"]: v for v in deployments["gw"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["redis-password"]["secret"]["secretName"] == "team-redis"
    assert volumes["redis-password"]["secret"]["items"] == [
        {"key": "redis-password", "path": "password"}]


@pytest.mark.parametrize("secret", ["team-redis", ""])
def test_a_redis_of_ones_own_takes_its_password_from_a_secret(secret: str,
                                                               tmp_path: Path) -> None:
    """A managed Redis (``redis.enabled: false``, ``config.state.redis_url`` naming it): the
    chart mounted no Secret for it (its refusal of a password in the URL pointed at
    ``redis.existingSecret``, mounted only for the chart's own Redis), so a Redis that asks
    for a password could not be used. ``redis.externalSecret`` is mounted as the chart's own
    Redis's password is; left empty, nothing is."""
    result = _template("-f", str(CHART / "presets" / "shared.yaml"),
                       "--set", "redis.enabled=false",
                       "--set", "config.state.redis_url=redis://cache.example.internal:6379/0",
                       "--set", f"redis.externalSecret={secret}",
                       "--set", "redis.passwordKey=auth-token")
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    deployments = {d["metadata"]["name"]: d for d in _kind(docs, "Deployment")}
    assert set(deployments) == {"gw"}  # no Redis of the chart's
    pod = deployments["gw"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (gateway,) = [c for c in pod["containers"] if c["name"] == "ecr-gateway"]
    env = {e["name"]: e.get("value") for e in gateway.get("env", [])}
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    if not secret:
        assert "redis-password" not in volumes and "redis-password" not in mounts
        assert "ECR_GATEWAY_STATE__REDIS_PASSWORD_FILE" not in env and \
            "ECR_GATEWAY_STATE__REDIS_URL" not in env
        return
    assert volumes["redis-password"]["secret"] == {
        "secretName": "team-redis", "defaultMode": 0o400,
        "items": [{"key": "auth-token", "path": "password"}]}
    assert env["ECR_GATEWAY_STATE__REDIS_PASSWORD_FILE"] == "/etc/ecr-gateway-redis/password"
    assert "ECR_GATEWAY_STATE__REDIS_URL" not in env  # config.state.redis_url's
    assert mounts["redis-password"] == "/etc/ecr-gateway-redis"
    config = yaml.safe_load(_config(docs, tmp_path).read_text())
    assert config["state"]["redis_url"] == "redis://cache.example.internal:6379/0"


@pytest.mark.parametrize("extra", [(), ("--set", "config.state.peer_url=http://gw.example:5000"),
                                   ("--set", "config.tls.cert_file=/etc/tls/tls.crt",
                                    "--set", "config.tls.key_file=/etc/tls/tls.key")])
def test_shared_replicas_reach_each_other(extra: tuple[str, ...]) -> None:
    """The shared shape's replicas listen on 0.0.0.0, where the gateway cannot tell how the
    others reach it: without ``state.peer_url`` no replica read a blob staged on another
    (the kustomize overlay set it, the chart did not). Each pod now names its own address;
    a peer_url set in the values, or TLS (whose certificate names no pod), is left alone."""
    docs = _with_metrics(*extra)
    (pod,) = [d["spec"]["template"]["spec"] for d in _kind(docs, "Deployment")
              if d["metadata"]["name"] == "gw"]
    (gateway,) = [c for c in pod["containers"] if c["name"] == "ecr-gateway"]
    env = {e["name"]: e for e in gateway.get("env", [])}
    if extra:
        assert "ECR_GATEWAY_STATE__PEER_URL" not in env
        return
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["ECR_GATEWAY_STATE__PEER_URL"]["value"] == "http://$(POD_IP):5000"
    names = list(env)  # a variable is expanded only from those defined before it
    assert names.index("POD_IP") < names.index("ECR_GATEWAY_STATE__PEER_URL")


def _with_metrics(*args: str) -> list[dict[str, Any]]:
    result = _template("-f", str(CHART / "presets" / "shared.yaml"), *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_shared_metrics_port_admits_the_scrapers_only() -> None:
    docs = _with_metrics("--set", "config.metrics_listen=0.0.0.0:9191")
    policies = {d["metadata"]["name"]: d for d in _kind(docs, "NetworkPolicy")}
    assert set(policies) == {"gw", "gw-redis"}
    (deployment,) = [d for d in _kind(docs, "Deployment") if d["metadata"]["name"] == "gw"]
    assert_metrics_policy(policies["gw"], deployment["spec"]["template"], 9191, PROMETHEUS)
    validate_strictly({"shared": docs}, KUBERNETES_VERSIONS[0])
    # Other scrapers; the policy left to the cluster's own; metrics on loopback: no port, no
    # policy needed.
    others = [{"namespaceSelector": {"matchLabels": {"team": "observability"}}},
              {"ipBlock": {"cidr": "10.1.0.0/16"}}]
    docs = _with_metrics("--set", "config.metrics_listen=0.0.0.0:9191",
                         "--set-json", f"metrics.scrapers={json.dumps(others)}")
    (policy,) = [d for d in _kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "gw"]
    assert policy["spec"]["ingress"][1]["from"] == others
    for args in (("--set", "config.metrics_listen=0.0.0.0:9191",
                  "--set", "metrics.networkPolicy=false"),
                 ("--set", "config.metrics_listen=127.0.0.1:9191"), ()):
        docs = _with_metrics(*args)
        assert [d["metadata"]["name"] for d in _kind(docs, "NetworkPolicy")] == ["gw-redis"]
    (gateway,) = _gateway_containers(docs)
    assert [p["name"] for p in gateway["ports"]] == ["registry"]


def test_scrapers_cannot_be_left_empty() -> None:
    """A rule without peers would admit every source."""
    for value in ("[]", "[{}]", "null"):
        result = _template("-f", str(CHART / "presets" / "shared.yaml"),
                           "--set", "config.metrics_listen=0.0.0.0:9090",
                           "--set-json", f"metrics.scrapers={value}", check=False)
        assert result.returncode != 0 and "scrapers" in result.stderr, (value, result.stdout)


def test_sidecar_renders_a_native_sidecar_snippet(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["sidecar"]
    assert not _kind(docs, "Deployment") and not _kind(docs, "DaemonSet")
    (snippet,) = [d for d in _kind(docs, "ConfigMap") if "initContainers.yaml" in d["data"]]
    (container,) = yaml.safe_load(snippet["data"]["initContainers.yaml"])
    assert container["restartPolicy"] == "Always"
    assert "exec" in container["readinessProbe"]  # loopback: out of the kubelet's reach


@pytest.mark.parametrize("preset", PRESETS)
def test_no_secret_in_the_environment(rendered: dict[str, list[dict[str, Any]]],
                                      preset: str) -> None:
    """Secrets reach the gateway as mounted files: an environment variable shows in the pod's
    spec, in /proc/<pid>/environ and in every process the gateway starts."""
    with_redis = _template("-f", str(CHART / "presets" / f"{preset}.yaml"),
                           "--set", "redis.enabled=true")
    docs = rendered[preset] + [d for d in yaml.safe_load_all(with_redis.stdout) if d]
    containers = _gateway_containers(docs)
    assert containers
    for container in containers:
        for variable in container.get("env", []):
            assert "secretKeyRef" not in variable.get("valueFrom", {}), variable
            assert "PASSWORD)" not in variable.get("value", ""), variable


@pytest.mark.parametrize("values", [
    ("--set", "config.upstream.access_key_id=AKIAEXAMPLE",
     "--set", "config.upstream.secret_access_key=not-in-a-configmap"),
    ("--set", "config.upstream.session_token=not-in-a-configmap"),
    ("--set", "config.state.backend=redis",
     "--set", "config.state.redis_url=redis://:not-in-a-configmap@redis:6379/0"),
    # the Redis client reads a password from the query too (for unix sockets, the usual way)
    ("--set", "config.state.backend=redis",
     "--set-string", "config.state.redis_url=redis://redis:6379/0?password=not-in-a-configmap"),
    ("--set", "config.state.backend=redis",
     "--set-string",
     "config.state.redis_url=unix:///run/redis.sock?db=0&Password=not-in-a-configmap"),
])
def test_no_secret_in_the_config_map(values: tuple[str, ...]) -> None:
    """``config`` is rendered into a ConfigMap: AWS keys or a Redis password given there are
    refused (IRSA / Pod Identity, and the Redis password's Secret, are the ways in)."""
    for preset in PRESETS:
        result = _template("-f", str(CHART / "presets" / f"{preset}.yaml"), *values,
                           check=False)
        assert result.returncode != 0, (preset, values)
        assert "not-in-a-configmap" not in result.stdout + result.stderr
        assert "ConfigMap" in result.stderr, result.stderr


def test_a_node_mirror_serves_metrics_on_loopback_only() -> None:
    """A node mirror's pods use the node's network, where no NetworkPolicy applies: a
    metrics listener on another address would serve /metrics, without a login, on every
    node's addresses. The shared shape keeps its pod-address listener (a NetworkPolicy)."""
    node_mirror = ("-f", str(CHART / "presets" / "node-mirror.yaml"))
    for address in ("0.0.0.0:9090", "10.0.0.5:9090", "[::]:9090"):
        result = _template(*node_mirror, "--set-string", f"config.metrics_listen={address}",
                           check=False)
        assert result.returncode != 0 and "metrics_listen" in result.stderr, address
    for address in ("127.0.0.1:9090", "[::1]:9090"):
        _template(*node_mirror, "--set-string", f"config.metrics_listen={address}")
    _template("-f", str(CHART / "presets" / "shared.yaml"),
              "--set-string", "config.metrics_listen=0.0.0.0:9090")


@pytest.mark.parametrize("preset", PRESETS)
def test_pods_are_locked_down(rendered: dict[str, list[dict[str, Any]]],
                              preset: str) -> None:
    """No Kubernetes API token in pods that never call the API, nor by default in others
    using the service account, and every container (the sidecar snippet's too, whose pod
    this chart does not write) under seccomp RuntimeDefault, non-root, without privilege
    escalation or capabilities, on a read-only root."""
    for pod in _pod_specs(rendered[preset]):
        assert pod.get("automountServiceAccountToken") is False, pod["containers"][0]["name"]
    # nor in the pods the chart does not write that use its service account (the sidecar's)
    (account,) = _kind(rendered[preset], "ServiceAccount")
    assert account.get("automountServiceAccountToken") is False, account
    for container in _gateway_containers(rendered[preset]):
        context = container["securityContext"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("preset", ["node-mirror", "shared"])
def test_mounted_secrets_are_readable_by_the_gateway(preset: str) -> None:
    """A Secret's files are mounted 0400: root owns them unless the pod's fsGroup gives them
    to the gateway's group. The node mirror's DaemonSet set none, so with
    ``auth.existingSecret`` the gateway (uid 10001) could not read its htpasswd file and never
    started."""
    result = _template("-f", str(CHART / "presets" / f"{preset}.yaml"),
                       "--set", "auth.existingSecret=team-auth")
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    checked = 0
    for pod in _pod_specs(docs):
        (gateway,) = [c for c in pod["containers"] if c["name"] == "ecr-gateway"] or [None]
        if gateway is None:
            continue
        mounted = {m["name"] for m in gateway.get("volumeMounts", [])}
        secrets = [v for v in pod.get("volumes", []) if "secret" in v and v["name"] in mounted]
        assert any(v["secret"]["secretName"] == "team-auth" for v in secrets), secrets
        context = gateway["securityContext"]
        for volume in secrets:
            mode = volume["secret"].get("defaultMode", 0o644)
            if mode & 0o004:
                continue  # readable by anyone
            # The kubelet gives an fsGroup's pod the files group-owned, group-readable.
            assert pod.get("securityContext", {}).get("fsGroup") == \
                context.get("runAsGroup", context["runAsUser"]), (volume, pod["securityContext"])
            checked += 1
    assert checked, "no Secret mounted into the gateway"


def test_shared_redis_admits_the_gateway_only(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["shared"]
    deployments = {d["metadata"]["name"]: d for d in _kind(docs, "Deployment")}
    (policy,) = _kind(docs, "NetworkPolicy")
    redis_labels = deployments["gw-redis"]["spec"]["template"]["metadata"]["labels"]
    gateway_labels = deployments["gw"]["spec"]["template"]["metadata"]["labels"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= redis_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    assert not source["podSelector"]["matchLabels"].items() <= redis_labels.items()


# The gateway's own HTTPS, its files from the Secret auth.existingSecret.
TLS = ("--set", "auth.existingSecret=gw-tls",
       "--set", "config.tls.cert_file=/etc/ecr-gateway-auth/tls.crt",
       "--set", "config.tls.key_file=/etc/ecr-gateway-auth/tls.key")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, GatewayProcess]]:
    """Real gateways (embedded emulator) for the rendered probes to check: one over plain
    HTTP, one serving HTTPS with a certificate from a CA no probe knows, as a deployment's
    certificate (for the registry's public name) is to a probe on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    TestCA.create(folder / "ca").issue(folder / "tls.crt", folder / "tls.key")
    tls = {"tls": {"cert_file": str(folder / "tls.crt"), "key_file": str(folder / "tls.key")}}
    gateways = {False: GatewayProcess(tmp_path_factory.mktemp("plain")),
                True: GatewayProcess(tmp_path_factory.mktemp("https"), tls)}
    try:
        for gateway in gateways.values():
            gateway.start(timeout=120)
        assert gateways[True].url.startswith("https://")
        yield gateways
    finally:
        for gateway in gateways.values():
            gateway.stop()


def _passes(probe: dict[str, Any], container_port: int, port: int) -> bool:
    """Run a rendered probe as the kubelet would against the gateway on ``port`` (the
    container's ``container_port``): an exec probe's command in the container (its python3
    this one), an httpGet one with its scheme, an HTTPS one without checking the
    certificate."""
    environ = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    if "exec" in probe:
        command = [sys.executable if arg == "python3" else
                   arg.replace(f"127.0.0.1:{container_port}/", f"127.0.0.1:{port}/")
                   for arg in probe["exec"]["command"]]
        return subprocess.run(command, env=environ, capture_output=True,
                              timeout=60).returncode == 0
    get = probe["httpGet"]
    assert get["port"] == "registry", get
    scheme = get.get("scheme", "HTTP")
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if scheme == "HTTPS":
        handlers.append(urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
    url = f"{scheme.lower()}://127.0.0.1:{port}{get['path']}"
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=30) as answer:
            return 200 <= answer.status < 400
    except (OSError, http.client.HTTPException):
        return False


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("preset", PRESETS)
def test_probes_reach_the_gateway_as_it_serves(probed: dict[bool, GatewayProcess],
                                               preset: str, tls: bool) -> None:
    """With config.tls the gateway answers HTTPS only on its port (plain HTTP gets no
    answer): probes sent in plain HTTP there failed, so pods serving the gateway's own TLS
    never became ready and their liveness probe restarted them. Each shape's probes speak
    what the gateway serves."""
    docs = [d for d in yaml.safe_load_all(_template(
        "-f", str(CHART / "presets" / f"{preset}.yaml"), *(TLS if tls else ())).stdout) if d]
    (gateway,) = _gateway_containers(docs)
    (registry,) = [p["containerPort"] for p in gateway["ports"] if p["name"] == "registry"]
    for name in PROBES:
        assert _passes(gateway[name], registry, probed[tls].port), (name, gateway[name])
