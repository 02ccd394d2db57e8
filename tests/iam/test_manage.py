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
