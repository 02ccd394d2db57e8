"""A member's `filter` and `sort` reach, through relations, only records the member may list.

Otherwise a filter could read a forbidden record's fields one guess at a time
(`ref.secret ~ 'a%'`, then `'ab%'`, …), and a sort could order by them.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from cloud import Cloud

from .support import Api, SseStream, api_for

LOCKED = {k: None for k in ("listRule", "viewRule", "createRule", "updateRule", "deleteRule")}


async def _setup(api: Api) -> dict[str, str]:
    secrets = await api.collection("secrets", [{"name": "secret", "type": "text"},
                                               {"name": "owner", "type": "text"},
                                               {"name": "meta", "type": "json"}], **LOCKED)
    await api.collection("posts", [
        {"name": "title", "type": "text"},
        {"name": "ref", "type": "relation", "collectionId": secrets["id"]},
        {"name": "refs", "type": "relation", "collectionId": secrets["id"], "maxSelect": 5}])
    ids = {}
    for title, secret, owner in (("pa", "hunter2", "bob"), ("pb", "aardvark", "eve")):
        made = await api.create("secrets", {"secret": secret, "owner": owner,
                                            "meta": {"k": secret}})
        ids[title] = (await api.create("posts", {"title": title, "ref": made["id"],
                                                 "refs": [made["id"]]}))["id"]
    return ids


async def titles(who: Api, **params: str) -> list[str]:
    return [i["title"] for i in await who.items("posts", **params)]


async def test_paths_into_a_locked_collection_match_nothing(cloud: Cloud, api: Api) -> None:
    await _setup(api)
    bob = await api_for(cloud, user="bob", roles=("editor",))
    for flt in ("ref.secret ~ 'hunt%'", "ref.secret = 'hunter2'", "refs.secret ?= 'hunter2'",
                "ref.secret:length = 7", "ref.meta.k = 'hunter2'",
                "refs.secret:lower ?= 'hunter2'"):
        assert await titles(api, filter=flt) == ["pa"], flt  # admins reach everything
        assert await titles(bob, filter=flt) == [], flt
    assert (await titles(api, filter="ref.id != ''"), await titles(bob, filter="ref.id != ''")
            ) == (["pa", "pb"], [])
    # Negations do not help either: an unreachable record is no record.
    assert await titles(bob, filter="ref.secret != 'hunter2'") == []
    assert sorted(await titles(bob, filter="refs.secret = 'x'")) == ["pa", "pb"]  # none left
    # Sorting by it orders as if the relation were empty (then by insertion).
    for sort in ("ref.secret", "-ref.secret"):
        assert await titles(bob, sort=sort) == ["pa", "pb"], sort
    assert await titles(api, sort="ref.secret") == ["pb", "pa"]
    assert await titles(api, sort="-ref.secret") == ["pa", "pb"]


async def test_paths_apply_the_targets_list_rule_per_caller(cloud: Cloud, api: Api) -> None:
    await _setup(api)
    r = await api.patch("/collections/secrets", {"listRule": "owner = @request.auth.id"})
    assert r.status_code == 200, r.text
    bob = await api_for(cloud, user="bob", roles=("editor",))
    eve = await api_for(cloud, user="eve", roles=("editor",))
    for _ in range(2):  # the second round would reuse whatever the first one prepared
        assert await titles(bob, filter="ref.secret != ''") == ["pa"]
        assert await titles(eve, filter="ref.secret != ''") == ["pb"]
        assert await titles(bob, filter="ref.secret = 'aardvark'") == []
        assert await titles(eve, sort="-ref.secret") == ["pb", "pa"]
        assert await titles(bob, sort="-ref.secret") == ["pa", "pb"]
        assert await titles(bob, sort="ref.secret") == ["pb", "pa"]  # NULL sorts first
    r = await api.patch("/collections/secrets", {"listRule": ""})
    assert r.status_code == 200, r.text
    assert await titles(bob, filter="ref.secret = 'aardvark'") == ["pb"]


async def test_realtime_filters_reach_what_the_subscriber_may_list(cloud: Cloud,
                                                                   api: Api) -> None:
    await _setup(api)
    bob = await api_for(cloud, user="bob", roles=("editor",))
    options = json.dumps({"query": {"filter": "ref.secret ~ 'h%'"}})
    guess = f"posts/*?options={quote(options)}"
    async with SseStream(cloud.host.public, "/v1/base/api/realtime", {}) as stream:
        client_id = (await stream.event())[0]
        r = await bob.post("/realtime", {"clientId": client_id,
                                         "subscriptions": [guess, "posts/*"]})
        assert r.status_code == 204, r.text
        secret = (await api.items("secrets"))[0]
        await api.create("posts", {"title": "pc", "ref": secret["id"]})
        got = await stream.events_until_quiet()
    assert [(name, data["record"]["title"]) for _, name, data in got] == [("posts/*", "pc")]
