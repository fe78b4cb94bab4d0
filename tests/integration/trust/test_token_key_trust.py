"""The attacker is another local user who can write where the gateway keeps its data (a
data_dir on a shared disk, a volume another container mounts) before the gateway first
starts there. With no ``auth.token.signing_key_file``, the gateway signs its tokens with
``data_dir/auth/token-signing-key.pem``: a key the attacker put there, in a folder or a file
of theirs or behind a link, would let them sign tokens for any repository. The gateway
refuses to start instead, as it does for its other private folders."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.auth.htpasswd import HtpasswdFile
from gateway.auth.tokens import GENERATED_KEY
from tests.integration.auth.helpers import SERVICE, bearer, write_htpasswd
from tests.integration.trust.conftest import ATTACKER_UID, refused_start
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.usefixtures("as_root")

PUSH = [{"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}]


def _attacker_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The attacker's own P-256 key at ``path``, theirs and readable by the gateway."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o644)
    os.chown(path, ATTACKER_UID, ATTACKER_UID)
    return key


def _foreign_folder(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    folder = data_dir / GENERATED_KEY.parent
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    os.chown(folder, ATTACKER_UID, ATTACKER_UID)
    return _attacker_key(data_dir / GENERATED_KEY)


def _linked_folder(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    theirs = data_dir.parent / "attacker"
    theirs.mkdir()
    os.chown(theirs, ATTACKER_UID, ATTACKER_UID)
    key = _attacker_key(theirs / GENERATED_KEY.name)
    data_dir.mkdir()
    (data_dir / GENERATED_KEY.parent).symlink_to(theirs)
    return key


def _foreign_file_in_own_folder(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """Left from when the folder was open to others: the folder is tightened at start, the
    file in it stays the attacker's."""
    folder = data_dir / GENERATED_KEY.parent
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    return _attacker_key(data_dir / GENERATED_KEY)


@pytest.mark.parametrize("plant", [_foreign_folder, _linked_folder,
                                   _foreign_file_in_own_folder])
async def test_a_signing_key_someone_else_planted_stops_the_start(
        upstream: EmulatorProcess, tmp_path: Path, session: aiohttp.ClientSession,
        plant: Callable[[Path], ec.EllipticCurvePrivateKey]) -> None:
    data_dir = tmp_path / "gw"
    key = plant(data_dir)
    users = write_htpasswd(tmp_path / "htpasswd", {"alice": "alice-pw"})
    config = {"auth": {"mode": "htpasswd", "htpasswd_file": str(users), "rules": [
        {"repository": "team-a/**", "users": ["alice"], "actions": ["pull", "push"]}]}}
    gateway = GatewayProcess(data_dir, config, upstream_url=upstream.url)
    if refused_start(gateway, "refusing to start: data_dir: ",
                     "the token-signing key there would not be private"):
        return
    try:
        # Started: the attacker signs themselves alice's push. A token names its user's
        # password entry by a hash of it, which the htpasswd file (as htpasswd writes it,
        # readable by everyone) gives away.
        alice = HtpasswdFile(str(users)).user("alice")
        assert alice is not None
        now = int(time.time())
        forged = jwt.encode({"iss": "ecr-gateway", "sub": "alice", "aud": SERVICE,
                             "iat": now, "nbf": now, "exp": now + 300, "jti": "x",
                             "use": "access", "access": PUSH, "fpr": alice.fingerprint},
                            key, algorithm="ES256")
        async with session.post(gateway.url + "/v2/team-a/app/blobs/uploads/",
                                headers=bearer(forged)) as response:
            status = response.status
    finally:
        gateway.stop()
    pytest.fail(f"the gateway started with a signing key another user planted; a token "
                f"signed with it for alice's push to team-a/app: POST uploads {status}")
