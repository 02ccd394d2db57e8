"""What create and update rules read of the body, and bad bodies under rules."""

from __future__ import annotations

from cloud import Cloud

from .support import Api, api_for, assert_error

FIELDS = [{"name": "owner", "type": "text"}, {"name": "title", "type": "text"},
          {"name": "views", "type": "number"},
          {"name": "tags", "type": "select", "values": ["a", "b", "admin"], "maxSelect": 3}]


async def test_modifiers_are_resolved_before_the_rules_read_the_body(cloud: Cloud,
                                                                     api: Api) -> None:
    mine = "owner = @request.auth.id"
    await api.collection(
        "notes", FIELDS, listRule=mine, viewRule=mine,
        createRule=f"{mine} && @request.body.tags:isset = false",
        updateRule=f"{mine} && @request.body.views:isset = false && "
                   "(@request.body.tags:isset = false || @request.body.tags:length <= 2)")
    bob = await api_for(cloud, user="bob", roles=("editor",))
    path = "/collections/notes/records"
    for tags in ({"tags": ["admin"]}, {"tags+": ["admin"]}, {"+tags": "admin"},
                 {"tags-": "a"}):
        assert_error(await bob.post(path, {"owner": "bob", **tags}), 400)
    made = await bob.create("notes", {"owner": "bob", "title": "t"})
    for change in ({"views": 5}, {"views+": 5}, {"views-": 1}):
        assert_error(await bob.patch(f"{path}/{made['id']}", change), 404)
    # The rule reads the value the modifiers lead to, against the stored record.
    await api.patch(f"{path}/{made['id']}", {"tags": ["a", "b"]})
    assert (await bob.patch(f"{path}/{made['id']}", {"tags-": "b"})).status_code == 200
    r = await bob.patch(f"{path}/{made['id']}", {"tags+": ["b", "admin"]})  # would be three
    assert_error(r, 404)
    r = await bob.patch(f"{path}/{made['id']}", {"tags+": "b"})
    assert r.status_code == 200 and r.json()["tags"] == ["a", "b"], r.text
    stored = (await api.get(f"{path}/{made['id']}")).json()
    assert (stored["views"], stored["tags"]) == (0, ["a", "b"])
    # A record the member cannot reach is a 404 whether or not modifiers are sent.
    other = await api.create("notes", {"owner": "eve"})
    assert_error(await bob.patch(f"{path}/{other['id']}", {"tags+": "a"}), 404)
    assert_error(await bob.patch(f"{path}/zzzzzzzzzzzzzzz", {"tags+": "a"}), 404)


async def test_huge_numbers_in_a_body_a_rule_reads_are_no_500(cloud: Cloud, api: Api) -> None:
    await api.collection("notes", FIELDS + [{"name": "meta", "type": "json"}],
                         createRule="@request.body.title != '' && @request.body.meta != 1 "
                                    "&& @request.body.tags:length < 5",
                         updateRule="@request.body.views != 1")
    bob = await api_for(cloud, user="bob", roles=("editor",))
    path = "/collections/notes/records"
    for body in ({"title": 10**20}, {"title": "t", "meta": 10**30},
                 {"title": "t", "meta": 10**400}, {"title": "t", "tags": [10**30]}):
        r = await bob.post(path, body)
        assert r.status_code in (200, 400), r.text
        assert "Traceback" not in r.text
    made = await bob.create("notes", {"title": "t"})
    r = await bob.patch(f"{path}/{made['id']}", {"views": -(10**25)})
    assert r.status_code in (200, 400), r.text
    r = await bob.get(path, filter="views > 100000000000000000000000000000")
    assert r.status_code == 200, r.text


async def test_a_blocked_delete_names_the_blocking_record_to_admins_only(
        cloud: Cloud, api: Api) -> None:
    notes = await api.collection("notes", FIELDS)
    await api.collection("audit", [{"name": "note", "type": "relation",
                                    "collectionId": notes["id"], "required": True}],
                         **{k: None for k in ("listRule", "viewRule", "createRule",
                                              "updateRule", "deleteRule")})
    bob = await api_for(cloud, user="bob", roles=("editor",))
    made = await bob.create("notes", {"owner": "bob"})
    entry = await api.create("audit", {"note": made["id"]})
    message = assert_error(await bob.delete(f"/collections/notes/records/{made['id']}"),
                           400)["message"]
    assert entry["id"] not in message and "audit" not in message
    message = assert_error(await api.delete(f"/collections/notes/records/{made['id']}"),
                           400)["message"]
    assert entry["id"] in message and "audit.note" in message
