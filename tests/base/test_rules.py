"""API rules: null = admins only, "" = any org member, otherwise a filter on the record."""

from __future__ import annotations

import pytest
from cloud import Cloud

from .support import Api, api_for, assert_error

FIELDS = [{"name": "title", "type": "text"}, {"name": "owner", "type": "text"},
          {"name": "public", "type": "bool"}]
OWNED = {
    "listRule": "public = true || owner = @request.auth.id",
    "viewRule": "public = true || owner = @request.auth.id",
    "createRule": "owner = @request.auth.id && @request.body.title != ''",
    "updateRule": "owner = @request.auth.id && @request.body.owner:isset = false",
    "deleteRule": "owner = @request.auth.id",
}


@pytest.fixture
async def members(cloud: Cloud, api: Api) -> tuple[Api, Api]:
    await api.collection("notes", FIELDS, **OWNED)
    bob = await api_for(cloud, user="bob", roles=("editor",))
    eve = await api_for(cloud, user="eve", roles=("viewer",))
    await bob.create("notes", {"title": "bob private", "owner": "bob"})
    await bob.create("notes", {"title": "bob public", "owner": "bob", "public": True})
    await eve.create("notes", {"title": "eve private", "owner": "eve"})
    return bob, eve


async def test_list_and_view_filter_by_rule(api: Api, members: tuple[Api, Api]) -> None:
    bob, eve = members
    assert {i["title"] for i in await eve.items("notes")} == {"bob public", "eve private"}
    assert len(await api.items("notes")) == 3  # the org owner is an admin: rules do not apply
    hidden = next(i for i in await bob.items("notes") if i["title"] == "bob private")
    assert_error(await eve.get(f"/collections/notes/records/{hidden['id']}"), 404)


async def test_create_rule_checks_the_new_record(members: tuple[Api, Api]) -> None:
    _, eve = members
    r = await eve.post("/collections/notes/records", {"title": "forged", "owner": "bob"})
    assert "create rule" in assert_error(r, 400)["message"]
    assert_error(await eve.post("/collections/notes/records", {"title": "", "owner": "eve"}),
                 400)
    assert "forged" not in {i["title"] for i in await eve.items("notes")}


async def test_update_and_delete_need_ownership(members: tuple[Api, Api]) -> None:
    bob, eve = members
    bobs = next(i for i in await bob.items("notes") if i["title"] == "bob public")
    path = f"/collections/notes/records/{bobs['id']}"
    assert_error(await eve.patch(path, {"title": "hacked"}), 404)
    assert_error(await eve.delete(path), 404)
    assert_error(await bob.patch(path, {"owner": "eve"}), 404)  # body rule: owner not settable
    assert (await bob.patch(path, {"title": "edited"})).json()["title"] == "edited"
    assert (await bob.delete(path)).status_code == 204


@pytest.mark.parametrize("kind", ["listRule", "viewRule", "createRule", "updateRule",
                                  "deleteRule"])
async def test_null_rule_is_admins_only(cloud: Cloud, api: Api, kind: str) -> None:
    await api.collection("locked", FIELDS, **{kind: None})
    rec = await api.create("locked", {"title": "x"})
    member = await api_for(cloud, user="bob", roles=("editor",))
    calls = {
        "listRule": member.get("/collections/locked/records"),
        "viewRule": member.get(f"/collections/locked/records/{rec['id']}"),
        "createRule": member.post("/collections/locked/records", {"title": "y"}),
        "updateRule": member.patch(f"/collections/locked/records/{rec['id']}", {"title": "z"}),
        "deleteRule": member.delete(f"/collections/locked/records/{rec['id']}"),
    }
    assert_error(await calls.pop(kind), 403)
    for call in calls.values():
        call.close()
    platform = await api_for(cloud, org="acme", user="root", roles=(), admin=True)
    assert (await platform.get(f"/collections/locked/records/{rec['id']}")).status_code == 200


async def test_empty_rule_needs_authentication(cloud: Cloud, api: Api) -> None:
    await api.collection("open", FIELDS)
    r = await cloud.client.get("/v1/base/api/collections/open/records")
    assert_error(r, 401)


async def test_rule_sees_request_auth_fields(cloud: Cloud, api: Api) -> None:
    await api.collection("staff", FIELDS, listRule="@request.auth.roles ?= 'editor'")
    await api.create("staff", {"title": "x"})
    editor = await api_for(cloud, user="bob", roles=("editor",))
    viewer = await api_for(cloud, user="eve", roles=("viewer",))
    assert len(await editor.items("staff")) == 1
    assert await viewer.items("staff") == []


async def test_expand_respects_the_target_view_rule(cloud: Cloud, api: Api) -> None:
    await api.collection("secrets", FIELDS, viewRule="owner = @request.auth.id")
    await api.collection("links", [{"name": "to", "type": "relation",
                                    "collectionId": "secrets"}])
    secret = await api.create("secrets", {"title": "s", "owner": "alice"})
    link = await api.create("links", {"to": secret["id"]})
    bob = await api_for(cloud, user="bob", roles=("editor",))
    got = (await bob.get(f"/collections/links/records/{link['id']}", expand="to")).json()
    assert "expand" not in got and got["to"] == secret["id"]
