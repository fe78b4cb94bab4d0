"""The shared shape's Redis (Helm chart and kustomize overlay) takes its password from the
Secret as a file. The pod runs here as the kubelet would run it, each volume a folder: its
init container's own script on a password with blanks, quotes and ``#``, then redis-server
with the Redis container's own arguments. The password is in neither the arguments nor the
environment of Redis, nor in the file it reads; the gateway's own connection, reading the
same Secret file, is let in, and a client without the password is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions
import yaml
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.config import load_config
from gateway.state import redis_connection
from tests.integration.deploy.test_helm import CHART, _template
from tests.integration.deploy.test_manifests import KUBE, _kubectl
from tests.support.clients import run
from tests.support.redis import RedisServer

# Blanks around it, as a Secret made from a file may have: the gateway drops them.
PASSWORD = ' p4ss w0rd "double" \'single\' #not-a-comment \\x41 $(id) ${HOME} %s ~* \t'


def _shared(source: str) -> list[dict[str, Any]]:
    if source == "helm":
        result = _template("-f", str(CHART / "presets" / "shared.yaml"))
    else:
        result = run([_kubectl(), "kustomize", str(KUBE / "overlays" / "shared")], timeout=120)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _here(container: dict[str, Any], folders: dict[str, Path]) -> list[str]:
    """The container's command line with each volume's mount path turned into its folder."""
    mounts = {m["mountPath"]: folders[m["name"]] for m in container.get("volumeMounts", [])}
    argv = []
    for arg in [*container.get("command", []), *container.get("args", [])]:
        for path, folder in mounts.items():
            arg = arg.replace(f"{path}/", f"{folder}/")
        argv.append(arg)
    return argv


@pytest.mark.parametrize("source", ["helm", "kustomize"])
async def test_redis_reads_the_password_from_a_file(source: str, tmp_path: Path) -> None:
    docs = _shared(source)
    deployments = {d["metadata"]["name"]: d["spec"]["template"]["spec"]
                   for d in docs if d["kind"] == "Deployment"}
    (gateway,) = [name for name in deployments if not name.endswith("-redis")]
    pod = deployments[f"{gateway}-redis"]
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        # Nothing of the password reaches a container's environment.
        assert not container.get("env") and not container.get("envFrom"), container
    folders = {}
    for volume in pod["volumes"]:
        folders[volume["name"]] = folder = tmp_path / "volumes" / volume["name"]
        folder.mkdir(parents=True)
        for item in volume.get("secret", {}).get("items", []):
            (folder / item["path"]).write_text(PASSWORD + "\n")
    for init in pod["initContainers"]:
        done = subprocess.run(_here(init, folders), env={"PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    written = [path for volume in pod["volumes"] if "emptyDir" in volume
               for path in folders[volume["name"]].iterdir()]
    assert written
    for path in written:
        assert path.stat().st_mode & 0o077 == 0, path  # umask 077
        assert PASSWORD.strip() not in path.read_text()

    (container,) = pod["containers"]
    argv = _here(container, folders)
    assert argv[0] == "redis-server"
    with RedisServer(tmp_path / "redis", config=argv[1:]) as server:
        assert server.process is not None
        proc = Path(f"/proc/{server.process.pid}")
        for leak in ("cmdline", "environ"):
            seen = (proc / leak).read_bytes()
            assert PASSWORD.strip().encode() not in seen and b"p4ss" not in seen, leak

        # The gateway's own connection: its configuration, the Secret file as mounted.
        config_map = next(d for d in docs if d["kind"] == "ConfigMap"
                          and "config.yaml" in d.get("data", {}))
        (tmp_path / "config.yaml").write_text(config_map["data"]["config.yaml"])
        secret = next(folders[v["name"]] for v in pod["volumes"] if "secret" in v)
        config = load_config(str(tmp_path / "config.yaml"), environ={
            "ECR_GATEWAY_STATE__REDIS_URL": server.url,
            "ECR_GATEWAY_STATE__REDIS_PASSWORD_FILE": str(secret / "password")})
        client = redis_connection(config).client()
        try:
            assert await client.ping() is True
            await client.set("deploy:probe", b"1")
            await client.publish("deploy:events", b"1")  # the replicas' notices: channels too
        finally:
            await client.aclose()
        for password in (None, PASSWORD, "p4ss"):
            stranger = redis.asyncio.Redis(host="127.0.0.1", port=server.port,
                                           password=password, retry=Retry(NoBackoff(), 0))
            try:
                with pytest.raises(redis.exceptions.AuthenticationError):
                    await stranger.get("deploy:probe")
            finally:
                await stranger.aclose()
