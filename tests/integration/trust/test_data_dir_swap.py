"""The attacker is another local user who owns the folder the gateway keeps its data in, or
a folder above it: one made before the gateway first started there (``./.ecr-gateway``, the
default, in a shared working folder such as /tmp; a ``--data-dir`` on a shared disk).

The gateway's own folders in it are its user's, mode 0700, checked at start. But whoever
owns the folder that holds them may rename any of them away at any time and put a folder of
theirs in its place, and every later open goes by name. The embedded emulator reads its
credentials file again when an unknown key calls, and its layers by path: after the swap,
a credentials file of the attacker's holds the attacker's key, links lead to the gateway's
layers, and the attacker reads (and could write) every repository with ECR's own API. So the
gateway refuses to start where a folder above its private ones belongs to another user (root
aside), naming it, before it writes anything there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.trust.conftest import ATTACKER_UID, refused_start
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient

ATTACKER_KEY, ATTACKER_SECRET = "AKIDATTACKER0001", "attacker-secret"
SECRET_LAYER = b"the layer only the gateway's users may read"

pytestmark = pytest.mark.usefixtures("as_root")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder both users reach, as /tmp is (pytest's own are closed to other users)."""
    path = Path(tempfile.mkdtemp(prefix="ecr-gateway-shared-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _attacker_folder(path: Path) -> None:
    """``path`` made by the attacker, open to everyone (so the gateway can write there)."""
    path.mkdir(parents=True)
    os.chown(path, ATTACKER_UID, ATTACKER_UID)
    path.chmod(0o777)


def _as_attacker(script: str) -> None:
    # A shell of the attacker's uid: everything it does, it may do as that user.
    subprocess.run(["sh", "-ec", script], user=ATTACKER_UID, group=ATTACKER_UID, check=True,
                   timeout=30, cwd="/")


def _swap(owned: Path, entry: str, emulator: str) -> None:
    """The attacker renames ``owned/entry`` (in a folder of theirs) away and puts a folder of
    theirs there, with the emulator's folder at ``emulator`` below it: a credentials file
    naming their key, and a link to the gateway's layers (the emulator follows it; they need
    not read the folder it leads into)."""
    moved = owned / f"{entry}.gateways"
    theirs = owned / entry / emulator if emulator else owned / entry
    old = moved / emulator if emulator else moved
    credentials = (f"[attacker]\\naws_access_key_id = {ATTACKER_KEY}\\n"
                   f"aws_secret_access_key = {ATTACKER_SECRET}\\n")
    _as_attacker(f"""
        mv '{owned / entry}' '{moved}'
        mkdir -p '{theirs}'
        ln -s '{old / "blobs"}' '{theirs / "blobs"}'
        printf '{credentials}' > '{theirs / "credentials"}'
    """)


@pytest.mark.parametrize("owner", ["data_dir", "parent"])
async def test_a_folder_another_user_owns_above_the_data_stops_the_start(
        shared: Path, session: aiohttp.ClientSession, owner: str) -> None:
    data_dir = shared / "work" / ".ecr-gateway"
    if owner == "data_dir":  # they made the data folder itself
        _attacker_folder(data_dir)
        owned, entry, below = data_dir, "emulator", ""
    else:  # they made a folder the gateway then made its data folder in
        _attacker_folder(data_dir.parent)
        owned, entry, below = data_dir.parent, data_dir.name, "emulator"
    gateway = GatewayProcess(data_dir, {})  # the embedded default: auth none, loopback
    if refused_start(gateway, "refusing to start: data_dir: ",
                     f"{owned} belongs to another user (uid {ATTACKER_UID})"):
        assert not (data_dir / "emulator").exists()  # nothing was written there
        return
    try:
        oci = OciClient(session, gateway.url)
        layer = await oci.push_blob("team/app", SECRET_LAYER)
        await oci.push_image("team/app", "v1", [SECRET_LAYER])
        found = re.search(r"embedded ECR emulator at (http://\S+)", "\n".join(gateway.log_lines))
        assert found, gateway.log_lines  # other users see its port in /proc/net/tcp anyway
        _swap(owned, entry, below)
        async with ecr_client(found[1], access_key_id=ATTACKER_KEY,
                              secret_access_key=ATTACKER_SECRET) as ecr:
            url = (await ecr.get_download_url_for_layer(repositoryName="team/app",
                                                        layerDigest=layer))["downloadUrl"]
        async with session.get(url) as response:
            read = await response.read()
    finally:
        gateway.stop()
    pytest.fail(f"the gateway started in a folder of uid {ATTACKER_UID}, who swapped its "
                f"emulator's folder and read a layer with a key of their own: {read!r}")


async def test_a_blob_cache_below_a_folder_another_user_owns_stops_the_start(
        shared: Path, upstream: EmulatorProcess, tmp_path: Path) -> None:
    """The blob cache (proxy mode) serves its files after checking their size only: the
    owner of a folder above it could swap its folders the same way."""
    owned = shared / "cache"
    _attacker_folder(owned)
    config = {"blobs": {"mode": "proxy", "cache": {"path": str(owned / "blobs")}}}
    gateway = GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url)
    if refused_start(gateway, "refusing to start: blobs.cache.path: ",
                     f"{owned} belongs to another user (uid {ATTACKER_UID})"):
        assert not (owned / "blobs" / "sha256").exists()  # no folder of blobs made there
        return
    gateway.stop()
    pytest.fail(f"the gateway started with its blob cache in a folder of uid {ATTACKER_UID}")
