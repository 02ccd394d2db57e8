"""Org B never sees org A's collections or records: direct, by filter, expand or batch."""

from __future__ import annotations

import pytest
from cloud import Cloud

from .support import Api, api_for, assert_error


@pytest.fixture
async def beta(cloud: Cloud) -> Api:
    return await api_for(cloud, org="beta", user="mallory", roles=("owner",))


async def test_collections_are_per_org(api: Api, beta: Api, posts: dict[str, str]) -> None:
    assert (await beta.get("/collections")).json()["totalItems"] == 0
    assert_error(await beta.get("/collections/posts"), 404)
    assert_error(await beta.patch("/collections/posts", {"name": "mine"}), 404)
    assert_error(await beta.delete("/collections/posts"), 404)
    assert (await api.get("/collections/posts")).status_code == 200


async def test_records_are_per_org(api: Api, beta: Api, posts: dict[str, str]) -> None:
    rid = posts["p0"]
    assert_error(await beta.get(f"/collections/posts/records/{rid}"), 404)
    assert_error(await beta.get("/collections/posts/records"), 404)
    assert_error(await beta.delete(f"/collections/posts/records/{rid}"), 404)
    assert (await api.get(f"/collections/posts/records/{rid}")).status_code == 200


async def test_same_names_in_two_orgs_stay_apart(api: Api, beta: Api,
                                                 posts: dict[str, str]) -> None:
    authors = await beta.collection("authors", [{"name": "name", "type": "text"}])
    await beta.collection("posts", [
        {"name": "title", "type": "text"},
        {"name": "author", "type": "relation", "collectionId": authors["id"]}])
    await beta.create("posts", {"title": "beta only"})
    assert [i["title"] for i in await beta.items("posts")] == ["beta only"]
    # A relation id of org A is unknown in org B, even though the collection names match.
    r = await beta.post("/collections/posts/records", {"title": "x", "author": posts["ann"]})
    assert assert_error(r, 400)["data"]["author"]["code"] == "validation_missing_rel_records"
    # Expanding never reaches across: B's records only see B's database.
    items = await beta.items("posts", expand="author", filter="author.name = 'Ann'")
    assert items == []
    assert len(await api.items("posts")) == 5


async def test_batch_cannot_reach_another_org(api: Api, beta: Api,
                                              posts: dict[str, str]) -> None:
    r = await beta.post("/batch", {"requests": [
        {"method": "DELETE", "url": f"/api/collections/posts/records/{posts['p0']}"}]})
    assert_error(r, 400)
    assert len(await api.items("posts")) == 5


async def test_identity_headers_in_requests_are_ignored(cloud: Cloud, api: Api, beta: Api,
                                                        posts: dict[str, str]) -> None:
    spoof = {**beta.headers, "X-Org-Id": "acme", "X-Tenant-Id": "acme"}
    r = await cloud.client.get("/v1/base/api/collections/posts/records", headers=spoof)
    assert_error(r, 404)
