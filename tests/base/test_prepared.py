"""Prepared reads: SQL compiled once per collection, caller and query, never shared wrongly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from cloud import Cloud
from sqlalchemy.dialects import sqlite

from subsystems.base.collections import Schema
from subsystems.base.filter_parse import varies
from subsystems.base.prepared import CACHE_SIZE, cached, caller_key, prepare

from .support import Api, api_for, assert_error

FIELDS = [{"name": "title", "type": "text"}, {"name": "owner", "type": "text"},
          {"name": "done", "type": "bool"}, {"name": "score", "type": "number"},
          {"name": "meta", "type": "json"}, {"name": "secret", "type": "text", "hidden": True}]
OWNED = "owner = @request.auth.id"


async def test_each_caller_gets_its_own_rule(cloud: Cloud, api: Api) -> None:
    await api.collection("notes", FIELDS, listRule=OWNED, viewRule=OWNED)
    bob = await api_for(cloud, user="bob", roles=("editor",))
    eve = await api_for(cloud, user="eve", roles=("editor",))
    bobs = await api.create("notes", {"title": "b", "owner": "bob", "secret": "s1"})
    eves = await api.create("notes", {"title": "e", "owner": "eve", "secret": "s2"})
    for _ in range(3):  # the second and third rounds run what the first one prepared
        assert (await bob.get(f"/collections/notes/records/{bobs['id']}")).status_code == 200
        assert_error(await eve.get(f"/collections/notes/records/{bobs['id']}"), 404)
        assert_error(await bob.get(f"/collections/notes/records/{eves['id']}"), 404)
        assert [i["title"] for i in await bob.items("notes")] == ["b"]
        assert [i["title"] for i in await eve.items("notes")] == ["e"]
        # The org owner is an admin: no rule, and hidden fields shown.
        assert (await api.get(f"/collections/notes/records/{eves['id']}")).json()["secret"] == "s2"
        assert "secret" not in (await eve.get(f"/collections/notes/records/{eves['id']}")).json()


def test_members_share_statements_unless_a_rule_reads_the_request() -> None:
    from hanzocloud.identity import Identity

    bob, eve = (Identity(org="acme", user=u, roles=("editor",)) for u in ("bob", "eve"))
    plain = ("done = true", "score > 1")
    assert caller_key(bob, False, plain) == caller_key(eve, False, plain)
    assert caller_key(bob, True, plain) != caller_key(bob, False, plain)  # admins bypass
    assert caller_key(bob, False, (None, None)) == caller_key(eve, False, (None,))
    for texts in ((OWNED,), ("done = true", "@request.method = 'GET'")):
        assert caller_key(bob, False, texts) != caller_key(eve, False, texts)


async def test_admins_and_members_never_share_a_statement(cloud: Cloud, api: Api) -> None:
    await api.collection("notes", FIELDS, listRule="done = true", viewRule="done = true")
    undone = await api.create("notes", {"title": "u", "done": False, "secret": "s"})
    done = await api.create("notes", {"title": "d", "done": True, "secret": "s"})
    bob = await api_for(cloud, user="bob", roles=("editor",))
    eve = await api_for(cloud, user="eve", roles=("editor",))
    for first, then in ((bob, api), (api, eve)):  # whichever prepares first
        for who in (first, then):
            member = who is not api
            r = await who.get(f"/collections/notes/records/{undone['id']}")
            assert r.status_code == (404 if member else 200)
            got = (await who.get(f"/collections/notes/records/{done['id']}")).json()
            assert ("secret" in got) is not member
            assert len(await who.items("notes")) == (1 if member else 2)


async def test_values_keep_their_types(api: Api) -> None:
    await api.collection("notes", FIELDS)
    made = await api.create("notes", {"title": "t", "done": True, "score": 2.5,
                                      "meta": {"a": [1, None]}})
    for _ in range(2):
        got = (await api.get(f"/collections/notes/records/{made['id']}")).json()
        assert got == {**made, "secret": ""} and got["done"] is True
        assert (await api.items("notes"))[0] == got


async def test_schema_change_starts_afresh(cloud: Cloud, api: Api) -> None:
    made = await api.collection("notes", [{"name": "title", "type": "text"}])
    rec = await api.create("notes", {"title": "x"})
    path = f"/collections/notes/records/{rec['id']}"
    assert "extra" not in (await api.get(path)).json()
    assert "extra" not in (await api.items("notes", filter="title = 'x'"))[0]
    title = next(f for f in made["fields"] if f["name"] == "title")
    r = await api.patch("/collections/notes", {"fields": [title, {"name": "extra",
                                                                  "type": "number"}]})
    assert r.status_code == 200, r.text
    assert (await api.get(path)).json()["extra"] == 0
    assert (await api.items("notes", filter="title = 'x'"))[0]["extra"] == 0
    r = await api.patch("/collections/notes", {"viewRule": None})
    assert r.status_code == 200, r.text
    member = await api_for(cloud, user="bob", roles=("editor",))
    assert_error(await member.get(path), 403)


async def test_list_pages_and_filters_are_separate_statements(api: Api) -> None:
    await api.collection("notes", FIELDS)
    for n in range(5):
        await api.create("notes", {"title": f"t{n}", "score": n})
    for _ in range(2):
        r = await api.get("/collections/notes/records", perPage=2, page=2, sort="score")
        assert [i["score"] for i in r.json()["items"]] == [2, 3]
        assert r.json()["totalItems"] == 5
        r = await api.get("/collections/notes/records", perPage=2, page=1, sort="-score",
                          filter="score >= 1")
        assert [i["score"] for i in r.json()["items"]] == [4, 3]
        assert r.json()["totalItems"] == 4
        r = await api.get("/collections/notes/records", perPage=2, skipTotal=1)
        assert r.json()["totalItems"] == -1
        # Totals from the page itself (a short last page) or from a count.
        for page, per_page, got in ((3, 2, [4]), (1, 5, [0, 1, 2, 3, 4]), (4, 2, []),
                                    (2, 5, []), (1, 10, [0, 1, 2, 3, 4])):
            r = await api.get("/collections/notes/records", perPage=per_page, page=page,
                              sort="score")
            body = r.json()
            assert [i["score"] for i in body["items"]] == got
            assert (body["totalItems"], body["totalPages"]) == (5, -(-5 // per_page))
        r = await api.get("/collections/notes/records", filter="score > 99")
        assert (r.json()["totalItems"], r.json()["totalPages"]) == (0, 0)


async def test_bad_filters_stay_errors(api: Api) -> None:
    await api.collection("notes", FIELDS)
    for _ in range(2):
        assert_error(await api.get("/collections/notes/records", filter="title = "), 400)
        assert_error(await api.get("/collections/notes/records", filter="nope = 1"), 400)


def test_varies() -> None:
    assert varies("created > @now") and varies("a = 1 || (b = 2 && @hour > 3)")
    assert varies("@todayStart <= updated") and varies("@yesterday < created")
    assert varies("@request.headers.x = 1") and varies("a = 1 || b = @request.query.q")
    assert varies("@request.context = 'realtime'")
    assert not varies("owner = @request.auth.id && @request.method = 'GET'")
    assert not varies("@collection.members.user ?= @request.auth.id")
    assert not varies("") and not varies(None)


def test_clock_rules_are_compiled_every_time() -> None:
    schema = Schema([])
    built: list[str] = []

    def build() -> Any:
        built.append("x")
        return None

    for _ in range(2):
        cached(schema, "steady", ("owner = @request.auth.id", None), build)
        cached(schema, "clock", ("created > @now",), build)
    assert len(built) == 3 and list(schema.prepared) == ["steady"]


def test_cache_is_bounded() -> None:
    schema = Schema([])
    for n in range(CACHE_SIZE + 10):
        cached(schema, n, (), lambda: None)
    assert len(schema.prepared) == CACHE_SIZE and 0 not in schema.prepared
    assert CACHE_SIZE + 9 in schema.prepared


def test_prepare_binds_in_order_and_refuses_what_it_cannot_run() -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Text), sa.Column("b", sa.Boolean),
                     sa.Column("x", sa.Float))
    dialect = sqlite.dialect()
    query = sa.select(table).where(table.c.id == sa.bindparam("rid", ""),
                                   table.c.b == sa.true(), table.c.id.in_(["a", "b"]),
                                   table.c.x > 2)
    made = prepare(query, dialect, slots=("rid",))
    assert made is not None and made.sql.count("?") == len(made.params) == 4
    assert made.params[1:] == ("a", "b", 2.0) and made.slots == ((0, "rid"),)
    assert prepare(query, dialect, slots=("missing",)) is None
    odd = sa.select(table).where(
        sa.bindparam("d", Decimal("1.5"), sa.types.NullType()).is_not(None))
    assert prepare(odd, dialect) is None


async def test_list_items_are_presented_as_a_view_presents_them(cloud: Cloud,
                                                                 api: Api) -> None:
    # Lists present their rows with a presenter built once per collection, caller kind and
    # columns; a view presents its row field by field. Both must give the same JSON, for
    # every field type, stored defaults included, for admins and for members.
    await api.collection("tags", [{"name": "label", "type": "text"}])
    tag = await api.create("tags", {"label": "t"})
    tags = (await api.get("/collections/tags")).json()["id"]
    fields = [
        {"name": "title", "type": "text"}, {"name": "score", "type": "number"},
        {"name": "done", "type": "bool"}, {"name": "mail", "type": "email"},
        {"name": "site", "type": "url"}, {"name": "due", "type": "date"},
        {"name": "stamp", "type": "autodate", "onCreate": True, "onUpdate": True},
        {"name": "kind", "type": "select", "values": ["a", "b"], "maxSelect": 1},
        {"name": "kinds", "type": "select", "values": ["a", "b"], "maxSelect": 2},
        {"name": "meta", "type": "json"},
        {"name": "tag", "type": "relation", "collectionId": tags, "maxSelect": 1},
        {"name": "tagged", "type": "relation", "collectionId": tags, "maxSelect": 5},
        {"name": "secret", "type": "text", "hidden": True}]
    r = await api.post("/collections", {"name": "every", "fields": fields, "listRule": "",
                                        "viewRule": ""})
    assert r.status_code == 200, r.text
    await api.create("every", {})  # every field at its stored default
    await api.create("every", {
        "title": "x", "score": 2.5, "done": True, "mail": "a@b.co", "site": "https://x.io",
        "due": "2026-01-02 03:04:05.000Z", "kind": "b", "kinds": ["a", "b"],
        "meta": {"k": [1, None, "s"]}, "tag": tag["id"], "tagged": [tag["id"]],
        "secret": "hush"})
    await api.create("every", {"score": 7, "meta": None, "kinds": []})
    member = await api_for(cloud, user="bob", roles=("editor",))
    for who in (api, member):
        for _ in range(2):  # prepared the first time, run as prepared the second
            listed = await who.items("every", sort="created")
            viewed = [(await who.get(f"/collections/every/records/{i['id']}")).json()
                      for i in listed]
            assert listed == viewed and len(listed) == 3
            assert ("secret" in listed[1]) is (who is api)


async def test_statements_that_cannot_be_prepared_run_through_sqlalchemy(
        api: Api, monkeypatch: Any) -> None:
    import subsystems.base.records as records

    monkeypatch.setattr(records, "prepare", lambda *_, **__: None)  # as for odd binds
    await api.collection("notes", FIELDS)
    for n in range(3):
        await api.create("notes", {"title": f"t{n}", "score": n, "meta": {"n": n}})
    for _ in range(2):
        listed = await api.items("notes", sort="-score")
        assert [(i["title"], i["score"], i["meta"]) for i in listed] == [
            ("t2", 2, {"n": 2}), ("t1", 1, {"n": 1}), ("t0", 0, {"n": 0})]
        assert listed == [(await api.get(f"/collections/notes/records/{i['id']}")).json()
                          for i in listed]
        page = (await api.get("/collections/notes/records", perPage=2, sort="score")).json()
        assert page["totalItems"] == 3 and [i["score"] for i in page["items"]] == [0, 1]
