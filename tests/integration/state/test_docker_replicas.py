"""A real docker push and pull through a round-robin load balancer in front of two gateway
replicas sharing Redis: docker's PATCH of a layer and its PUT land on different replicas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.state.conftest import redis_state, replica
from tests.support.balancer import RoundRobin
from tests.support.clients import Dockerd
from tests.support.emulator import EmulatorProcess
from tests.support.images import docker_archive, read_docker_save
from tests.support.redis import RedisServer

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def test_docker_push_and_pull_across_two_replicas(
        upstream: EmulatorProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    state = redis_state(redis_server)
    with replica(tmp_path / "a", upstream, state) as a, \
            replica(tmp_path / "b", upstream, state) as b, \
            RoundRobin([a.url, b.url]) as balancer:
        daemon = Dockerd(insecure_registries=[balancer.host]).start()
        try:
            docker = daemon.client(tmp_path / "docker-config")
            ref = f"{balancer.host}/replicas/docker-{tmp_path.name[-8:].lower()}:v1"
            archive = docker_archive(tmp_path / "image.tar", [12 * MiB, 2048], ref)
            docker("load", "-i", str(archive.path))
            docker("push", ref)
            docker("rmi", ref)
            docker("pull", ref)
            docker("save", "-o", str(tmp_path / "back.tar"), ref)
        finally:
            daemon.stop()
        _, layer_digests, config_digest = read_docker_save(tmp_path / "back.tar",
                                                           tmp_path / "back")
        # The pulled image is the pushed one, layer for layer.
        assert layer_digests == archive.diff_ids and config_digest == archive.image_id
        # Which replica served each upload request: by upload id, PATCH vs PUT.
        by_upload: dict[str, set[tuple[str, str]]] = {}
        for name, gateway in (("a", a), ("b", b)):
            for entry in gateway.access_log():
                if entry["route"] == "end-5" and entry["method"] in ("PATCH", "PUT"):
                    by_upload.setdefault(entry["path"], set()).add((entry["method"], name))
        crossed = [path for path, seen in by_upload.items()
                   if {replica for _, replica in seen} == {"a", "b"}]
        assert crossed, json.dumps({k: sorted(v) for k, v in by_upload.items()})
        assert {index for _, _, index in balancer.served} == {0, 1}
