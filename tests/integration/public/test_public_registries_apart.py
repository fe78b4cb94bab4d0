"""An ECR Public route and the ``public.ecr.aws`` mirror name repositories of different
registries by the same text: the route's ``tools/cli`` is the account's own repository
``tools/cli`` (pulled as ``<own alias>/tools/cli``), the mirror's ``tools/cli`` is repository
``cli`` of whoever holds the alias ``tools`` (aliases are first come, first served). What the
gateway keeps of one (tags, manifests, download URLs, layer sizes) never answers for the
other: a publisher's image never becomes what mirror nodes pull as
``public.ecr.aws/tools/cli``, and an image of another's registry, pulled once through the
mirror, never becomes what the route's clients pull as the account's own ``tools/cli``.

The emulator's ECR Public registry has one alias (``emulator``): the mirror reads only its
repositories (``emulator/<name>`` is its repository ``<name>``), and any other alias is a
registry it does not know (404).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import aiohttp

from tests.emulator.extra.helpers import ALIAS
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient, digest_of

NS = {"ns": "public.ecr.aws"}


def _config(emulator_url: str) -> dict[str, object]:
    return {"routes": [{"prefix": "pub", "upstream_kind": "ecr-public",
                        "registry_url": emulator_url},
                       {"prefix": ""}],
            "mirrors": {"public.ecr.aws": {"registry_url": emulator_url}},
            # Kept long enough for the test to see what a tag's answer is taken for (by
            # default 5 s, which a client pulling every few seconds keeps fresh).
            "cache": {"tag_ttl_seconds": 300, "manifest_revalidate_seconds": 300}}


def _config_blob() -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "nonce": uuid.uuid4().hex}).encode()


async def test_a_publishers_image_is_not_what_the_mirror_serves_for_another_registry(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """``pub/<alias>/<app>`` is pushed into the account's own registry as repository
    ``<alias>/<app>``; ``public.ecr.aws/<alias>/<app>`` through the mirror is another
    registry's repository ``<app>``, which does not exist: 404, not the pushed image."""
    other = f"other{uuid.uuid4().hex[:8]}"  # an alias the emulator's registry does not have
    app = f"cli-{uuid.uuid4().hex[:8]}"
    layer = b"published " + uuid.uuid4().bytes
    with GatewayProcess(tmp_path / "gw", _config(upstream.url), upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession() as session:
            oci = OciClient(session, gw.url)
            _, manifest = await oci.push_image(f"pub/{other}/{app}", "latest", [layer],
                                               config=_config_blob())
            # Pulled through the route once: its download URL is known to the gateway.
            assert await oci.get_blob(f"pub/{other}/{app}", digest_of(layer)) == layer
            mirrored = f"{gw.url}/v2/{other}/{app}"
            async with session.get(f"{mirrored}/manifests/latest", params=NS,
                                   headers={"Accept": OCI_MANIFEST}) as r:
                status, body = r.status, await r.read()
            assert status == 404, f"the mirror served the route's image as {other}/{app}"
            assert body != manifest
            async with session.get(f"{mirrored}/blobs/{digest_of(layer)}", params=NS,
                                   allow_redirects=False) as r:
                assert r.status == 404, (r.status, r.headers.get("Location"))


async def test_another_registrys_image_is_not_what_the_route_serves(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """The account's repositories ``<app>`` and ``<alias>/<app>`` (the latter through the
    route as ``pub/<alias>/<app>``) hold different images. The mirror's
    ``public.ecr.aws/<alias>/<app>`` is the first; once a node pulled it, the route's clients
    still get the second as ``pub/<alias>/<app>``, and the mirror the first."""
    app = f"cli-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as session:
        # Pushed through another gateway: this one holds nothing of either yet.
        with GatewayProcess(tmp_path / "pusher", _config(upstream.url),
                            upstream_url=upstream.url) as pusher:
            oci = OciClient(session, pusher.url)
            first_digest, first = await oci.push_image(
                f"pub/{app}", "latest", [b"first " + uuid.uuid4().bytes], config=_config_blob())
            second_digest, second = await oci.push_image(
                f"pub/{ALIAS}/{app}", "latest", [b"second " + uuid.uuid4().bytes],
                config=_config_blob())
        assert first_digest != second_digest
        accept = {"Accept": OCI_MANIFEST}
        with GatewayProcess(tmp_path / "gw", _config(upstream.url),
                            upstream_url=upstream.url) as gw:
            async with session.get(f"{gw.url}/v2/{ALIAS}/{app}/manifests/latest", params=NS,
                                   headers=accept) as r:
                assert r.status == 200 and await r.read() == first
            async with session.get(f"{gw.url}/v2/pub/{ALIAS}/{app}/manifests/latest",
                                   headers=accept) as r:
                assert r.status == 200
                assert await r.read() == second, \
                    "the route served another registry's image, pulled through the mirror"
            async with session.get(f"{gw.url}/v2/{ALIAS}/{app}/manifests/latest", params=NS,
                                   headers=accept) as r:
                assert r.status == 200 and await r.read() == first
