"""`@request.headers.*` and `@request.query.*` in rules and filters: read per request, never
from a statement prepared for another request."""

from __future__ import annotations

from cloud import Cloud

from .support import Api, api_for, assert_error

FIELDS = [{"name": "title", "type": "text"}, {"name": "team", "type": "text"}]
BY_HEADER = "@request.headers.x_team = team"


async def test_rules_read_the_request_headers(cloud: Cloud, api: Api) -> None:
    await api.collection("notes", FIELDS, listRule=BY_HEADER, viewRule=BY_HEADER)
    made = {team: await api.create("notes", {"title": f"for {team}", "team": team})
            for team in ("red", "blue")}
    bob = await api_for(cloud, user="bob", roles=("editor",))

    def as_team(team: str | None) -> Api:
        extra = {"X-Team": team} if team is not None else {}
        return Api(bob.client, {**bob.headers, **extra})

    for _ in range(2):  # the second round would reuse whatever the first one prepared
        for team in ("red", "blue"):
            who = as_team(team)
            assert [n["title"] for n in await who.items("notes")] == [f"for {team}"]
            other = "blue" if team == "red" else "red"
            assert (await who.get(f"/collections/notes/records/{made[team]['id']}")
                    ).status_code == 200
            assert_error(await who.get(f"/collections/notes/records/{made[other]['id']}"),
                         404)
        assert await as_team(None).items("notes") == []  # no header: the empty string
    # Header names compare case-insensitively, with `-` read as `_`; :lower applies.
    await api.patch("/collections/notes", {"listRule": "@request.headers.X_TEAM:lower = team"})
    assert [n["title"] for n in await as_team("RED").items("notes")] == ["for red"]


async def test_filters_read_the_query_string(cloud: Cloud, api: Api) -> None:
    await api.collection("notes", FIELDS)
    for team in ("red", "blue"):
        await api.create("notes", {"title": f"for {team}", "team": team})
    flt = "team = @request.query.pick"
    for _ in range(2):
        for team in ("red", "blue"):
            items = await api.items("notes", filter=flt, pick=team)
            assert [n["title"] for n in items] == [f"for {team}"]
        assert await api.items("notes", filter=flt) == []
    r = await api.get("/collections/notes/records", filter="@request.query = 'x'")
    assert_error(r, 400)


async def test_each_batch_request_reads_its_own_query_string(api: Api, cloud: Cloud) -> None:
    await api.collection("notes", FIELDS, createRule="@request.query.ok = '1'")
    bob = await api_for(cloud, user="bob", roles=("editor",))

    def create(url: str) -> dict[str, object]:
        return {"method": "POST", "url": url, "body": {"title": "t"}}

    r = await bob.post("/batch", {"requests": [
        create("/api/collections/notes/records?ok=1"),
        create("/api/collections/notes/records?ok=1&fields=title")]})
    assert r.status_code == 200, r.text
    assert r.json()[1]["body"] == {"title": "t"}
    # The batch's own query string is not a sub-request's.
    r = await bob.client.post("/v1/base/api/batch?ok=1", headers=bob.headers, json={
        "requests": [create("/api/collections/notes/records?ok=1"),
                     create("/api/collections/notes/records")]})
    assert_error(r, 400)
    assert len(await api.items("notes")) == 2  # the failed batch wrote nothing


async def test_request_context_tells_realtime_from_requests(cloud: Cloud, api: Api) -> None:
    from .support import SseStream

    rule = "@request.context != 'realtime' || team = 'live'"
    await api.collection("notes", FIELDS, listRule=rule, viewRule=rule)
    bob = await api_for(cloud, user="bob", roles=("editor",))
    async with SseStream(cloud.host.public, "/v1/base/api/realtime", {}) as stream:
        client_id = (await stream.event())[0]
        r = await bob.post("/realtime", {"clientId": client_id, "subscriptions": ["notes/*"]})
        assert r.status_code == 204, r.text
        quiet = await api.create("notes", {"title": "quiet", "team": "red"})
        live = await api.create("notes", {"title": "live", "team": "live"})
        got = await stream.event()
    # Over HTTP both are visible; realtime announced only the one its context allows.
    assert got[2]["record"]["id"] == live["id"]
    assert {n["id"] for n in await bob.items("notes")} == {quiet["id"], live["id"]}
    r = await bob.get("/collections/notes/records", filter="@request.context = 'default'")
    assert len(r.json()["items"]) == 2


def _topic(base: str, **options: object) -> str:
    import json
    from urllib.parse import quote

    return f"{base}?options={quote(json.dumps(options))}"


async def test_realtime_rules_read_each_subscriptions_headers_and_query(
        cloud: Cloud, api: Api) -> None:
    from .support import SseStream

    rule = "@request.headers.x_team = team || @request.query.team = team"
    await api.collection("notes", FIELDS, listRule=rule, viewRule=rule)
    bob = await api_for(cloud, user="bob", roles=("editor",))
    by_header = _topic("notes/*", headers={"X-Team": "red"})
    by_query = _topic("notes", query={"team": "blue", "fields": "title"})
    async with SseStream(cloud.host.public, "/v1/base/api/realtime", {}) as stream:
        client_id = (await stream.event())[0]
        r = await bob.post("/realtime", {"clientId": client_id,
                                         "subscriptions": [by_header, by_query, "notes/*"]})
        assert r.status_code == 204, r.text
        for team in ("green", "red", "blue", "last"):
            await api.create("notes", {"title": f"for {team}", "team": team})
        await api.patch("/collections/notes", {"viewRule": rule + " || team = 'last'"})
        await api.create("notes", {"title": "for last", "team": "last"})
        got = [await stream.event() for _ in range(5)]
    # Each subscription saw what its own headers or query allowed, and the plain one (which
    # sent neither) nothing until the rule let everyone see the last note; the first "last"
    # and the green one reached nobody, or they would have arrived before.
    assert [(name, data["record"]["title"]) for _, name, data in got[:2]] == [
        (by_header, "for red"), (by_query, "for blue")]
    assert got[1][2]["record"] == {"title": "for blue"}  # the topic's own fields option
    assert sorted(name for _, name, _ in got[2:]) == sorted([by_header, by_query, "notes/*"])
    assert {data["record"]["title"] for _, _, data in got[2:]} == {"for last"}


async def test_bad_subscription_options_are_400(cloud: Cloud, api: Api) -> None:
    from .support import SseStream

    await api.collection("notes", FIELDS)
    async with SseStream(cloud.host.public, "/v1/base/api/realtime", {}) as stream:
        client_id = (await stream.event())[0]
        for topic in (_topic("notes", headers=["x"]), _topic("notes", query="team=red"),
                      _topic("notes", headers={"x-team": "red\r\nx-evil: 1"}),
                      _topic("notes", query={"team": ["red"]}),
                      _topic("notes", headers={f"h{n}": "v" for n in range(51)})):
            r = await api.post("/realtime", {"clientId": client_id, "subscriptions": [topic]})
            assert_error(r, 400)
        # Numbers, booleans and null are what a query string would carry (null: absent).
        ok = _topic("notes", query={"n": 1, "b": True, "gone": None})
        r = await api.post("/realtime", {"clientId": client_id, "subscriptions": [ok]})
        assert r.status_code == 204, r.text
