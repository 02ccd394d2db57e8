"""Back-relations, `<collection>_via_<field>`: the records whose relation points back, in
`expand` and in filters and rules."""

from __future__ import annotations

from cloud import Cloud

from .support import Api, api_for, assert_error


async def test_back_relation_expand(cloud: Cloud, api: Api, posts: dict[str, str]) -> None:
    # `<collection>_via_<field>`: the records whose relation points back, in creation order.
    ann = (await api.get(f"/collections/authors/records/{posts['ann']}",
                         expand="posts_via_author", fields="name,expand")).json()
    assert [p["title"] for p in ann["expand"]["posts_via_author"]] == ["p0", "p1", "p4"]
    assert ann["expand"]["posts_via_author"][0]["collectionName"] == "posts"
    # In a list, nested, and next to a forward relation; names that resolve to nothing
    # (no such collection, a field that is no relation, or one pointing elsewhere) are ignored.
    items = await api.items("authors", sort="name", expand=(
        "org,authors_via_org.posts_via_author,nosuch_via_author,posts_via_title,"
        "posts_via_author.author"), fields="name,expand.org.name,expand.authors_via_org.name,"
        "expand.authors_via_org.expand.posts_via_author.title,"
        "expand.posts_via_author.expand.author.name")
    assert items == [
        {"name": "Ann", "expand": {"org": {"name": "Home"}, "posts_via_author": [
            {"expand": {"author": {"name": "Ann"}}}] * 3}},
        {"name": "Bob", "expand": {"posts_via_author": [
            {"expand": {"author": {"name": "Bob"}}}] * 2}},
        {"name": "Home", "expand": {"authors_via_org": [{"name": "Ann", "expand": {
            "posts_via_author": [{"title": "p0"}, {"title": "p1"}, {"title": "p4"}]}}]}}]
    # A multi relation points back from any of its values; a unique single relation gives
    # one record instead of a list.
    await api.collection("teams", [{"name": "members", "type": "relation",
                                    "collectionId": "authors", "maxSelect": 5}])
    await api.collection("profiles", [{"name": "owner", "type": "relation",
                                       "collectionId": "authors", "unique": True},
                                      {"name": "bio", "type": "text"}])
    red = await api.create("teams", {"members": [posts["bob"], posts["ann"]]})
    blue = await api.create("teams", {"members": [posts["ann"]]})
    await api.create("profiles", {"owner": posts["ann"], "bio": "hi"})
    got = (await api.get(f"/collections/authors/records/{posts['ann']}",
                         expand="teams_via_members,profiles_via_owner")).json()["expand"]
    assert [t["id"] for t in got["teams_via_members"]] == [red["id"], blue["id"]]
    assert got["profiles_via_owner"]["bio"] == "hi"
    # The pointing collection's view rule applies, as for any expand.
    r = await api.patch("/collections/posts", {"viewRule": "published = true"})
    assert r.status_code == 200, r.text
    bob = await api_for(cloud, user="bob", roles=("editor",))
    seen = (await bob.get(f"/collections/authors/records/{posts['ann']}",
                          expand="posts_via_author")).json()["expand"]["posts_via_author"]
    assert [p["title"] for p in seen] == ["p0", "p4"]
    r = await api.patch("/collections/posts", {"viewRule": None})
    seen = (await bob.get(f"/collections/authors/records/{posts['ann']}",
                          expand="posts_via_author")).json()
    assert "expand" not in seen


async def test_back_relation_filters(cloud: Cloud, api: Api, posts: dict[str, str]) -> None:
    async def names(filter_: str, who: Api = api) -> set[str]:
        r = await who.get("/collections/authors/records", filter=filter_, perPage=50)
        assert r.status_code == 200, r.text
        return {i["name"] for i in r.json()["items"]}

    # Ann wrote p0, p1, p4 (views 0, 10, 40); Bob p2, p3 (20, 30); Home wrote nothing. A `?`
    # operator asks for any such record; a plain one for every one (true when there is none).
    assert await names("posts_via_author.views ?> 25") == {"Ann", "Bob"}
    assert await names("posts_via_author.views >= 20") == {"Bob", "Home"}
    assert await names("posts_via_author.views > 25") == {"Home"}
    assert await names("posts_via_author.tags ?= 'c'") == {"Ann", "Bob"}  # a multi field
    assert await names("posts_via_author.author.org.name ?= 'Home'") == {"Ann"}  # then a hop
    assert await names("posts_via_author.title ?~ 'p4' || name = 'Bob'") == {"Ann", "Bob"}
    team = await api.collection("teams", [{"name": "members", "type": "relation",
                                           "collectionId": "authors", "maxSelect": 5},
                                          {"name": "label", "type": "text"}])
    assert team["name"] == "teams"
    await api.create("teams", {"members": [posts["bob"], posts["home"]], "label": "red"})
    assert await names("teams_via_members.label ?= 'red'") == {"Bob", "Home"}  # multi relation

    # Bad uses are 400s.
    for text, message in (("posts_via_author = 'x'", "is a back-relation"),
                          ("nosuch_via_author.x ?= 1", "unknown field"),
                          ("posts_via_title.x ?= 1", "unknown field"),
                          ("posts_via_author.nosuch ?= 1", "unknown field"),
                          ("strftime('%Y', posts_via_author.created) = '2026'",
                           "takes single values")):
        r = await api.get("/collections/authors/records", filter=text)
        assert message in assert_error(r, 400)["message"], text

    # A member's filter reaches only the records the member may list (the pointing
    # collection's list rule); an admin's reaches all, and so do rules (written by admins).
    bob = await api_for(cloud, user="bob", roles=("editor",))
    assert await names("posts_via_author.views ?> 25", bob) == {"Ann", "Bob"}
    r = await api.patch("/collections/posts", {"listRule": "published = true",
                                               "viewRule": "published = true"})
    assert r.status_code == 200, r.text
    assert await names("posts_via_author.views ?> 25", bob) == {"Ann"}  # p3 is unpublished
    # A plain operator: every post the member can list (Bob's p3 is not one of them).
    assert await names("posts_via_author.views < 25", bob) == {"Bob", "Home"}
    assert await names("posts_via_author.views < 25") == {"Home"}
    assert await names("posts_via_author.views ?> 25") == {"Ann", "Bob"}
    r = await api.patch("/collections/posts", {"listRule": None})
    assert r.status_code == 200, r.text
    assert await names("posts_via_author.views ?> -1", bob) == set()  # admins only
    r = await api.patch("/collections/posts", {"listRule": "published = true"})
    assert r.status_code == 200, r.text
    r = await api.patch("/collections/authors", {
        "viewRule": "posts_via_author.published ?= true && posts_via_author.views ?> 30"})
    assert r.status_code == 200, r.text
    for author, status in (("ann", 200), ("bob", 404), ("home", 404)):
        r = await bob.get(f"/collections/authors/records/{posts[author]}")
        assert r.status_code == status, (author, r.text)
