"""Managing an org: users, roles, apps, API keys; who may do what; orgs for the platform admin."""

from __future__ import annotations

import pytest
from cloud import Cloud


async def test_org_admins_manage_users_of_their_org_only(cloud: Cloud) -> None:
    acme = await cloud.headers(org="acme", user="alice", roles=["admin"])
    globex = await cloud.headers(org="globex", user="gina", roles=["owner"])
    made = await cloud.client.post("/v1/iam/users", headers=acme, json={
        "email": "Dave@Acme.test", "password": "long enough", "roles": ["editor"]})
    assert made.status_code == 201, made.text
    assert made.json()["email"] == "dave@acme.test" and "password" not in made.text
    user_id = made.json()["id"]
    seen = (await cloud.client.get("/v1/iam/users", headers=globex)).json()["items"]
    assert user_id not in [u["id"] for u in seen]
    for method in ("GET", "PATCH", "DELETE"):
        r = await cloud.client.request(method, f"/v1/iam/users/{user_id}", headers=globex,
                                       json={"name": "x"} if method == "PATCH" else None)
        assert r.status_code == 404, (method, r.text)
    dup = await cloud.client.post("/v1/iam/users", headers=acme, json={
        "email": "dave@acme.test", "password": "long enough", "roles": ["viewer"]})
    assert dup.status_code == 409


ESCALATIONS = [
    ("grant-owner", "POST", "/v1/iam/users", {"email": "e@acme.test", "password": "long enough",
                                              "roles": ["owner"]}),
    ("grant-platform-admin", "POST", "/v1/iam/users",
     {"email": "f@acme.test", "password": "long enough", "roles": ["viewer"], "isAdmin": True}),
    ("owner-api-key", "POST", "/v1/iam/keys", {"name": "k", "roles": ["owner"]}),
    ("create-org", "POST", "/v1/iam/orgs", {"slug": "newco", "ownerEmail": "o@n.test",
                                            "ownerPassword": "long enough"}),
    ("list-orgs", "GET", "/v1/iam/orgs", None),
]


@pytest.mark.parametrize(("method", "path", "body"), [e[1:] for e in ESCALATIONS],
                         ids=[e[0] for e in ESCALATIONS])
async def test_an_org_admin_cannot_escalate(cloud: Cloud, method: str, path: str,
                                            body: dict[str, object] | None) -> None:
    admin = await cloud.headers(org="acme", user="alice", roles=["admin"])
    r = await cloud.client.request(method, path, headers=admin, json=body)
    assert r.status_code == 403, r.text


async def test_viewers_cannot_manage(cloud: Cloud) -> None:
    viewer = await cloud.headers(org="acme", user="vic", roles=["viewer"])
    for method, path in (("GET", "/v1/iam/users"), ("POST", "/v1/iam/keys"),
                         ("GET", "/v1/iam/apps")):
        r = await cloud.client.request(method, path, headers=viewer, json={})
        assert r.status_code == 403
    me = await cloud.client.get("/v1/iam/me", headers=viewer)
    assert me.status_code == 200 and me.json()["id"] == "vic"


async def test_platform_admin_manages_orgs(cloud: Cloud) -> None:
    root = await cloud.headers(org="acme", user="root", roles=["owner"], admin=True)
    made = await cloud.client.post("/v1/iam/orgs", headers=root, json={
        "slug": "newco", "displayName": "New Co", "ownerEmail": "o@newco.test",
        "ownerPassword": "long enough"})
    assert made.status_code == 201 and made.json()["client_id"].startswith("newco_")
    listed = await cloud.client.get("/v1/iam/orgs", headers=root)
    assert "newco" in [o["slug"] for o in listed.json()["items"]]
    again = await cloud.client.post("/v1/iam/orgs", headers=root, json={
        "slug": "newco", "ownerEmail": "o@newco.test", "ownerPassword": "long enough"})
    assert again.status_code == 409
    bad = await cloud.client.post("/v1/iam/orgs", headers=root, json={
        "slug": "../x", "ownerEmail": "o@x.test", "ownerPassword": "long enough"})
    assert bad.status_code == 400
    assert not (cloud.host.settings.data_dir / "x").exists()


BAD_BODIES = [
    ("not-json", "/v1/iam/users", b"{nope", 400),
    ("array", "/v1/iam/users", b"[]", 400),
    ("unknown-field", "/v1/iam/users", b'{"email": "a@b.c", "password": "long enough", '
                                       b'"evil": 1}', 400),
    ("bad-email", "/v1/iam/users", b'{"email": "nope", "password": "long enough"}', 400),
    ("short-password", "/v1/iam/users", b'{"email": "a@b.c", "password": "x"}', 400),
    ("unknown-role", "/v1/iam/users", b'{"email": "a@b.c", "password": "long enough", '
                                      b'"roles": ["wizard"]}', 400),
    ("bad-redirect", "/v1/iam/apps", b'{"name": "a", "public": true, '
                                     b'"redirectUris": ["javascript:alert(1)"]}', 400),
    ("public-cc", "/v1/iam/apps", b'{"name": "a", "public": true, '
                                  b'"grants": ["client_credentials"]}', 400),
    ("bad-grant", "/v1/iam/apps", b'{"name": "a", "grants": ["implicit"]}', 400),
    ("bad-role-name", "/v1/iam/roles", b'{"name": "Bad Role"}', 400),
    ("builtin-role", "/v1/iam/roles", b'{"name": "owner"}', 409),
    ("bad-expiry", "/v1/iam/keys", b'{"name": "k", "roles": [], "expiresIn": -1}', 400),
]


@pytest.mark.parametrize(("path", "body", "status"), [b[1:] for b in BAD_BODIES],
                         ids=[b[0] for b in BAD_BODIES])
async def test_bad_management_bodies(cloud: Cloud, path: str, body: bytes, status: int) -> None:
    owner = await cloud.headers(org="acme", user="alice", roles=["owner"])
    before = len((await cloud.client.get("/v1/iam/users", headers=owner)).json()["items"])
    r = await cloud.client.post(path, headers={**owner, "Content-Type": "application/json"},
                                content=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"]
    after = len((await cloud.client.get("/v1/iam/users", headers=owner)).json()["items"])
    assert before == after  # nothing stored


USER = {"email": "w@acme.test", "password": "long enough"}
TEN_YEARS = 10 * 365 * 86400
WRONG_TYPES = [  # (id, method, path, body, the field the 400's message must name)
    ("app-grants-number", "POST", "/v1/iam/apps", {"name": "a", "grants": 5}, "grants"),
    ("app-grants-string", "POST", "/v1/iam/apps", {"name": "a", "grants": "password"},
     "grants"),
    ("app-grants-object", "POST", "/v1/iam/apps", {"name": "a", "grants": {}}, "grants"),
    ("app-redirect-uris-null", "POST", "/v1/iam/apps", {"name": "a", "redirectUris": None},
     "redirectUris"),
    ("app-redirect-uris-string", "POST", "/v1/iam/apps",
     {"name": "a", "redirectUris": "https://x.test/cb"}, "redirectUris"),
    ("app-redirect-uri-bad-ipv6", "POST", "/v1/iam/apps",
     {"name": "a", "redirectUris": ["http://[::1/cb"]}, "redirect URI"),
    ("app-public-string", "POST", "/v1/iam/apps", {"name": "a", "public": "yes"}, "public"),
    ("app-roles-null", "POST", "/v1/iam/apps", {"name": "a", "roles": None}, "roles"),
    ("app-name-list", "POST", "/v1/iam/apps", {"name": ["a"]}, "name"),
    ("patch-app-grants-null", "PATCH", "/v1/iam/apps/{app}", {"grants": None}, "grants"),
    ("patch-app-redirect-uris-number", "PATCH", "/v1/iam/apps/{app}", {"redirectUris": 1},
     "redirectUris"),
    ("patch-app-name-bool", "PATCH", "/v1/iam/apps/{app}", {"name": True}, "name"),
    ("key-scopes-null", "POST", "/v1/iam/keys", {"name": "k", "scopes": None}, "scopes"),
    ("key-scopes-string", "POST", "/v1/iam/keys", {"name": "k", "scopes": "read"}, "scopes"),
    ("key-scopes-object", "POST", "/v1/iam/keys", {"name": "k", "scopes": {"read": 1}},
     "scopes"),
    ("key-roles-string", "POST", "/v1/iam/keys", {"name": "k", "roles": "viewer"}, "roles"),
    ("key-expiry-int64-max", "POST", "/v1/iam/keys",
     {"name": "k", "expiresIn": 9223372036854775807}, "expiresIn"),
    ("key-expiry-over-ten-years", "POST", "/v1/iam/keys",
     {"name": "k", "expiresIn": TEN_YEARS + 1}, "expiresIn"),
    ("key-expiry-zero", "POST", "/v1/iam/keys", {"name": "k", "expiresIn": 0}, "expiresIn"),
    ("key-expiry-float", "POST", "/v1/iam/keys", {"name": "k", "expiresIn": 3600.5},
     "expiresIn"),
    ("key-expiry-string", "POST", "/v1/iam/keys", {"name": "k", "expiresIn": "3600"},
     "expiresIn"),
    ("key-expiry-bool", "POST", "/v1/iam/keys", {"name": "k", "expiresIn": True}, "expiresIn"),
    ("user-is-admin-string", "POST", "/v1/iam/users", {**USER, "isAdmin": "false"}, "isAdmin"),
    ("user-name-number", "POST", "/v1/iam/users", {**USER, "name": 5}, "name"),
    ("user-name-null", "POST", "/v1/iam/users", {**USER, "name": None}, "name"),
    ("user-roles-object", "POST", "/v1/iam/users", {**USER, "roles": {}}, "roles"),
    ("user-email-number", "POST", "/v1/iam/users", {**USER, "email": 5}, "email"),
    ("user-password-list", "POST", "/v1/iam/users", {**USER, "password": ["x"]}, "password"),
    ("patch-user-is-admin-number", "PATCH", "/v1/iam/users/{user}", {"isAdmin": 1}, "isAdmin"),
    ("patch-user-disabled-string", "PATCH", "/v1/iam/users/{user}", {"disabled": "yes"},
     "disabled"),
    ("patch-user-name-null", "PATCH", "/v1/iam/users/{user}", {"name": None}, "name"),
    ("patch-user-password-number", "PATCH", "/v1/iam/users/{user}", {"password": 12345678},
     "password"),
    ("role-description-number", "POST", "/v1/iam/roles", {"name": "r", "description": 5},
     "description"),
    ("role-description-list", "POST", "/v1/iam/roles", {"name": "r", "description": []},
     "description"),
    ("role-name-null", "POST", "/v1/iam/roles", {"name": None}, "name"),
    ("org-display-name-list", "POST", "/v1/iam/orgs",
     {"slug": "newco", "ownerEmail": "o@n.test", "ownerPassword": "long enough",
      "displayName": ["x"]}, "displayName"),
    ("org-display-name-number", "POST", "/v1/iam/orgs",
     {"slug": "newco", "ownerEmail": "o@n.test", "ownerPassword": "long enough",
      "displayName": 5}, "displayName"),
    ("org-slug-number", "POST", "/v1/iam/orgs",
     {"slug": 5, "ownerEmail": "o@n.test", "ownerPassword": "long enough"}, "slug"),
]
LISTED = ("/v1/iam/orgs", "/v1/iam/users", "/v1/iam/roles", "/v1/iam/apps", "/v1/iam/keys")


@pytest.mark.parametrize(("method", "path", "body", "field"), [w[1:] for w in WRONG_TYPES],
                         ids=[w[0] for w in WRONG_TYPES])
async def test_wrong_json_types_are_400s_that_store_nothing(
        cloud: Cloud, method: str, path: str, body: dict[str, object], field: str) -> None:
    root = await cloud.headers(org="acme", user="root", roles=["owner"], admin=True)
    user = await cloud.client.post("/v1/iam/users", headers=root,
                                   json={"email": "t@acme.test", "password": "long enough"})
    app = await cloud.client.post("/v1/iam/apps", headers=root, json={"name": "t"})
    target = path.format(user=user.json()["id"], app=app.json()["clientId"])

    async def everything() -> list[object]:
        return [(await cloud.client.get(p, headers=root)).json()["items"] for p in LISTED]

    before = await everything()
    r = await cloud.client.request(method, target, headers=root, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_argument" and field in error["message"], error
    assert await everything() == before  # nothing created, nothing changed


async def test_api_key_expiry_is_at_most_ten_years_and_null_never_expires(cloud: Cloud) -> None:
    owner = await cloud.headers(org="acme", user="alice", roles=["owner"])
    longest = await cloud.client.post("/v1/iam/keys", headers=owner,
                                      json={"name": "k", "expiresIn": TEN_YEARS})
    assert longest.status_code == 201, longest.text
    assert longest.json()["expiresAt"] == longest.json()["createdAt"] + TEN_YEARS
    forever = await cloud.client.post("/v1/iam/keys", headers=owner,
                                      json={"name": "k", "expiresIn": None})
    assert forever.status_code == 201 and forever.json()["expiresAt"] is None


async def test_an_org_with_the_longest_display_name_gets_its_console_app(cloud: Cloud) -> None:
    root = await cloud.headers(org="acme", user="root", roles=["owner"], admin=True)
    made = await cloud.client.post("/v1/iam/orgs", headers=root, json={
        "slug": "longco", "displayName": "L" * 120, "ownerEmail": "o@longco.test",
        "ownerPassword": "long enough"})
    assert made.status_code == 201, made.text  # before: a 400 after the org and owner existed
    app = await cloud.iam.clients.first_party_app("longco")
    assert app.name.endswith(" console") and len(app.name) <= 120


async def test_custom_roles_and_confidential_apps(cloud: Cloud) -> None:
    owner = await cloud.headers(org="acme", user="alice", roles=["owner"])
    role = await cloud.client.post("/v1/iam/roles", headers=owner,
                                   json={"name": "billing", "description": "pays"})
    assert role.status_code == 201
    user = await cloud.client.post("/v1/iam/users", headers=owner, json={
        "email": "b@acme.test", "password": "long enough", "roles": ["billing"]})
    assert user.status_code == 201 and user.json()["roles"] == ["billing"]
    app = await cloud.client.post("/v1/iam/apps", headers=owner, json={
        "name": "backend", "public": False, "grants": ["client_credentials"]})
    assert app.status_code == 201 and app.json()["clientSecret"].startswith("hcs_")
    shown = await cloud.client.get(f"/v1/iam/apps/{app.json()['clientId']}", headers=owner)
    assert "clientSecret" not in shown.json()
    gone = await cloud.client.delete(f"/v1/iam/apps/{app.json()['clientId']}", headers=owner)
    assert gone.status_code == 204


async def test_get_user_and_get_org_through_the_client(cloud: Cloud) -> None:
    from hanzocloud.errors import NotFound
    from hanzocloud.identity import Identity, current_identity

    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    await cloud.ensure_user(org="globex", user="gina", roles=["owner"], admin=False, email=None)
    iam = cloud.host.deps.iam
    token = current_identity.set(Identity(org="globex", user="gina", roles=("owner",)))
    try:
        assert (await iam.get_org("globex")).slug == "globex"
        with pytest.raises(NotFound):
            await iam.get_org("acme")
        with pytest.raises(NotFound):
            await iam.get_user("alice")
        assert (await iam.get_user("gina")).email == "gina@globex.test"
    finally:
        current_identity.reset(token)
