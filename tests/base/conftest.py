"""Fixtures for the base tests: an in-process cloud with base, and APIs per identity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cloud import Cloud, running_cloud

from .support import Api, api_for


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path / "data", ["base"]) as c:
        yield c


@pytest.fixture
async def api(cloud: Cloud) -> Api:
    """The owner of org acme."""
    return await api_for(cloud)


@pytest.fixture
async def posts(api: Api) -> dict[str, str]:
    """authors + posts (relation, select, json, unique title) with a few records."""
    return await make_posts(api)


async def make_posts(api: Api) -> dict[str, str]:
    """Create the `posts` dataset; returns record ids by title (and the authors by name)."""
    authors = await api.collection("authors", [
        {"name": "name", "type": "text", "required": True},
        {"name": "org", "type": "relation", "collectionId": "authors"},
    ])
    await api.collection("posts", [
        {"name": "title", "type": "text", "required": True, "unique": True},
        {"name": "views", "type": "number"},
        {"name": "published", "type": "bool"},
        {"name": "tags", "type": "select", "values": ["a", "b", "c"], "maxSelect": 3},
        {"name": "author", "type": "relation", "collectionId": authors["id"]},
        {"name": "meta", "type": "json"},
    ])
    ids: dict[str, str] = {}
    home = await api.create("authors", {"name": "Home"})
    ann = await api.create("authors", {"name": "Ann", "org": home["id"]})
    bob = await api.create("authors", {"name": "Bob"})
    ids.update(home=home["id"], ann=ann["id"], bob=bob["id"])
    rows = [("p0", 0, True, ["a"], ann), ("p1", 10, False, ["a", "b"], ann),
            ("p2", 20, True, ["c"], bob), ("p3", 30, False, [], bob),
            ("p4", 40, True, ["b", "c"], ann)]
    for title, views, published, tags, author in rows:
        rec = await api.create("posts", {"title": title, "views": views,
                                         "published": published, "tags": tags,
                                         "author": author["id"], "meta": {"n": views}})
        ids[title] = rec["id"]
    return ids
