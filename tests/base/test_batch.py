"""Batch: all or nothing, in one transaction; malformed batches are 400s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .support import API, Api, assert_error


async def test_batch_applies_everything(api: Api, posts: dict[str, str]) -> None:
    r = await api.post("/batch", {"requests": [
        {"method": "POST", "url": "/api/collections/posts/records?fields=title",
         "body": {"title": "new"}},
        {"method": "PATCH", "url": f"/api/collections/posts/records/{posts['p0']}",
         "body": {"views": 7}},
        {"method": "PUT", "url": "/api/collections/posts/records/upsertedrecord1",
         "body": {"title": "upserted"}},
        {"method": "DELETE", "url": f"/api/collections/posts/records/{posts['p1']}"},
    ]})
    assert r.status_code == 200, r.text
    results = r.json()
    assert [x["status"] for x in results] == [200, 200, 200, 204]
    assert results[0]["body"] == {"title": "new"} and results[1]["body"]["views"] == 7
    titles = {i["title"] for i in await api.items("posts")}
    assert titles == {"p0", "p2", "p3", "p4", "new", "upserted"}


async def test_failing_request_rolls_back_the_batch(api: Api, posts: dict[str, str]) -> None:
    before = await api.items("posts", sort="title")
    r = await api.post("/batch", {"requests": [
        {"method": "POST", "url": "/api/collections/posts/records", "body": {"title": "a"}},
        {"method": "DELETE", "url": f"/api/collections/posts/records/{posts['p2']}"},
        {"method": "POST", "url": "/api/collections/posts/records", "body": {"title": "p0"}},
    ]})
    err = assert_error(r, 400)
    assert err["data"]["requests"]["2"]["code"] == "batch_request_failed"
    assert await api.items("posts", sort="title") == before


async def test_multipart_payload_as_the_sdk_sends_it(api: Api, posts: dict[str, str]) -> None:
    payload = {"requests": [{"method": "POST", "url": "/api/collections/posts/records",
                             "body": {"title": "via form"}}]}
    r = await api.client.post(API + "/batch", headers=api.headers,
                              files={"@jsonPayload": (None, json.dumps(payload))})
    assert r.status_code == 200, r.text
    assert r.json()[0]["body"]["title"] == "via form"


BAD: list[tuple[str, Any]] = [
    ("not an object", [1]),
    ("no requests", {"requests": []}),
    ("too many", {"requests": [{"method": "DELETE", "url": "/x"}] * 51}),
    ("bad url", {"requests": [{"method": "POST", "url": "/api/collections"}]}),
    ("bad method", {"requests": [{"method": "GET", "url": "/api/collections/posts/records"}]}),
    ("item not object", {"requests": ["x"]}),
]


@pytest.mark.parametrize(("case", "body"), BAD, ids=[b[0] for b in BAD])
async def test_malformed_batches(api: Api, posts: dict[str, str], case: str,
                                 body: Any) -> None:
    assert_error(await api.post("/batch", body), 400)
    assert len(await api.items("posts")) == 5
