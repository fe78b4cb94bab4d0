"""A tags list or catalog asked for without ``n`` is one page, with a ``Link`` to the rest.

Nothing bounds a repository's tags (ECR takes 1,000 per image, 20,000 images and more per
repository) nor a registry's repositories (100,000 and more), and a request without ``n``
was answered whole: 20,000 tags of 128 characters were one answer of 2.5 MiB, 20,000
repositories of 210 characters one of 4.1 MiB, encoded on the event loop for each reader.
Such a request now gets ``limits.max_page_size`` names and a ``Link`` header, which the
clients that list tags follow (skopeo's list-tags here).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest

from tests.support.clients import Skopeo
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.seeding import create_repositories, tag_many

PAGE = 40
NAMES = 100


@pytest.fixture(scope="module")
def pagegw(upstream: EmulatorProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("gw"), {"limits": {"max_page_size": PAGE}},
                        upstream_url=upstream.url) as gateway:
        yield gateway


async def _walk(url: str, key: str) -> tuple[list[str], list[int]]:
    """Every name from ``url`` on, following the Links; and each page's length."""
    names: list[str] = []
    sizes: list[int] = []
    next_url: str | None = url
    async with aiohttp.ClientSession() as http:
        while next_url is not None:
            async with http.get(next_url) as reply:
                assert reply.status == 200, await reply.text()
                page = (await reply.json())[key]
                link = reply.headers.get("Link")
            names += page
            sizes.append(len(page))
            match = re.fullmatch(r'<([^>]+)>; rel="next"', link) if link else None
            assert link is None or match is not None, link
            next_url = urljoin(next_url, match[1]) if match else None
    return names, sizes


async def test_a_tags_list_without_n_is_one_page_and_a_link(
        pagegw: GatewayProcess, upstream: EmulatorProcess, repo: str, tmp_path: Path) -> None:
    tags = [f"t{i:03d}" for i in range(NAMES)]
    await tag_many(upstream.url, repo, tags)
    names, sizes = await _walk(f"{pagegw.url}/v2/{repo}/tags/list", "tags")
    assert names == tags
    assert sizes == [PAGE, PAGE, NAMES - 2 * PAGE]  # answered whole before: [100]
    listed = Skopeo(tmp_path / "skopeo").list_tags(f"docker://{pagegw.host}/{repo}")
    assert sorted(listed) == tags


async def test_a_catalog_without_n_is_one_page_and_a_link(
        pagegw: GatewayProcess, upstream: EmulatorProcess, repo: str) -> None:
    made = [f"{repo}/r{i:03d}" for i in range(NAMES)]
    await create_repositories(upstream.url, made)
    names, sizes = await _walk(f"{pagegw.url}/v2/_catalog", "repositories")
    assert set(made) <= set(names)
    assert names == sorted(set(names))  # each once, in order, over the pages
    assert max(sizes) == PAGE and len(sizes) > 1, sizes
