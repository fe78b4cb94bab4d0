"""The tag cache of the pull path: what a tag points to is kept per Accept set, and an
answer for every client (a push, a pull-through fill) serves narrower Accept sets too."""

from __future__ import annotations

from gateway.config import CacheConfig
from gateway.ecr.caches import PullCaches
from gateway.oci.backend import Manifest

REPO = (None, "us-east-1", "library/app")
OCI = "application/vnd.oci.image.manifest.v1+json"
DOCKER = "application/vnd.docker.distribution.manifest.v2+json"


def test_a_pushed_tag_answers_a_client_that_names_the_types_it_accepts() -> None:
    caches = PullCaches(CacheConfig())
    caches.remember(REPO, Manifest(b"{}", OCI, "sha256:" + "a" * 64), "v1")  # a push: no Accept
    assert caches.tag(REPO, "v1", (OCI, DOCKER)) == "sha256:" + "a" * 64


def test_an_answer_for_one_accept_set_stays_its_own() -> None:
    caches = PullCaches(CacheConfig())
    caches.remember(REPO, Manifest(b"{}", OCI, "sha256:" + "a" * 64), "v1")
    # ECR converted the manifest for a client that accepts Docker's type only: another digest
    caches.remember(REPO, Manifest(b"{ }", DOCKER, "sha256:" + "b" * 64), "v1", (DOCKER,))
    assert caches.tag(REPO, "v1", (DOCKER,)) == "sha256:" + "b" * 64
    assert caches.tag(REPO, "v1", None) == "sha256:" + "a" * 64
    assert caches.tag(REPO, "v1", (OCI,)) == "sha256:" + "a" * 64
    # a narrower answer never stands for every client
    caches.remember(REPO, Manifest(b"{ }", DOCKER, "sha256:" + "b" * 64), "v2", (DOCKER,))
    assert caches.tag(REPO, "v2", None) is None


def test_an_answer_read_before_a_change_is_not_kept() -> None:
    """A read of ECR that started before the repository changed (a tag moved, an image
    deleted) keeps nothing; reads of other repositories are kept. A flush drops reads of
    every repository."""
    caches = PullCaches(CacheConfig())
    old = Manifest(b"{}", OCI, "sha256:" + "a" * 64)
    other = (None, "us-east-1", "library/other")
    changes = [(lambda: caches.forget_tag(REPO, "v1"), True),
               (lambda: caches.forget_manifest(REPO, old.digest), True), (caches.flush, False)]
    for change, others_kept in changes:
        caches.forget_tag(other, "v1")
        since, elsewhere = caches.version(REPO), caches.version(other)
        change()
        caches.remember(REPO, old, "v1", since=since)
        assert caches.tag(REPO, "v1") is None and caches.manifest(REPO, old.digest) is None
        caches.remember(other, old, "v1", since=elsewhere)
        assert (caches.tag(other, "v1") == old.digest) is others_kept
        caches.remember(REPO, old, "v1", since=caches.version(REPO))  # read after: kept
        assert caches.tag(REPO, "v1") == old.digest
