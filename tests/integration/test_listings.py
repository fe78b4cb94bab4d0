"""Listings that scale: paging through a repository of many tags, and a catalog of many
repositories, with ``?n=100`` and the Link headers, reads each ECR listing once per tag TTL
(one ListImages or DescribeRepositories page per 1,000 names) and answers every later page
from the kept, sorted list; pushes and deletes through the gateway show at once.

The data is made through the emulator's ECR API (tests/support/seeding.py): one small image
under many tags, and many empty repositories."""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.integration.auth.conftest import PASSWORDS, htpasswd_auth
from tests.integration.auth.helpers import basic, write_htpasswd
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient
from tests.support.seeding import OCI_MANIFEST, create_repositories, small_manifest, tag_many

TAG_COUNT = int(os.environ.get("LISTING_TEST_TAGS", "12000"))
REPOSITORY_COUNT = int(os.environ.get("LISTING_TEST_REPOSITORIES", "2000"))
BIG = "big/tags"
PAGE = 100
TTL = 600.0


def tag_names(count: int) -> list[str]:
    # Unpadded numbers and mixed case: lexical order is not the order they were made in.
    return [f"{'V' if i % 7 == 0 else 'v'}{i}.{i % 13}" for i in range(count)]


@pytest.fixture(scope="module")
def ecr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    # Writes left to the page cache: thousands of PutImage calls in seconds, same code.
    with EmulatorProcess(tmp_path_factory.mktemp("ecr"),
                         env={"ECR_EMULATOR_DURABLE": "0"}) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def tags(ecr: EmulatorProcess) -> list[str]:
    names = tag_names(TAG_COUNT)
    asyncio.run(tag_many(ecr.url, BIG, names))
    return sorted(names)


@pytest.fixture(scope="module")
def repositories(ecr: EmulatorProcess, tags: list[str]) -> list[str]:
    names = [f"team-{'a' if i % 4 == 0 else 'b'}/r{i}" for i in range(REPOSITORY_COUNT)]
    asyncio.run(create_repositories(ecr.url, names))
    return sorted([*names, BIG])


@pytest.fixture(scope="module")
def gateway(ecr: EmulatorProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("gw"), {"cache": {"tag_ttl_seconds": TTL}},
                        upstream_url=ecr.url) as gw:
        yield gw


async def page_all(base: str, path: str, key: str, *, n: int = PAGE,
                   headers: dict[str, str] | None = None
                   ) -> tuple[list[str], int, list[float]]:
    """Follow the Link headers from ``path?n=``: every item, the page count, and how long
    each page took. Checks each page's size and Link header on the way."""
    items: list[str] = []
    seconds: list[float] = []
    url: str | None = f"{path}?n={n}"
    async with aiohttp.ClientSession(base, headers=headers) as http:
        while url is not None:
            started = time.perf_counter()
            async with http.get(url) as answer:
                assert answer.status == 200, await answer.text()
                page = (await answer.json())[key]
                link = answer.headers.get("Link")
            seconds.append(time.perf_counter() - started)
            items += page
            if link is None:
                assert len(page) <= n
                url = None
            else:
                assert len(page) == n, (url, len(page))
                next_url = f"{path}?{urlencode({'n': n, 'last': page[-1]})}"
                assert link == f'<{next_url}>; rel="next"', link
                url = next_url
            assert len(seconds) <= 10_000
    return items, len(seconds), seconds


def calls(ecr: EmulatorProcess, action: str) -> int:
    return len(ecr.requests(action))


async def test_paging_many_tags_lists_ecr_once_per_ttl(
        ecr: EmulatorProcess, gateway: GatewayProcess, tags: list[str]) -> None:
    ecr.clear_requests()
    listed, pages, _ = await page_all(gateway.url, f"/v2/{BIG}/tags/list", "tags")
    assert listed == tags  # complete, sorted, every tag once
    assert pages == math.ceil(TAG_COUNT / PAGE)
    first = calls(ecr, "ListImages")
    assert 1 <= first <= math.ceil(TAG_COUNT / 1000), first

    ecr.clear_requests()
    again, _, seconds = await page_all(gateway.url, f"/v2/{BIG}/tags/list", "tags")
    assert again == tags
    assert calls(ecr, "ListImages") == 0  # within the TTL: no ECR call at all
    assert statistics.median(seconds) <= 0.05, statistics.median(seconds)


async def test_tags_pushed_and_deleted_through_the_gateway_show_at_once(
        ecr: EmulatorProcess, gateway: GatewayProcess, tags: list[str]) -> None:
    async with aiohttp.ClientSession(gateway.url) as http:
        async with http.get(f"/v2/{BIG}/tags/list?n=1") as answer:
            assert answer.status == 200  # the list is kept from here on
        ecr.clear_requests()
        new = tags[10] + "-new"  # sorts right after tags[10]
        async with http.put(f"/v2/{BIG}/manifests/{new}", data=small_manifest().encode(),
                            headers={"Content-Type": OCI_MANIFEST}) as answer:
            assert answer.status == 201, await answer.text()
        async with http.get(f"/v2/{BIG}/tags/list",
                            params={"n": "3", "last": tags[9]}) as answer:
            assert (await answer.json())["tags"] == [tags[10], new, tags[11]]
        async with http.delete(f"/v2/{BIG}/manifests/{tags[11]}") as answer:
            assert answer.status == 202, await answer.text()
        async with http.get(f"/v2/{BIG}/tags/list",
                            params={"n": "3", "last": tags[9]}) as answer:
            assert (await answer.json())["tags"] == [tags[10], new, tags[12]]
        async with http.get(f"/v2/{BIG}/tags/list", params={"n": "0"}) as answer:
            assert (await answer.json())["tags"] == [] and "Link" not in answer.headers
    assert calls(ecr, "ListImages") == 0
    # Put back what this test changed, through the gateway, for the tests that follow.
    async with aiohttp.ClientSession(gateway.url) as http:
        async with http.delete(f"/v2/{BIG}/manifests/{new}") as answer:
            assert answer.status == 202
        async with http.put(f"/v2/{BIG}/manifests/{tags[11]}", data=small_manifest().encode(),
                            headers={"Content-Type": OCI_MANIFEST}) as answer:
            assert answer.status == 201
    listed, _, _ = await page_all(gateway.url, f"/v2/{BIG}/tags/list", "tags", n=1000)
    assert listed == tags
    assert calls(ecr, "ListImages") == 0


async def test_the_kept_list_is_read_again_after_the_ttl(
        ecr: EmulatorProcess, tags: list[str], tmp_path: Path) -> None:
    """Another writer's tag is seen once the TTL has passed, at the cost of one listing."""
    with GatewayProcess(tmp_path / "gw", {"cache": {"tag_ttl_seconds": 2}},
                        upstream_url=ecr.url) as short:
        async with aiohttp.ClientSession(short.url) as http:
            ecr.clear_requests()
            async with http.get(f"/v2/{BIG}/tags/list?n=10") as answer:
                assert (await answer.json())["tags"] == tags[:10]
            async with http.get(f"/v2/{BIG}/tags/list",
                                params={"n": "10", "last": tags[9]}) as answer:
                assert (await answer.json())["tags"] == tags[10:20]
            once = calls(ecr, "ListImages")
            assert 1 <= once <= math.ceil(TAG_COUNT / 1000)
            elsewhere = "0-from-elsewhere"  # sorts first
            await tag_many(ecr.url, BIG, [elsewhere])
            await asyncio.sleep(2.2)
            async with http.get(f"/v2/{BIG}/tags/list?n=2") as answer:
                assert (await answer.json())["tags"] == [elsewhere, tags[0]]
            again = calls(ecr, "ListImages") - once  # one listing more, of one tag more
            assert 1 <= again <= math.ceil((TAG_COUNT + 1) / 1000), again
        async with aiohttp.ClientSession(short.url) as http, \
                http.delete(f"/v2/{BIG}/manifests/{elsewhere}") as answer:
            assert answer.status == 202


async def test_paging_a_large_catalog_lists_ecr_once_per_ttl(
        ecr: EmulatorProcess, gateway: GatewayProcess, repositories: list[str]) -> None:
    ecr.clear_requests()
    listed, pages, _ = await page_all(gateway.url, "/v2/_catalog", "repositories")
    assert listed == repositories
    assert pages == math.ceil(len(repositories) / PAGE)
    first = calls(ecr, "DescribeRepositories")
    assert 1 <= first <= math.ceil(len(repositories) / 1000), first

    ecr.clear_requests()
    again, _, seconds = await page_all(gateway.url, "/v2/_catalog", "repositories")
    assert again == repositories
    assert calls(ecr, "DescribeRepositories") == 0
    assert statistics.median(seconds) <= 0.05, statistics.median(seconds)

    # A repository created by a push through the gateway is listed at once.
    async with aiohttp.ClientSession() as http:
        await OciClient(http, gateway.url).push_image("big/pushed", "v1", [b"x" * 10])
        async with http.get(f"{gateway.url}/v2/_catalog",
                            params={"n": "2", "last": "big/a"}) as answer:
            assert (await answer.json())["repositories"] == ["big/pushed", BIG]


async def test_catalog_pages_show_only_what_the_caller_may_pull(
        ecr: EmulatorProcess, repositories: list[str], tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", PASSWORDS)
    with GatewayProcess(tmp_path / "gw", {"auth": htpasswd_auth(htpasswd),
                                          "cache": {"tag_ttl_seconds": TTL}},
                        upstream_url=ecr.url) as gw:
        alice = basic("alice", "alice-pw")  # team-a: pull and catalog in team-a/ only
        mine = [name for name in repositories if name.startswith("team-a/")]
        ecr.clear_requests()
        listed, pages, _ = await page_all(gw.url, "/v2/_catalog", "repositories",
                                          headers=alice)
        assert listed == mine
        assert pages == math.ceil(len(mine) / PAGE)
        assert calls(ecr, "DescribeRepositories") <= math.ceil(len(repositories) / 1000) + 1
        everything, _, _ = await page_all(gw.url, "/v2/_catalog", "repositories",
                                          headers=basic("admin", "admin-pw"), n=1000)
        assert set(mine) < set(everything)
