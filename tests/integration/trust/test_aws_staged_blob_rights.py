"""``auth.mode: aws``: a blob the gateway holds staged (pushed, not referenced by an image
yet, or kept after) is served to an identity only where ECR would serve it that identity's
download: its own keys must be allowed ``ecr:GetDownloadUrlForLayer`` on the repository.
A key allowed only to check layers (``ecr:BatchCheckLayerAvailability``, as a job asking
whether an image's layers are there) got the staged bytes of another identity's push,
which ECR never gives it, and copied them into a repository of its own with a mount."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import aiohttp

from tests.integration.auth.helpers import basic
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of


async def test_layer_checks_alone_read_no_staged_blob(upstream: EmulatorProcess,
                                                      tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8].upper()
    writer = (f"AKIDSTAGEW{run}", f"secret-{uuid.uuid4().hex}")
    checker = (f"AKIDSTAGEC{run}", f"secret-{uuid.uuid4().hex}")
    reader = (f"AKIDSTAGER{run}", f"secret-{uuid.uuid4().hex}")
    for key in (writer, checker, reader):
        upstream.add_key(*key)
    name = f"staged/{uuid.uuid4().hex[:8]}"
    own = f"checker/{uuid.uuid4().hex[:8]}"
    repo_arn = f"arn:aws:ecr:*:*:repository/{name}"
    upstream.add_policies({
        writer[0]: [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}],
        checker[0]: [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Effect": "Allow", "Action": "ecr:BatchCheckLayerAvailability",
             "Resource": repo_arn},
            {"Effect": "Allow", "Action": "ecr:*",
             "Resource": f"arn:aws:ecr:*:*:repository/{own}"}],
        reader[0]: [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Effect": "Allow", "Action": ["ecr:BatchCheckLayerAvailability",
                                           "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
             "Resource": repo_arn}]})
    config = {"auth": {"mode": "aws"}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession(headers=basic(*writer)) as w, \
                aiohttp.ClientSession(headers=basic(*checker)) as c, \
                aiohttp.ClientSession(headers=basic(*reader)) as r:
            secret_layer = b"staged secret " + os.urandom(3000)
            digest = digest_of(secret_layer)
            await OciClient(w, gw.url).push_blob(name, secret_layer)
            url = f"{gw.url}/v2/{name}/blobs/{digest}"
            async with r.get(url, allow_redirects=False) as answer:  # allowed to download
                assert answer.status == 200, await answer.text()
                assert await answer.read() == secret_layer
            async with c.head(url) as answer:  # checking layers is what it may do
                assert answer.status == 200
            async with c.get(url, allow_redirects=False) as answer:
                body = await answer.read()
                assert answer.status == 403, (answer.status, body[:200])
                assert secret_layer not in body
            # Nor through a mount into a repository of its own.
            async with c.post(f"{gw.url}/v2/{own}/blobs/uploads/?mount={digest}&from={name}",
                              allow_redirects=False) as answer:
                await answer.read()
                assert answer.status == 202, answer.status  # an ordinary upload instead
            async with c.head(f"{gw.url}/v2/{own}/blobs/{digest}") as answer:
                assert answer.status == 404, answer.status


async def test_reading_manifests_alone_reads_no_cached_blob(upstream: EmulatorProcess,
                                                            tmp_path: Path) -> None:
    """Proxy mode's blob cache: an identity that may read the repository's manifests
    (``ecr:BatchGetImage``) but not download its layers got the cached copy of a layer once
    it had read a manifest naming it (the gateway took "an image names it" for "ECR serves
    it to this caller")."""
    run = uuid.uuid4().hex[:8].upper()
    writer = (f"AKIDCACHEW{run}", f"secret-{uuid.uuid4().hex}")
    manifests = (f"AKIDCACHEM{run}", f"secret-{uuid.uuid4().hex}")
    for key in (writer, manifests):
        upstream.add_key(*key)
    name = f"cached/{uuid.uuid4().hex[:8]}"
    upstream.add_policies({
        writer[0]: [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}],
        manifests[0]: [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Effect": "Allow", "Action": ["ecr:BatchGetImage",
                                           "ecr:BatchCheckLayerAvailability"],
             "Resource": f"arn:aws:ecr:*:*:repository/{name}"}]})
    config = {"auth": {"mode": "aws"},
              "blobs": {"mode": "proxy", "cache": {"path": str(tmp_path / "cache")}}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession(headers=basic(*writer)) as w, \
                aiohttp.ClientSession(headers=basic(*manifests)) as m:
            layer = b"cached secret " + os.urandom(3000)
            digest = digest_of(layer)
            oci = OciClient(w, gw.url)
            await oci.push_image(name, "v1", [layer])
            assert await oci.get_blob(name, digest) == layer  # now in the blob cache
            async with m.get(f"{gw.url}/v2/{name}/manifests/v1", headers={
                    "Accept": "application/vnd.oci.image.manifest.v1+json"}) as answer:
                assert answer.status == 200, await answer.text()
                await answer.read()
            async with m.get(f"{gw.url}/v2/{name}/blobs/{digest}",
                             allow_redirects=False) as answer:
                body = await answer.read()
                assert answer.status == 403, (answer.status, body[:200])
                assert layer not in body
