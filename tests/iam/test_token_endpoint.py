"""The token endpoint: each grant, refresh rotation and reuse, and malformed requests."""

from __future__ import annotations

import base64

import jwt
import pytest
from cloud import TEST_PASSWORD, Cloud

from iam.conftest import password_grant, pkce_pair

CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "owner", "organization", "email", "name",
          "roles", "isAdmin", "scope", "azp")


async def test_password_grant_issues_a_token_with_every_claim(cloud: Cloud) -> None:
    r = await password_grant(cloud, scope="openid profile email")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["refresh_token"].startswith("hrt_")
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256" and header["kid"] and header["typ"] == "at+jwt"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert set(CLAIMS) <= set(claims)
    assert claims["owner"] == claims["organization"] == "acme"
    assert claims["sub"] == "alice" and claims["roles"] == ["owner"]
    assert claims["isAdmin"] is False
    id_claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert id_claims["aud"] == claims["azp"]


async def test_client_credentials_for_a_confidential_app(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    app, secret = await cloud.iam.clients.create_app(
        "acme", name="worker", public=False, grants=["client_credentials"], roles=["editor"])
    basic = base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()
    r = await cloud.client.post("/v1/iam/oauth/token", data={"grant_type": "client_credentials"},
                                headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    who = await cloud.client.get("/v1/gateway/whoami",
                                 headers={"Authorization": f"Bearer {token}"})
    assert who.json()["org"] == "acme" and who.json()["user"] == app.client_id
    assert who.json()["roles"] == ["editor"]
    wrong = await cloud.client.post("/v1/iam/oauth/token", data={
        "grant_type": "client_credentials", "client_id": app.client_id,
        "client_secret": "hcs_wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


async def test_refresh_rotates_and_reuse_revokes_the_family(cloud: Cloud) -> None:
    first = (await password_grant(cloud)).json()
    client_id = jwt.decode(first["access_token"], options={"verify_signature": False})["azp"]

    async def refresh(token: str) -> tuple[int, dict[str, str]]:
        r = await cloud.client.post("/v1/iam/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": token, "client_id": client_id})
        return r.status_code, r.json()

    status, second = await refresh(first["refresh_token"])
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    bearer = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await cloud.client.get("/v1/gateway/whoami", headers=bearer)).status_code == 200
    # Replaying the spent token: refused, and the whole family (session) dies with it.
    status, body = await refresh(first["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant" and "reuse" in \
        body["error_description"]
    status, body = await refresh(second["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await cloud.client.get("/v1/gateway/whoami", headers=bearer)).status_code == 401


async def test_authorization_code_needs_the_right_verifier_once(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    iam = cloud.iam
    app = await iam.clients.first_party_app("acme")
    user = await iam.directory.get_user("acme", "alice")
    verifier, challenge = pkce_pair()
    redirect = "http://127.0.0.1/callback"

    async def code() -> str:
        return str(await iam.grants.issue_code(app, user, redirect_uri=redirect,
                                               scope="openid", challenge=challenge, nonce="n"))

    def exchange(c: str, v: str) -> dict[str, str]:
        return {"grant_type": "authorization_code", "code": c, "redirect_uri": redirect,
                "client_id": app.client_id, "code_verifier": v}

    bad = await cloud.client.post("/v1/iam/oauth/token", data=exchange(await code(), "x" * 50))
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    good_code = await code()
    ok = await cloud.client.post("/v1/iam/oauth/token", data=exchange(good_code, verifier))
    assert ok.status_code == 200, ok.text
    assert jwt.decode(ok.json()["id_token"], options={"verify_signature": False})["nonce"] == "n"
    again = await cloud.client.post("/v1/iam/oauth/token", data=exchange(good_code, verifier))
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    bearer = {"Authorization": f"Bearer {ok.json()['access_token']}"}
    # the replayed code revoked what it had produced
    assert (await cloud.client.get("/v1/gateway/whoami", headers=bearer)).status_code == 401


async def test_password_grant_can_be_switched_off_per_app(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    app = await cloud.iam.clients.first_party_app("acme")
    await cloud.iam.clients.update_app("acme", app.client_id,
                                       grants=["authorization_code", "refresh_token"])
    r = await password_grant(cloud)
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


async def test_password_grant_only_for_users_of_the_clients_org(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    await cloud.ensure_user(org="globex", user="gina", roles=["owner"], admin=False, email=None)
    acme_app = await cloud.iam.clients.first_party_app("acme")
    r = await cloud.client.post("/v1/iam/oauth/token", data={
        "grant_type": "password", "client_id": acme_app.client_id,
        "username": "gina@globex.test", "password": TEST_PASSWORD})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


MALFORMED = [
    ("no-grant-type", {}, 400, "invalid_request"),
    ("unknown-grant", {"grant_type": "implicit"}, 400, "unsupported_grant_type"),
    ("no-client", {"grant_type": "password", "username": "a", "password": "b"}, 401,
     "invalid_client"),
    ("unknown-client", {"grant_type": "password", "client_id": "nope_123"}, 401,
     "invalid_client"),
    ("bad-client-slug", {"grant_type": "password", "client_id": "../../etc_x"}, 401,
     "invalid_client"),
    ("missing-password", {"grant_type": "password", "username": "a@b.c"}, 400,
     "invalid_request"),
    ("missing-code", {"grant_type": "authorization_code"}, 400, "invalid_request"),
    ("garbage-code", {"grant_type": "authorization_code", "code": "x", "redirect_uri": "y"},
     400, "invalid_grant"),
    ("bad-verifier", {"grant_type": "authorization_code", "code": "x", "code_verifier": "short"},
     400, "invalid_request"),
    ("missing-refresh", {"grant_type": "refresh_token"}, 400, "invalid_request"),
    ("garbage-refresh", {"grant_type": "refresh_token", "refresh_token": "hrt_nope"}, 400,
     "invalid_grant"),
    ("huge-refresh", {"grant_type": "refresh_token", "refresh_token": "x" * 5000}, 400,
     "invalid_request"),
    ("bad-scope", {"grant_type": "password", "username": "a@b.c", "password": "p",
                   "scope": "ok \"bad\""}, 400, "invalid_scope"),
    ("public-cc", {"grant_type": "client_credentials"}, 400, "unauthorized_client"),
]


@pytest.mark.parametrize(("form", "status", "error"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
async def test_malformed_grants_are_oauth_errors(cloud: Cloud, form: dict[str, str], status: int,
                                                 error: str) -> None:
    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    app = await cloud.iam.clients.first_party_app("acme")
    data = dict(form)
    if "client_id" not in data and error != "invalid_client":
        data["client_id"] = app.client_id
    r = await cloud.client.post("/v1/iam/oauth/token", data=data)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and r.json()["error_description"]


RAW = [
    ("json-body", "application/json", b'{"grant_type": "password"}'),
    ("no-content-type", "", b"grant_type=password"),
    ("repeated-param", "application/x-www-form-urlencoded",
     b"grant_type=password&grant_type=client_credentials"),
    ("bad-utf8", "application/x-www-form-urlencoded", b"grant_type=\xff\xfe"),
    ("bad-basic", "application/x-www-form-urlencoded", b"grant_type=client_credentials"),
]


@pytest.mark.parametrize(("ctype", "body"), [r[1:] for r in RAW], ids=[r[0] for r in RAW])
async def test_unparseable_token_requests_are_400_or_401(cloud: Cloud, ctype: str,
                                                         body: bytes) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    if body == b"grant_type=client_credentials":
        headers["Authorization"] = "Basic !!!notbase64"
    r = await cloud.client.post("/v1/iam/oauth/token", content=body, headers=headers)
    assert r.status_code in (400, 401), r.text
    assert r.json()["error"] in ("invalid_request", "invalid_client")
