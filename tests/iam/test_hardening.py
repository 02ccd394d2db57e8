"""Who may act on whom, when a token stops speaking for its user, throttles under
concurrency, logout's redirect, and odd credentials: each found by probing a running cloud."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import jwt
import pytest
from cloud import TEST_PASSWORD, Cloud

from iam.conftest import password_grant
from subsystems.iam.config import load_config
from subsystems.iam.login import security_headers
from subsystems.iam.passwords import Throttle


async def _sign_in(cloud: Cloud, org: str, user: str, password: str = TEST_PASSWORD,
                   **extra: str) -> Any:
    app = await cloud.iam.clients.first_party_app(org)
    found = await cloud.iam.directory.find_user(org, user)
    return await cloud.client.post("/v1/iam/oauth/token", data={
        "grant_type": "password", "client_id": app.client_id, "username": found.email,
        "password": password, **extra})


@pytest.mark.parametrize("caller", ["owner", "admin"])
async def test_a_platform_admin_is_beyond_any_org_role(cloud: Cloud, caller: str) -> None:
    await cloud.ensure_user(org="acme", user="root", roles=["viewer"], admin=True, email=None)
    await cloud.ensure_user(org="acme", user="root2", roles=["owner"], admin=True, email=None)
    org_side = await cloud.headers(org="acme", user="alice", roles=[caller])
    for target in ("root", "root2"):
        for method, body in (("PATCH", {"password": "attacker chosen"}),
                             ("PATCH", {"disabled": True}), ("PATCH", {"name": "x"}),
                             ("DELETE", None)):
            r = await cloud.client.request(method, f"/v1/iam/users/{target}",
                                           headers=org_side, json=body)
            assert r.status_code == 403, (target, method, body, r.text)
            assert "platform admin" in r.json()["error"]["message"]
    assert (await _sign_in(cloud, "acme", "root")).status_code == 200  # untouched
    platform = await cloud.headers(org="acme", user="root2", roles=["owner"], admin=True)
    r = await cloud.client.patch("/v1/iam/users/root", headers=platform, json={"name": "Root"})
    assert r.status_code == 200, r.text


async def test_a_demotion_takes_effect_at_the_next_request(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="mallory", roles=["admin"], admin=False, email=None)
    signed = (await _sign_in(cloud, "acme", "mallory")).json()
    mallory = {"Authorization": f"Bearer {signed['access_token']}"}
    assert (await cloud.client.get("/v1/iam/users", headers=mallory)).status_code == 200
    owner = await cloud.headers(org="acme", user="alice", roles=["owner"])
    r = await cloud.client.patch("/v1/iam/users/mallory", headers=owner, json={"roles": ["viewer"]})
    assert r.status_code == 200, r.text
    # The admin token is spent: no more admin reads, and no admin API key minted in the gap.
    assert (await cloud.client.get("/v1/iam/users", headers=mallory)).status_code == 401
    r = await cloud.client.post("/v1/iam/keys", headers=mallory,
                                json={"name": "p", "roles": ["admin"]})
    assert r.status_code == 401
    # A refresh brings a token with the roles the user holds now.
    client_id = jwt.decode(signed["access_token"], options={"verify_signature": False})["azp"]
    fresh = await cloud.client.post("/v1/iam/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": signed["refresh_token"],
        "client_id": client_id})
    assert fresh.status_code == 200, fresh.text
    viewer = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    assert (await cloud.client.get("/v1/iam/me", headers=viewer)).status_code == 200
    assert (await cloud.client.get("/v1/iam/users", headers=viewer)).status_code == 403
    # A promotion to platform admin spends the old token too (isAdmin is part of it).
    platform = await cloud.headers(org="acme", user="root", roles=["owner"], admin=True)
    r = await cloud.client.patch("/v1/iam/users/mallory", headers=platform,
                                 json={"isAdmin": True})
    assert r.status_code == 200, r.text
    assert (await cloud.client.get("/v1/iam/me", headers=viewer)).status_code == 401


async def test_a_new_password_ends_the_users_sessions(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="bob", roles=["viewer"], admin=False, email=None)
    await cloud.ensure_user(org="acme", user="carol", roles=["viewer"], admin=False, email=None)
    stolen = (await _sign_in(cloud, "acme", "bob")).json()
    other = (await _sign_in(cloud, "acme", "carol")).json()
    bearer = {"Authorization": f"Bearer {stolen['access_token']}"}
    assert (await cloud.client.get("/v1/iam/me", headers=bearer)).status_code == 200
    owner = await cloud.headers(org="acme", user="alice", roles=["owner"])
    r = await cloud.client.patch("/v1/iam/users/bob", headers=owner,
                                 json={"password": "a brand new secret"})
    assert r.status_code == 200, r.text
    # The session opened with the old password is over: its access and refresh tokens both.
    assert (await cloud.client.get("/v1/iam/me", headers=bearer)).status_code == 401
    client_id = jwt.decode(stolen["access_token"], options={"verify_signature": False})["azp"]
    r = await cloud.client.post("/v1/iam/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": stolen["refresh_token"],
        "client_id": client_id})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert (await _sign_in(cloud, "acme", "bob")).status_code == 400  # the old password
    fresh = await _sign_in(cloud, "acme", "bob", password="a brand new secret")
    assert fresh.status_code == 200
    # Another user's session is untouched, and so is a change that sets no password.
    carol = {"Authorization": f"Bearer {other['access_token']}"}
    r = await cloud.client.patch("/v1/iam/users/carol", headers=owner, json={"name": "Carol"})
    assert r.status_code == 200
    assert (await cloud.client.get("/v1/iam/me", headers=carol)).status_code == 200
    renewed = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    assert (await cloud.client.get("/v1/iam/me", headers=renewed)).status_code == 200


async def test_failed_sign_ins_sent_side_by_side_are_throttled(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    results = await asyncio.gather(*(_sign_in(cloud, "acme", "alice", password=f"wrong {n}")
                                     for n in range(30)))
    statuses = sorted(r.status_code for r in results)
    free = load_config({}).throttle_free
    assert statuses.count(400) == free and statuses.count(429) == 30 - free, statuses


def test_a_success_takes_back_only_its_own_attempt() -> None:
    clock = [1000.0]
    throttle = Throttle(load_config({}), clock=lambda: clock[0])
    throttle.failure("acct:a", "ip:1")
    throttle.failure("acct:a", "ip:1")  # an earlier failure, and the attempt now running
    throttle.success("acct:a", "ip:1")
    assert throttle._entries["ip:1"].count == 1 and "acct:a" not in throttle._entries
    throttle.failure("acct:b", "ip:2")
    throttle.success("acct:b", "ip:2")
    assert "ip:2" not in throttle._entries


@pytest.mark.parametrize("path", ["token", "introspect", "revoke"])
async def test_non_ascii_basic_credentials_are_401(cloud: Cloud, path: str) -> None:
    r = await cloud.client.post(f"/v1/iam/oauth/{path}",
                                content=b"grant_type=client_credentials&token=x",
                                headers={"Authorization": b"Basic \xe9\xff",
                                         "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"


async def _app_with_logout(cloud: Cloud, org: str, uri: str) -> Any:
    app, _ = await cloud.iam.clients.create_app(org, name="spa", public=True,
                                                redirect_uris=[uri], grants=[])
    return app


async def test_logout_redirects_only_back_to_the_session_s_own_client(cloud: Cloud) -> None:
    first = (await password_grant(cloud, scope="openid")).json()
    acme_app = await cloud.iam.clients.first_party_app("acme")
    await cloud.iam.clients.update_app("acme", acme_app.client_id,
                                       redirect_uris=["https://acme.example/bye"])
    await cloud.ensure_user(org="evil", user="eve", roles=["owner"], admin=False, email=None)
    evil = await _app_with_logout(cloud, "evil", "https://evil.example/x")
    hint = first["id_token"]

    async def logout(**params: str) -> Any:
        return await cloud.client.get("/v1/iam/oauth/logout", params=params)

    # Another org's client, with or without a hint: no redirect, and the session lives on.
    r = await logout(client_id=evil.client_id, post_logout_redirect_uri="https://evil.example/x")
    assert r.status_code == 400 and "id_token_hint" in r.json()["error"]["message"]
    r = await logout(id_token_hint=hint, client_id=evil.client_id,
                     post_logout_redirect_uri="https://evil.example/x")
    assert r.status_code == 400 and "client_id" in r.json()["error"]["message"]
    r = await logout(id_token_hint=hint, post_logout_redirect_uri="https://evil.example/x")
    assert r.status_code == 400
    token = {"Authorization": f"Bearer {first['access_token']}"}
    assert (await cloud.client.get("/v1/gateway/whoami", headers=token)).status_code == 200
    # The session's own client, at an address it registered: the session ends, then back.
    r = await logout(id_token_hint=hint, client_id=acme_app.client_id,
                     post_logout_redirect_uri="https://acme.example/bye", state="s9")
    assert r.status_code == 303 and r.headers["location"] == "https://acme.example/bye?state=s9"
    assert (await cloud.client.get("/v1/gateway/whoami", headers=token)).status_code == 401


async def test_logout_says_what_it_ended(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    app, secret = await cloud.iam.clients.create_app(
        "acme", name="worker", public=False, grants=["client_credentials"], roles=["editor"])
    basic = base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()
    machine = (await cloud.client.post("/v1/iam/oauth/token",
                                       data={"grant_type": "client_credentials"},
                                       headers={"Authorization": f"Basic {basic}"})).json()
    r = await cloud.client.post("/v1/iam/oauth/logout",
                                headers={"Authorization": f"Bearer {machine['access_token']}"})
    assert r.json() == {"loggedOut": False}  # no session to end
    user = (await password_grant(cloud)).json()["access_token"]
    r = await cloud.client.post("/v1/iam/oauth/logout", headers={"Authorization": user})
    assert r.status_code == 200 and r.json() == {"loggedOut": True}  # a bare JWT, as the gateway
    r = await cloud.client.get("/v1/gateway/whoami", headers={"Authorization": user})
    assert r.status_code == 401


async def test_two_authorization_headers_are_400(cloud: Cloud) -> None:
    alice = await cloud.token(org="acme", user="alice")
    gina = await cloud.token(org="globex", user="gina")
    r = await cloud.client.post("/v1/iam/oauth/logout", headers=[
        ("Authorization", f"Bearer {gina}"), ("Authorization", f"Bearer {alice}")])
    assert r.status_code == 400 and "more than one Authorization" in r.json()["error"]["message"]
    for token in (alice, gina):  # neither session ended
        r = await cloud.client.get("/v1/gateway/whoami",
                                   headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


@pytest.mark.parametrize(("uri", "origin"), [
    ("http://127.0.0.1:8765/callback", "http://127.0.0.1:8765"),
    ("https://app.example/cb?x=1", "https://app.example"),
    ("http://[::1]:9000/cb", "http://[::1]:9000"),
    ("http://x; script-src 'unsafe-inline' @127.0.0.1/cb", "http://127.0.0.1"),
    ("javascript:alert(1)", ""),
    ("https://a b.example/cb", ""),
])
def test_the_page_csp_names_only_the_redirect_origin(uri: str, origin: str) -> None:
    csp = security_headers(uri)["Content-Security-Policy"]
    assert csp.endswith(f"form-action 'self' {origin}".rstrip())
