"""Records API: CRUD shapes, validation per field type, list parameters, expand, cascades."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cloud import Cloud
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import API, Api, api_for, assert_error

DATE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$")

TYPED = [
    {"name": "t", "type": "text", "min": 2, "max": 5, "pattern": "^[a-z]+$"},
    {"name": "n", "type": "number", "min": 0, "max": 100, "onlyInt": True},
    {"name": "b", "type": "bool"},
    {"name": "e", "type": "email", "exceptDomains": ["bad.com"]},
    {"name": "u", "type": "url"},
    {"name": "d", "type": "date", "min": "2000-01-01"},
    {"name": "s", "type": "select", "values": ["x", "y"]},
    {"name": "m", "type": "select", "values": ["x", "y", "z"], "maxSelect": 2},
    {"name": "j", "type": "json", "maxSize": 50},
    {"name": "r", "type": "text", "required": True},
    {"name": "at", "type": "autodate", "onCreate": True, "onUpdate": True},
]


async def test_crud_shapes(api: Api) -> None:
    await api.collection("things", TYPED)
    rec = await api.create("things", {"t": "abc", "n": 7, "b": True, "e": "a@b.co",
                                      "u": "https://x.io/p", "d": "2024-01-01T10:00:00Z",
                                      "s": "x", "m": ["x", "z"], "j": {"k": [1]}, "r": "req"})
    assert re.fullmatch(r"[a-z0-9]{15}", rec["id"])
    assert DATE.match(rec["created"]) and DATE.match(rec["updated"]) and DATE.match(rec["at"])
    assert rec["collectionName"] == "things" and rec["collectionId"]
    assert rec["d"] == "2024-01-01 10:00:00.000Z" and rec["m"] == ["x", "z"]
    assert rec["j"] == {"k": [1]} and rec["b"] is True and rec["n"] == 7
    got = (await api.get(f"/collections/things/records/{rec['id']}")).json()
    assert got == rec
    r = await api.patch(f"/collections/things/records/{rec['id']}", {"n": 8, "m": []})
    assert r.status_code == 200 and r.json()["n"] == 8 and r.json()["m"] == []
    assert r.json()["t"] == "abc" and r.json()["updated"] >= rec["updated"]
    assert (await api.delete(f"/collections/things/records/{rec['id']}")).status_code == 204
    assert_error(await api.get(f"/collections/things/records/{rec['id']}"), 404)


async def test_defaults_and_custom_id(api: Api) -> None:
    await api.collection("things", TYPED)
    rec = await api.create("things", {"id": "abcdefghij12345", "r": "x"})
    assert rec["id"] == "abcdefghij12345"
    assert (rec["t"], rec["n"], rec["b"], rec["s"], rec["m"], rec["j"]) == ("", 0, False, "",
                                                                             [], None)
    assert_error(await api.post("/collections/things/records",
                                {"id": "abcdefghij12345", "r": "x"}), 400)


BAD_VALUES: list[tuple[str, Any, str]] = [
    ("t", "a", "validation_min_text_constraint"),
    ("t", "abcdef", "validation_max_text_constraint"),
    ("t", "ABC", "validation_invalid_format"),
    ("t", {"x": 1}, "validation_invalid_value"),
    ("n", "seven", "validation_invalid_number"),
    ("n", 1.5, "validation_only_int_constraint"),
    ("n", 101, "validation_max_number_constraint"),
    ("n", -1, "validation_min_number_constraint"),
    ("n", True, "validation_invalid_number"),
    ("b", "maybe", "validation_invalid_bool"),
    ("e", "not-an-email", "validation_is_email"),
    ("e", "a@bad.com", "validation_domain_not_allowed"),
    ("u", "javascript:alert(1)", "validation_is_url"),
    ("u", "http://[::1", "validation_is_url"),
    ("d", "yesterday", "validation_invalid_date"),
    ("d", "1999-12-31", "validation_min_date_constraint"),
    ("s", "q", "validation_invalid_value"),
    ("m", ["x", "y", "z"], "validation_too_many_values"),
    ("j", {"big": "x" * 100}, "validation_json_size_limit"),
    ("r", "", "validation_required"),
]


@pytest.mark.parametrize(("name", "value", "code"), BAD_VALUES,
                         ids=[f"{b[0]}:{b[2]}" for b in BAD_VALUES])
async def test_invalid_values_are_400_and_store_nothing(api: Api, name: str, value: Any,
                                                        code: str) -> None:
    await api.collection("things", TYPED)
    body = {"r": "req", name: value}
    err = assert_error(await api.post("/collections/things/records", body), 400)
    assert err["data"][name]["code"] == code
    assert await api.items("things") == []


DEEP = b"[" * 5000 + b"]" * 5000  # deeper than the JSON decoder goes


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 400), (b"[1, 2]", 400), (b"", 400), (DEEP, 400),
    (b'{"r": "x", "j": ' + DEEP + b"}", 400)],
    ids=["garbage", "array", "empty", "too deep", "too deep inside"])
async def test_bad_bodies(api: Api, body: bytes, status: int) -> None:
    await api.collection("things", TYPED)
    r = await api.client.post(API + "/collections/things/records", content=body,
                              headers={**api.headers, "Content-Type": "application/json"})
    assert_error(r, status)


async def test_json_nested_too_deeply_is_400_everywhere(cloud: Any, api: Api) -> None:
    import json
    from urllib.parse import quote

    from .support import SseStream

    await api.collection("things", TYPED)
    json_headers = {**api.headers, "Content-Type": "application/json"}
    for path in ("/collections/things/records", "/batch", "/collections"):
        r = await api.client.post(API + path, content=DEEP, headers=json_headers)
        assert "nested too deeply" in assert_error(r, 400)["message"], path
    r = await api.client.post(API + "/collections/things/records", headers=api.headers,
                              files={"@jsonPayload": (None, DEEP.decode())})
    assert "nested too deeply" in assert_error(r, 400)["message"]
    async with SseStream(cloud.host.public, API + "/realtime", {}) as stream:
        client_id = (await stream.event())[0]
        topic = "things?options=" + "[" * 1230 + "]" * 1230  # within a topic's 2,500
        r = await api.post("/realtime", {"clientId": client_id, "subscriptions": [topic]})
        assert "nested too deeply" in assert_error(r, 400)["message"]
        ok = "things?options=" + quote(json.dumps({"query": {"filter": "r != ''"}}))
        r = await api.post("/realtime", {"clientId": client_id, "subscriptions": [ok]})
        assert r.status_code == 204, r.text
    assert await api.items("things") == []


async def test_unsupported_media_type(api: Api) -> None:
    await api.collection("things", TYPED)
    r = await api.client.post(API + "/collections/things/records", content=b"r=1",
                              headers={**api.headers, "Content-Type": "text/plain"})
    assert_error(r, 415)


async def test_form_bodies_are_accepted(api: Api) -> None:
    await api.collection("things", TYPED)
    r = await api.client.post(API + "/collections/things/records", headers=api.headers,
                              data={"r": "form", "n": "5", "b": "true", "m": ["x", "y"]})
    assert r.status_code == 200, r.text
    assert (r.json()["n"], r.json()["b"], r.json()["m"]) == (5, True, ["x", "y"])


@pytest.mark.parametrize("rid", ["short", "UPPERCASEXXXXXX", "../../etc/passw", "a" * 16],
                         ids=["short", "upper", "traversal", "long"])
async def test_malformed_ids_are_404(api: Api, rid: str) -> None:
    await api.collection("things", TYPED)
    assert_error(await api.get(f"/collections/things/records/{rid}"), 404)
    assert_error(await api.patch(f"/collections/things/records/{rid}", {"r": "x"}), 404)


async def test_pagination_and_totals(api: Api, posts: dict[str, str]) -> None:
    r = (await api.get("/collections/posts/records", perPage=2, page=2, sort="title")).json()
    assert (r["page"], r["perPage"], r["totalItems"], r["totalPages"]) == (2, 2, 5, 3)
    assert [i["title"] for i in r["items"]] == ["p2", "p3"]
    r = (await api.get("/collections/posts/records", perPage=2, page=9)).json()
    assert (r["totalItems"], r["totalPages"], r["items"]) == (5, 3, [])
    r = (await api.get("/collections/posts/records", page=10**30)).json()
    assert r["items"] == [] and r["totalItems"] == 5
    r = (await api.get("/collections/posts/records", perPage=2, skipTotal=1)).json()
    assert (r["totalItems"], r["totalPages"]) == (-1, -1)
    r = (await api.get("/collections/posts/records", perPage=10_000)).json()
    assert r["perPage"] == 500
    assert_error(await api.get("/collections/posts/records", page="x"), 400)


@pytest.mark.parametrize(("sort", "titles"), [
    ("-views", ["p4", "p3", "p2", "p1", "p0"]),
    ("published,-views", ["p3", "p1", "p4", "p2", "p0"]),
    ("+title", ["p0", "p1", "p2", "p3", "p4"]),
    # Ann's posts, then Bob's; by views within each author.
    ("author.name,-views", ["p4", "p1", "p0", "p3", "p2"]),
    # Two hops: Ann's org is Home, Bob has none (NULL sorts first ascending, last descending).
    ("-author.org.name,title", ["p0", "p1", "p4", "p2", "p3"]),
    ("-meta.n", ["p4", "p3", "p2", "p1", "p0"]),
], ids=["desc", "multi", "plus", "relation", "two-hops", "json"])
async def test_sort(api: Api, posts: dict[str, str], sort: str, titles: list[str]) -> None:
    assert [i["title"] for i in await api.items("posts", sort=sort)] == titles


async def test_random_sort_and_bad_sort(api: Api, posts: dict[str, str]) -> None:
    assert len(await api.items("posts", sort="@random")) == 5
    for bad, needle in (("nosuch", "no such field"), ("author.nosuch", "no such field"),
                        ("tags.x", "only a single relation"), ("title.x", "only a single"),
                        ("id.x", "no sub-fields"), ("author..name", "not a field path"),
                        ("meta.$x", "not a field path"),
                        (".".join(["author"] + ["org"] * 7 + ["name"]), "limited to 6")):
        r = await api.get("/collections/posts/records", sort=bad)
        assert needle in assert_error(r, 400)["message"], bad


async def test_hidden_fields_sort_only_for_admins(cloud: Cloud, api: Api) -> None:
    await api.collection("people", [{"name": "name", "type": "text"},
                                    {"name": "salary", "type": "number", "hidden": True}])
    for name, salary in (("a", 3), ("b", 1), ("c", 2)):
        await api.create("people", {"name": name, "salary": salary})
    assert [i["name"] for i in await api.items("people", sort="salary")] == ["b", "c", "a"]
    bob = await api_for(cloud, user="bob", roles=("editor",))
    r = await bob.get("/collections/people/records", sort="-salary")
    assert "hidden" in assert_error(r, 400)["message"]


async def test_fields_and_nested_expand(api: Api, posts: dict[str, str]) -> None:
    items = await api.items("posts", filter="title = 'p0'", expand="author.org",
                            fields="id,title,expand.author.name,expand.author.expand")
    assert items == [{"id": posts["p0"], "title": "p0", "expand": {"author": {
        "name": "Ann", "expand": {"org": {
            "collectionId": items[0]["expand"]["author"]["expand"]["org"]["collectionId"],
            "collectionName": "authors", "id": posts["home"], "name": "Home", "org": "",
            "created": items[0]["expand"]["author"]["expand"]["org"]["created"],
            "updated": items[0]["expand"]["author"]["expand"]["org"]["updated"]}}}}}]
    one = (await api.get(f"/collections/posts/records/{posts['p2']}",
                         expand="author,nosuch", fields="*,expand.author.name")).json()
    assert one["expand"] == {"author": {"name": "Bob"}} and one["views"] == 20


async def test_multi_relation_expand_keeps_order(api: Api, posts: dict[str, str]) -> None:
    await api.collection("teams", [{"name": "members", "type": "relation",
                                    "collectionId": "authors", "maxSelect": 5}])
    team = await api.create("teams", {"members": [posts["bob"], posts["ann"]]})
    got = (await api.get(f"/collections/teams/records/{team['id']}", expand="members")).json()
    assert [m["name"] for m in got["expand"]["members"]] == ["Bob", "Ann"]


async def test_missing_relation_target_is_400(api: Api, posts: dict[str, str]) -> None:
    err = assert_error(await api.post("/collections/posts/records",
                                      {"title": "x", "author": "zzzzzzzzzzzzzzz"}), 400)
    assert err["data"]["author"]["code"] == "validation_missing_rel_records"


async def test_modifiers(api: Api, posts: dict[str, str]) -> None:
    path = f"/collections/posts/records/{posts['p1']}"
    r = await api.patch(path, {"views+": 5, "tags+": "c", "tags-": "a"})
    assert (r.json()["views"], r.json()["tags"]) == (15, ["b", "c"])
    r = await api.patch(path, {"+tags": "a", "views-": 15})
    assert (r.json()["views"], r.json()["tags"]) == (0, ["a", "b", "c"])


async def test_delete_cascades_and_clears(api: Api, posts: dict[str, str]) -> None:
    await api.collection("comments", [
        {"name": "post", "type": "relation", "collectionId": "posts", "cascadeDelete": True},
        {"name": "mentions", "type": "relation", "collectionId": "authors", "maxSelect": 3}])
    c1 = await api.create("comments", {"post": posts["p3"], "mentions": [posts["bob"],
                                                                        posts["ann"]]})
    await api.create("comments", {"post": posts["p0"]})
    assert (await api.delete(f"/collections/posts/records/{posts['p3']}")).status_code == 204
    remaining = await api.items("comments")
    assert [c["post"] for c in remaining] == [posts["p0"]]
    assert_error(await api.get(f"/collections/comments/records/{c1['id']}"), 404)
    # a non-cascading single relation is cleared; a multi relation loses the id
    await api.create("comments", {"post": posts["p4"], "mentions": [posts["bob"],
                                                                   posts["ann"]]})
    assert (await api.delete(f"/collections/authors/records/{posts['bob']}")).status_code == 204
    assert {i["title"]: i["author"] for i in await api.items("posts")}["p2"] == ""
    mentions = [c["mentions"] for c in await api.items("comments", filter="mentions:length > 0")]
    assert mentions == [[posts["ann"]]]


async def test_required_relation_blocks_delete(api: Api, posts: dict[str, str]) -> None:
    await api.collection("pins", [{"name": "post", "type": "relation", "collectionId": "posts",
                                   "required": True}])
    await api.create("pins", {"post": posts["p0"]})
    assert "required by" in assert_error(
        await api.delete(f"/collections/posts/records/{posts['p0']}"), 400)["message"]
    assert (await api.get(f"/collections/posts/records/{posts['p0']}")).status_code == 200


async def test_hidden_fields_are_admin_only(cloud: Any, api: Api) -> None:
    from .support import api_for

    await api.collection("keys", [{"name": "label", "type": "text"},
                                  {"name": "secret", "type": "text", "hidden": True}])
    rec = await api.create("keys", {"label": "a", "secret": "s3"})
    assert rec["secret"] == "s3"
    member = await api_for(cloud, user="eve", roles=("editor",))
    got = (await member.get(f"/collections/keys/records/{rec['id']}")).json()
    assert "secret" not in got and got["label"] == "a"
    assert_error(await member.get("/collections/keys/records", filter="secret = 's3'"), 400)
    err = assert_error(await member.post("/collections/keys/records", {"secret": "x"}), 400)
    assert err["data"]["secret"]["code"] == "validation_hidden_field"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)
NAMES = st.sampled_from([f["name"] for f in TYPED] + ["id", "n+", "+m", "m-", "x"])


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(NAMES, JSON_VALUES, max_size=6))
async def test_fuzzed_bodies_never_500(api: Api, body: dict[str, Any]) -> None:
    if (await api.get("/collections/things")).status_code == 404:
        await api.collection("things", TYPED)
    r = await api.post("/collections/things/records", body)
    assert r.status_code in (200, 400), (body, r.text)
    if r.status_code == 400:
        assert_error(r, 400)


async def test_quotes_inside_strings_are_data(api: Api, posts: dict[str, str]) -> None:
    await api.create("posts", {"title": "it's \"quoted\" -- ; DROP"})
    items = await api.items("posts", filter="title = 'it\\'s \"quoted\" -- ; DROP'")
    assert [i["title"] for i in items] == ["it's \"quoted\" -- ; DROP"]


async def test_fields_excerpt_modifier(api: Api) -> None:
    await api.collection("articles", [{"name": "body", "type": "text"},
                                      {"name": "n", "type": "number"}])
    html = "<p>Hello <b>big</b>\n  world &amp; friends</p><script>alert(1)</script>"
    made = await api.create("articles", {"body": html, "n": 1})
    got = await api.items("articles", fields="id,body:excerpt(15,true),n:excerpt(2)")
    assert got == [{"id": made["id"], "body": "Hello big world...", "n": 1}]
    one = (await api.get(f"/collections/articles/records/{made['id']}",
                         fields="*,body:excerpt(200)")).json()
    assert one["body"] == "Hello big world & friends" and one["n"] == 1
    for bad in ("body:excerpt", "body:excerpt(x)", "body:upper", "body:excerpt(10,maybe)"):
        r = await api.get("/collections/articles/records", fields=bad)
        assert "unknown modifier" in assert_error(r, 400)["message"], bad
