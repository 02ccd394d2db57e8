"""`@collection.<name>[:alias].<field>` in API rules and filters: membership-style rules."""

from __future__ import annotations

import pytest
from cloud import Cloud

from .support import Api, api_for, assert_error

# Only members of a project (a `members` record linking user and project) see its tasks.
MEMBERS = [{"name": "user", "type": "text"}, {"name": "project", "type": "text"},
           {"name": "role", "type": "text"}]
TASKS = [{"name": "title", "type": "text"}, {"name": "project", "type": "text"}]
ADMINS_ONLY = {k: None for k in ("listRule", "viewRule", "createRule", "updateRule",
                                 "deleteRule")}
MEMBER_OF = ("@collection.members.user ?= @request.auth.id && "
             "@collection.members.project ?= project")


@pytest.fixture
async def team(cloud: Cloud, api: Api) -> tuple[Api, Api]:
    await api.collection("members", MEMBERS, **ADMINS_ONLY)
    await api.collection("tasks", TASKS, listRule=MEMBER_OF, viewRule=MEMBER_OF)
    for user, project, role in (("bob", "apollo", "dev"), ("eve", "gemini", "dev"),
                                ("eve", "apollo", "guest")):
        await api.create("members", {"user": user, "project": project, "role": role})
    for title, project in (("launch", "apollo"), ("dock", "gemini"), ("orbit", "mercury")):
        await api.create("tasks", {"title": title, "project": project})
    bob = await api_for(cloud, user="bob", roles=("editor",))
    eve = await api_for(cloud, user="eve", roles=("editor",))
    return bob, eve


async def titles(who: Api, **params: str) -> set[str]:
    return {i["title"] for i in await who.items("tasks", **params)}


async def test_a_rule_joins_another_collection_on_one_shared_row(team: tuple[Api, Api],
                                                                   api: Api) -> None:
    bob, eve = team
    assert await titles(bob) == {"launch"}
    assert await titles(eve) == {"launch", "dock"}
    assert await titles(api) == {"launch", "dock", "orbit"}  # admins bypass rules
    # Both comparisons hold on the same members row: bob is in apollo only, so a members row
    # with his id and another row with project=gemini do not combine.
    dock = next(i for i in await eve.items("tasks") if i["title"] == "dock")
    assert_error(await bob.get(f"/collections/tasks/records/{dock['id']}"), 404)
    assert (await eve.get(f"/collections/tasks/records/{dock['id']}")).status_code == 200


async def test_aliases_make_separate_joins(cloud: Cloud, api: Api,
                                           team: tuple[Api, Api]) -> None:
    bob, eve = team
    # Visible when the caller is a dev of the project, and someone else (any row) is a guest
    # of it: two joins of `members`.
    rule = (MEMBER_OF + " && @collection.members.role ?= 'dev' && "
            "@collection.members:other.project ?= project && "
            "@collection.members:other.role ?= 'guest'")
    r = await api.patch("/collections/tasks", {"listRule": rule})
    assert r.status_code == 200, r.text
    assert await titles(bob) == {"launch"}  # eve is a guest of apollo
    assert await titles(eve) == set()  # in gemini nobody is a guest; in apollo eve is one


async def test_a_plain_operator_must_hold_for_every_record(team: tuple[Api, Api],
                                                             api: Api) -> None:
    bob, _ = team
    # Every members row has a non-empty role, so this holds; then one row breaks it.
    r = await api.patch("/collections/tasks", {"listRule": "@collection.members.role != ''"})
    assert r.status_code == 200, r.text
    assert await titles(bob) == {"launch", "dock", "orbit"}
    await api.create("members", {"user": "zed", "project": "apollo", "role": ""})
    assert await titles(bob) == set()


async def test_an_empty_collection_still_lets_other_branches_hold(cloud: Cloud,
                                                                  api: Api) -> None:
    await api.collection("members", MEMBERS)
    await api.collection("tasks", TASKS, listRule=f"project = 'open' || ({MEMBER_OF})")
    await api.create("tasks", {"title": "public", "project": "open"})
    await api.create("tasks", {"title": "secret", "project": "apollo"})
    bob = await api_for(cloud, user="bob", roles=("editor",))
    assert await titles(bob) == {"public"}


async def test_client_filters_join_only_the_records_the_member_may_list(
        team: tuple[Api, Api], api: Api) -> None:
    bob, eve = team
    guests = "@collection.members.role ?= 'guest' && @collection.members.project ?= project"
    assert await titles(api, filter=guests) == {"launch"}
    # members' list rule is null (admins only): a member's filter finds no members rows, so
    # it cannot learn who belongs where, one guess at a time.
    assert await titles(eve, filter=guests) == set()
    assert await titles(bob, filter="@collection.members.user ?= 'eve'") == set()
    assert await titles(api, filter="@collection.members.user ?= 'eve'") == {
        "launch", "dock", "orbit"}
    # Each member may list their own memberships: the join reaches those only.
    r = await api.patch("/collections/members", {"listRule": "user = @request.auth.id"})
    assert r.status_code == 200, r.text
    assert await titles(eve, filter=guests) == {"launch"}
    assert await titles(bob, filter=guests) == set()
    assert await titles(bob, filter="@collection.members.user ?= 'eve'") == set()
    # A plain operator holds for every members row the caller may list.
    assert await titles(bob, filter="@collection.members.role = 'dev'") == {"launch"}
    assert await titles(eve, filter="@collection.members.role = 'dev'") == set()
    await api.patch("/collections/members", {"listRule": ""})
    assert await titles(bob, filter="@collection.members.role ?= 'guest' && "
                                    "@collection.members.project ?= project") == {"launch"}


@pytest.mark.parametrize("rule, message", [
    ("@collection.nothing.user ?= @request.auth.id", "unknown collection 'nothing'"),
    ("@collection.members.nope ?= 1", "unknown field 'nope'"),
    ("@collection.members ?= 1", "expected @collection.<name>.<field>"),
    ("@collection.members:a:b.user ?= 1", "invalid filter"),
    ("tags.members:x.user ?= 1", "unexpected ':'"),
])
async def test_bad_references_are_400_before_the_rule_is_saved(team: tuple[Api, Api], api: Api,
                                                               rule: str, message: str) -> None:
    r = await api.patch("/collections/tasks", {"listRule": rule})
    assert message in assert_error(r, 400)["message"]
    assert (await api.get("/collections/tasks")).json()["listRule"] == MEMBER_OF


async def test_a_collection_a_rule_reads_cannot_be_renamed_or_deleted(
        team: tuple[Api, Api], api: Api) -> None:
    bob, _ = team
    assert "listRule" in assert_error(await api.delete("/collections/members"), 400)["message"]
    r = await api.patch("/collections/members", {"name": "people"})
    assert "listRule" in assert_error(r, 400)["message"]
    assert await titles(bob) == {"launch"}  # nothing changed


async def test_realtime_events_follow_a_joined_view_rule(cloud: Cloud,
                                                         team: tuple[Api, Api], api: Api) -> None:
    from .test_realtime import PATH, SseStream, _connect

    bob, _ = team
    async with SseStream(cloud.host.public, PATH, {}) as stream:
        client_id = await _connect(stream)
        await bob.post("/realtime", {"clientId": client_id, "subscriptions": ["tasks/*"]})
        await api.create("tasks", {"title": "not bob's", "project": "gemini"})
        mine = await api.create("tasks", {"title": "bob's", "project": "apollo"})
        _, _, data = await stream.event()
    assert (data["action"], data["record"]["id"]) == ("create", mine["id"])


async def test_a_rule_with_a_join_still_follows_each_records_own_relations(
        cloud: Cloud, api: Api) -> None:
    # The join wraps the rule in one more query; a relation path beside it must still look
    # at the record being checked, or any one matching record would open every record.
    owners = await api.collection("owners", [{"name": "user", "type": "text"}])
    await api.collection("switches", [{"name": "on", "type": "bool"}], **ADMINS_ONLY)
    rule = "owner.user = @request.auth.id && @collection.switches.on ?= true"
    await api.collection("notes", [
        {"name": "title", "type": "text"},
        {"name": "owner", "type": "relation", "collectionId": owners["id"]}],
        listRule=rule, viewRule=rule)
    await api.create("switches", {"on": True})
    for user in ("bob", "eve"):
        owner = await api.create("owners", {"user": user})
        await api.create("notes", {"title": f"{user}'s", "owner": owner["id"]})
    bob = await api_for(cloud, user="bob", roles=("editor",))
    assert [n["title"] for n in await bob.items("notes")] == ["bob's"]
    eves = next(n for n in await api.items("notes") if n["title"] == "eve's")
    assert_error(await bob.get(f"/collections/notes/records/{eves['id']}"), 404)
