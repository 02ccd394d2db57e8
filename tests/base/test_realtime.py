"""Realtime over SSE: PB_CONNECT, subscriptions, view-rule filtering and org isolation.

"Never receives" is checked by ordering, not by waiting: events are delivered in commit
order, so once a later event that the client must see has arrived, an earlier leak would
have arrived first.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from cloud import Cloud

from .support import Api, SseStream, api_for, assert_error

PATH = "/v1/base/api/realtime"


async def _connect(stream: SseStream) -> str:
    client_id, name, data = await stream.event()
    assert stream.status == 200 and name == "PB_CONNECT" and data == {"clientId": client_id}
    return client_id


async def test_create_update_delete_events(cloud: Cloud, api: Api,
                                           posts: dict[str, str]) -> None:
    async with SseStream(cloud.host.public, PATH, {}) as stream:
        client_id = await _connect(stream)
        r = await api.post("/realtime", {"clientId": client_id, "subscriptions": ["posts/*"]})
        assert r.status_code == 204, r.text
        made = await api.create("posts", {"title": "live"})
        await api.patch(f"/collections/posts/records/{made['id']}", {"views": 3})
        await api.delete(f"/collections/posts/records/{made['id']}")
        got = [await stream.event() for _ in range(3)]
    assert [(g[1], g[2]["action"], g[2]["record"]["id"]) for g in got] == [
        ("posts/*", "create", made["id"]), ("posts/*", "update", made["id"]),
        ("posts/*", "delete", made["id"])]
    assert got[1][2]["record"]["views"] == 3 and got[0][0] == client_id


async def test_record_topic_and_options(cloud: Cloud, api: Api, posts: dict[str, str]) -> None:
    options = quote(json.dumps({"query": {"filter": "views > 25", "expand": "author",
                                          "fields": "id,views,expand.author.name"}}))
    filtered = f"posts/*?options={options}"
    one = f"posts/{posts['p1']}"
    async with SseStream(cloud.host.public, PATH, {}) as stream:
        client_id = await _connect(stream)
        await api.post("/realtime", {"clientId": client_id, "subscriptions": [filtered, one]})
        await api.patch(f"/collections/posts/records/{posts['p0']}", {"views": 1})  # neither
        await api.patch(f"/collections/posts/records/{posts['p1']}", {"views": 11})  # one
        await api.patch(f"/collections/posts/records/{posts['p4']}", {"views": 41})  # filtered
        first, second = await stream.event(), await stream.event()
    assert (first[1], first[2]["record"]["id"]) == (one, posts["p1"])
    assert second[1] == filtered
    assert second[2]["record"] == {"id": posts["p4"], "views": 41,
                                   "expand": {"author": {"name": "Ann"}}}


async def test_events_follow_the_view_rule(cloud: Cloud, api: Api) -> None:
    await api.collection("notes", [{"name": "owner", "type": "text"}],
                         viewRule="owner = @request.auth.id")
    bob = await api_for(cloud, user="bob", roles=("editor",))
    async with SseStream(cloud.host.public, PATH, {}) as stream:
        client_id = await _connect(stream)
        await bob.post("/realtime", {"clientId": client_id, "subscriptions": ["notes/*"]})
        hidden = await api.create("notes", {"owner": "alice"})
        await api.delete(f"/collections/notes/records/{hidden['id']}")
        mine = await api.create("notes", {"owner": "bob"})
        await api.delete(f"/collections/notes/records/{mine['id']}")
        got = [await stream.event(), await stream.event()]
    assert [(g[2]["action"], g[2]["record"]["id"]) for g in got] == [
        ("create", mine["id"]), ("delete", mine["id"])]


async def test_other_orgs_never_receive(cloud: Cloud, api: Api, posts: dict[str, str]) -> None:
    beta = await api_for(cloud, org="beta", user="mallory", roles=("owner",))
    await beta.collection("posts", [{"name": "title", "type": "text"}])
    async with SseStream(cloud.host.public, PATH, {}) as stream:
        client_id = await _connect(stream)
        await beta.post("/realtime", {"clientId": client_id,
                                      "subscriptions": ["posts/*", "*", f"posts/{posts['p0']}"]})
        await api.create("posts", {"title": "acme secret"})
        await api.patch(f"/collections/posts/records/{posts['p0']}", {"views": 5})
        own = await beta.create("posts", {"title": "beta own"})
        _, _, data = await stream.event()
    assert data["record"]["id"] == own["id"] and data["record"]["title"] == "beta own"


async def test_subscriptions_belong_to_one_identity(cloud: Cloud, api: Api) -> None:
    beta = await api_for(cloud, org="beta", user="mallory", roles=("owner",))
    bob = await api_for(cloud, user="bob", roles=("editor",))
    async with SseStream(cloud.host.public, PATH, {}) as stream:
        client_id = await _connect(stream)
        assert (await api.post("/realtime", {"clientId": client_id,
                                             "subscriptions": ["posts/*"]})).status_code == 204
        body = {"clientId": client_id, "subscriptions": ["*"]}
        assert_error(await beta.post("/realtime", body), 403)
        assert_error(await bob.post("/realtime", body), 403)
        anonymous = await cloud.client.post("/v1/base/api/realtime", json=body)
        assert_error(anonymous, 401)


@pytest.mark.parametrize(("body", "status"), [
    ({"clientId": "nope", "subscriptions": []}, 404),
    ({"subscriptions": []}, 404),
    ([1], 400),
    ({"clientId": "x", "subscriptions": "posts"}, 404),
], ids=["unknown-client", "no-client", "not-object", "not-list"])
async def test_bad_subscribe_requests(api: Api, body: object, status: int) -> None:
    assert_error(await api.post("/realtime", body), status)


async def test_bad_topics_are_400(cloud: Cloud, api: Api) -> None:
    async with SseStream(cloud.host.public, PATH, {}) as stream:
        client_id = await _connect(stream)
        for topics in (["posts/*?options=notjson"], [""], ["x" * 3000], [1]):
            r = await api.post("/realtime", {"clientId": client_id, "subscriptions": topics})
            assert_error(r, 400)


async def test_streams_are_bounded_per_address_per_org_and_unclaimed(
        cloud: Cloud, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from subsystems.base import realtime

    monkeypatch.setattr(realtime, "MAX_UNBOUND_PER_SOURCE", 2)
    monkeypatch.setattr(realtime, "MAX_PER_ORG", 3)
    beta = await api_for(cloud, org="beta")

    async def refused(headers: dict[str, str]) -> dict[str, object]:
        r = await cloud.client.get(PATH, headers=headers)  # refused: no stream to hold open
        assert r.headers["retry-after"] == "5"
        return assert_error(r, 503)

    async with SseStream(cloud.host.public, PATH, {}) as one, \
            SseStream(cloud.host.public, PATH, {}) as two:
        first, _ = await _connect(one), await _connect(two)
        # A third stream without a token from this address waits; one with a token does not.
        assert "without a token" in str((await refused({}))["message"])
        async with SseStream(cloud.host.public, PATH, beta.headers) as bound:
            await _connect(bound)
        # Claiming a stream frees its slot among the unclaimed.
        r = await api.post("/realtime", {"clientId": first, "subscriptions": ["posts"]})
        assert r.status_code == 204, r.text
        async with SseStream(cloud.host.public, PATH, {}) as three:
            third = await _connect(three)
            # acme now holds one bound stream; two more fill its share, then it is full,
            # and beta is not.
            async with SseStream(cloud.host.public, PATH, api.headers) as a, \
                    SseStream(cloud.host.public, PATH, api.headers) as b:
                await _connect(a), await _connect(b)
                assert "this org" in str((await refused(api.headers))["message"])
                r = await api.post("/realtime", {"clientId": third, "subscriptions": ["posts"]})
                assert_error(r, 503)  # nor may an unclaimed stream join it
                async with SseStream(cloud.host.public, PATH, beta.headers) as other:
                    await _connect(other)
    # Every stream that ended gave its slot back.
    async with SseStream(cloud.host.public, PATH, {}) as one, \
            SseStream(cloud.host.public, PATH, {}) as two, \
            SseStream(cloud.host.public, PATH, api.headers) as a, \
            SseStream(cloud.host.public, PATH, api.headers) as b, \
            SseStream(cloud.host.public, PATH, api.headers) as c:
        for stream in (one, two, a, b, c):
            await _connect(stream)
