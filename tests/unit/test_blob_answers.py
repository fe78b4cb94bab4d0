"""Download URLs and membership kept by the pull caches end with a deletion in their
repository, in every identity's view, including answers whose read from ECR was on its way
when the deletion came and repositories whose last deletion the caches no longer hold."""

from __future__ import annotations

import pytest

from gateway.config import CacheConfig
from gateway.ecr import caches as caches_module
from gateway.ecr.caches import PullCaches
from gateway.oci.backend import Manifest

SHARED = (None, "us-east-1", "team/app")
READER = ("@AKIDREADER", "us-east-1", "team/app")  # a caller's view of the same repository
WRITER = ("@AKIDWRITER", "us-east-1", "team/app")
OTHER = ("@AKIDREADER", "us-east-1", "team/other")
LAYER = "sha256:" + "a" * 64
URL = "https://storage.example/layer"


def _learned(caches: PullCaches, repo: tuple[str | None, str, str],
             since: int | None = None) -> None:
    caches.remember_url(repo, LAYER, URL, since=since)
    caches.remember_member(repo, LAYER, 10, since=since)


def _served(caches: PullCaches, repo: tuple[str | None, str, str]) -> bool:
    url, size = caches.url(repo, LAYER), caches.member_size(repo, LAYER)
    assert (url is None) == (size is None)
    return url is not None


def test_a_deletion_by_one_identity_ends_every_identitys_blob_answers() -> None:
    caches = PullCaches(CacheConfig(manifest_revalidate_seconds=60))
    for repo in (SHARED, READER, OTHER):
        _learned(caches, repo)
    caches.forget_manifest(WRITER, "sha256:" + "b" * 64)
    assert not _served(caches, SHARED) and not _served(caches, READER)
    assert _served(caches, OTHER)  # another repository
    _learned(caches, READER)  # asked again after the deletion: kept
    assert _served(caches, READER)


def test_an_answer_read_before_a_deletion_or_a_flush_is_not_served() -> None:
    caches = PullCaches(CacheConfig(manifest_revalidate_seconds=60))
    for change in (lambda: caches.forget_manifest(SHARED, "sha256:" + "b" * 64), caches.flush):
        since = caches.blob_epoch()
        change()
        _learned(caches, READER, since)
        assert not _served(caches, READER)


def test_a_repository_whose_deletion_was_forgotten_stays_deleted_from(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caches_module, "CHANGES_KEPT", 2)
    caches = PullCaches(CacheConfig(manifest_revalidate_seconds=60))
    _learned(caches, READER)
    caches.forget_manifest(READER, "sha256:" + "b" * 64)
    for i in range(3):  # the deletion in team/app is pushed out of the kept ones
        caches.forget_manifest(("@AKIDREADER", "us-east-1", f"team/x{i}"), LAYER)
    assert not _served(caches, READER)


def test_only_what_was_held_is_found_gone_and_only_once() -> None:
    """A read of what does not exist (a typo, a probe, over and over) costs no other reader
    its answers: only an image or repository this process held answers of is forgotten."""
    caches = PullCaches(CacheConfig(manifest_revalidate_seconds=60))
    image = Manifest(b"{}", "application/vnd.oci.image.manifest.v1+json", "sha256:" + "c" * 64)
    caches.remember(READER, image)
    _learned(caches, READER)
    assert not caches.found_gone(SHARED, {"sha256:" + "d" * 64})
    assert not caches.found_repository_gone(OTHER)
    assert _served(caches, READER)
    assert caches.found_gone(SHARED, {image.digest})  # in any identity's view
    assert not _served(caches, READER)
    assert not caches.found_gone(SHARED, {image.digest})
    _learned(caches, READER)
    assert caches.found_repository_gone(WRITER)
    assert not _served(caches, READER)
    assert not caches.found_repository_gone(WRITER)
