"""Real clients log in to a gateway that serves HTTPS (a test CA) with htpasswd users and
team rules: `docker login` / push / pull / logout, pull-only and cross-team refusals,
anonymous pulls, `skopeo login` and `skopeo copy --dest-creds`, and `ctr` (containerd
fetches its token with the OAuth2 POST first).

dockerd treats every 127.0.0.0/8 registry as insecure (TLS without verification, a rule
it always adds), so the CA itself is checked through skopeo (`--cert-dir`), which also
shows that a client without the CA refuses the server. dockerd still speaks TLS: the
gateway has no plain-HTTP port to fall back to.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.auth.conftest import PASSWORDS, htpasswd_auth
from tests.integration.auth.helpers import TestCA, write_htpasswd
from tests.support.clients import Containerd, Docker, Dockerd, Skopeo, run
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.images import docker_archive, oci_layout

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tlsgw(upstream: EmulatorProcess, ca: TestCA,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("tls")
    ca.issue(folder / "server.crt", folder / "server.key")
    htpasswd = write_htpasswd(folder / "htpasswd", PASSWORDS)
    config = {"auth": htpasswd_auth(htpasswd),
              "tls": {"cert_file": str(folder / "server.crt"),
                      "key_file": str(folder / "server.key")}}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def daemon(tlsgw: GatewayProcess) -> Iterator[Dockerd]:
    started = Dockerd().start()
    yield started
    started.stop()


@pytest.fixture
def docker(daemon: Dockerd, tmp_path: Path) -> Docker:
    return daemon.client(tmp_path / "docker-config")


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo(tmp_path / "skopeo")


@pytest.fixture(scope="module")
def cert_dir(ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as skopeo's --cert-dir wants it: the CA as *.crt."""
    folder = tmp_path_factory.mktemp("certs")
    (folder / "ca.crt").write_bytes(ca.cert_path.read_bytes())
    return folder


def login(docker: Docker, host: str, user: str, password: str, check: bool = True) -> str:
    result = run([docker.binary, "login", "-u", user, "--password-stdin", host],
                 env=docker.env, input=password, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def load(docker: Docker, tmp_path: Path, ref: str) -> None:
    archive = docker_archive(tmp_path / f"{uuid.uuid4().hex}.tar", [2048, 1024], ref)
    docker("load", "-i", str(archive.path))


def name(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def test_login_push_pull_logout(tlsgw: GatewayProcess, docker: Docker,
                                tmp_path: Path) -> None:
    host = tlsgw.host
    bad = login(docker, host, "alice", "not-her-password", check=False)
    assert "unauthorized: wrong user name or password" in bad, bad
    assert not (Path(docker.env["DOCKER_CONFIG"]) / "config.json").exists() or \
        host not in (Path(docker.env["DOCKER_CONFIG"]) / "config.json").read_text()
    assert "Login Succeeded" in login(docker, host, "alice", "alice-pw")
    stored = json.loads((Path(docker.env["DOCKER_CONFIG"]) / "config.json").read_text())
    entry = stored["auths"][host]
    # The gateway handed out a refresh token: docker keeps it instead of the password and
    # later exchanges it (OAuth2 grant_type=refresh_token) for access tokens.
    assert entry.get("identitytoken"), entry

    repository = name("team-a")
    ref = f"{host}/{repository}:v1"
    load(docker, tmp_path, ref)
    pushed = docker("push", ref)
    assert "digest: sha256:" in pushed.stdout
    docker("rmi", ref)
    pulled = docker("pull", ref)
    assert "Downloaded newer image" in pulled.stdout or "Pull complete" in pulled.stdout

    docker("logout", host)
    docker("rmi", ref)
    refused = docker("pull", ref, check=False)
    assert refused.returncode != 0
    assert "unauthorized: authentication required" in refused.stderr, refused.stderr
    assert "Pull complete" not in refused.stdout
    # docker exchanged its refresh token through the OAuth2 POST, over TLS (no HTTP port).
    log = tlsgw.access_log()
    assert any(e["method"] == "POST" and e["path"] == "/token" and e["status"] == 200
               for e in log)
    assert any(e["method"] == "PUT" and e.get("repository") == repository
               and e["status"] == 201 for e in log)


def test_pull_only_user_cannot_push(tlsgw: GatewayProcess, daemon: Dockerd, tmp_path: Path
                                    ) -> None:
    host = tlsgw.host
    owner = daemon.client(tmp_path / "owner")
    login(owner, host, "alice", "alice-pw")
    repository = name("team-a")
    ref = f"{host}/{repository}:v1"
    load(owner, tmp_path, ref)
    owner("push", ref)
    owner("rmi", ref)

    viewer = daemon.client(tmp_path / "viewer")
    login(viewer, host, "viewer", "viewer-pw")
    viewer("pull", ref)  # reading is allowed
    other = f"{host}/{repository}:v2"
    viewer("tag", ref, other)
    refused = viewer("push", other, check=False)
    assert refused.returncode != 0
    assert "denied: requested access to the resource is denied" in refused.stderr, \
        refused.stderr
    viewer("rmi", ref, other)


def test_other_team_and_anonymous(tlsgw: GatewayProcess, daemon: Dockerd,
                                  tmp_path: Path) -> None:
    host = tlsgw.host
    alice = daemon.client(tmp_path / "alice")
    login(alice, host, "alice", "alice-pw")
    private = f"{host}/{name('team-a')}:v1"
    public = f"{host}/{name('public')}:v1"
    load(alice, tmp_path, private)
    alice("tag", private, public)
    alice("push", private)
    alice("push", public)
    alice("rmi", private, public)

    carol = daemon.client(tmp_path / "carol")
    login(carol, host, "carol", "carol-pw")
    refused = carol("pull", private, check=False)
    assert refused.returncode != 0 and "denied" in refused.stderr, refused.stderr
    sneaky = f"{host}/{name('team-a')}:v1"
    load(carol, tmp_path, sneaky)
    pushed = carol("push", sneaky, check=False)
    assert pushed.returncode != 0 and "denied" in pushed.stderr, pushed.stderr
    carol("rmi", sneaky)

    nobody = daemon.client(tmp_path / "nobody")  # never logged in
    nobody("pull", public)  # anonymous pull where a rule allows it
    nobody("rmi", public)
    anonymous = nobody("pull", private, check=False)
    assert anonymous.returncode != 0, anonymous.stdout


def test_skopeo_login_and_copy_with_the_test_ca(tlsgw: GatewayProcess, skopeo: Skopeo,
                                                cert_dir: Path, tmp_path: Path) -> None:
    host = tlsgw.host
    untrusted = skopeo("login", "-u", "alice", "-p", "alice-pw", host, check=False)
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr.lower() or "x509" in untrusted.stderr, \
        untrusted.stderr
    wrong = skopeo("login", "--cert-dir", str(cert_dir), "-u", "alice", "-p", "nope", host,
                   check=False)
    assert wrong.returncode != 0
    ok = skopeo("login", "--cert-dir", str(cert_dir), "-u", "alice", "-p", "alice-pw", host)
    assert "Login Succeeded" in ok.stdout

    image = oci_layout(tmp_path / "src", "v1", [3000])
    repository = name("team-a")
    skopeo("copy", "--dest-cert-dir", str(cert_dir), "--dest-creds", "ci-a:ci-a-pw",
           f"oci:{tmp_path / 'src'}:v1", f"docker://{host}/{repository}:v1")
    inspected = json.loads(skopeo("inspect", "--cert-dir", str(cert_dir), "--raw",
                                  f"docker://{host}/{repository}:v1").stdout)  # stored login
    assert inspected["config"]["digest"] == image.config.digest
    denied = skopeo("copy", "--dest-cert-dir", str(cert_dir), "--dest-creds",
                    "viewer:viewer-pw", f"oci:{tmp_path / 'src'}:v1",
                    f"docker://{host}/{repository}:v2", check=False)
    assert denied.returncode != 0 and "denied" in denied.stderr.lower(), denied.stderr
    skopeo("logout", host)
    anonymous = skopeo("inspect", "--cert-dir", str(cert_dir), f"docker://{host}/{repository}:v1",
                       check=False)
    assert anonymous.returncode != 0


def test_containerd_fetches_tokens_with_the_oauth_post(
        tlsgw: GatewayProcess, ca: TestCA, skopeo: Skopeo, cert_dir: Path, tmp_path: Path,
        containerd: Callable[[], Containerd]) -> None:
    host = tlsgw.host
    oci_layout(tmp_path / "src", "v1", [1500])
    repository = name("team-a")
    skopeo("copy", "--dest-cert-dir", str(cert_dir), "--dest-creds", "alice:alice-pw",
           f"oci:{tmp_path / 'src'}:v1", f"docker://{host}/{repository}:v1")
    daemon = containerd()
    hosts = daemon.hosts_dir / host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "https://{host}"\n\n[host."https://{host}"]\n'
        f'  ca = "{ca.cert_path}"\n  capabilities = ["pull", "resolve"]\n')
    ref = f"{host}/{repository}:v1"
    fetch = ["content", "fetch", "--hosts-dir", str(daemon.hosts_dir)]
    wrong = daemon.ctr(*fetch, "--user", "viewer:wrong", ref, check=False)
    assert wrong.returncode != 0
    assert "401" in wrong.stderr or "unauthorized" in wrong.stderr.lower(), wrong.stderr
    daemon.ctr(*fetch, "--user", "viewer:viewer-pw", ref)
    posts = [e for e in tlsgw.access_log() if e["path"] == "/token" and e["method"] == "POST"]
    assert any(e["status"] == 200 for e in posts)
    assert any(e["status"] == 401 for e in posts)
    assert not [e for e in tlsgw.access_log()
                if e["path"] == "/token" and e["method"] == "GET" and e["status"] == 405]
