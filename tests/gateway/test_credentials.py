"""What the edge accepts as a credential, and every way a JWT can be bad (401, never 500)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cloud import Cloud
from cryptography.hazmat.primitives.asymmetric import rsa

WHOAMI = "/v1/gateway/whoami"


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def good_claims(cloud: Cloud) -> tuple[dict[str, Any], Any]:
    """The claims of a real token and the key that signed it."""
    token = await cloud.token(org="acme", user="alice")
    claims = jwt.decode(token, options={"verify_signature": False})
    return claims, await cloud.iam.keys.active()


def sign(key: Any, claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(claims, key.private, algorithm=key.alg,
                      headers={"kid": key.kid, "typ": "at+jwt", **header})


Forge = Callable[[dict[str, Any], Any], str]
BAD: list[tuple[str, Forge]] = [
    ("alg-none", lambda c, k: f"{b64({'alg': 'none', 'kid': k.kid, 'typ': 'at+jwt'})}."
                              f"{b64(c)}."),
    ("alg-hs256-with-public-key", lambda c, k: f"{b64({'alg': 'HS256', 'kid': k.kid})}."
                                               f"{b64(c)}.{b64(b'sig')}"),
    ("wrong-alg-for-key", lambda c, k: jwt.encode(
        c, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="PS256",
        headers={"kid": k.kid, "typ": "at+jwt"})),
    ("bad-signature", lambda c, k: sign(k, c)[:-6] + "AAAAAA"),
    ("other-key-same-kid", lambda c, k: jwt.encode(
        c, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
        headers={"kid": k.kid, "typ": "at+jwt"})),
    ("unknown-kid", lambda c, k: sign(k, c, kid="nope")),
    ("expired", lambda c, k: sign(k, {**c, "exp": int(time.time()) - 3600,
                                      "iat": int(time.time()) - 7200})),
    ("wrong-issuer", lambda c, k: sign(k, {**c, "iss": "https://evil.example"})),
    ("wrong-audience", lambda c, k: sign(k, {**c, "aud": "someone-else"})),
    ("no-owner", lambda c, k: sign(k, {key: v for key, v in c.items()
                                       if key not in ("owner", "organization")})),
    ("owner-not-a-slug", lambda c, k: sign(k, {**c, "owner": "../etc", "organization": "x"})),
    ("unknown-org", lambda c, k: sign(k, {**c, "owner": "ghost", "organization": "ghost"})),
    ("id-token-typ", lambda c, k: jwt.encode(c, k.private, algorithm=k.alg,
                                             headers={"kid": k.kid, "typ": "JWT"})),
    ("missing-exp", lambda c, k: sign(k, {key: v for key, v in c.items() if key != "exp"})),
    ("huge-header", lambda c, k: f"{b64({'alg': 'RS256', 'kid': 'x' * 20000})}.{b64(c)}.e30"),
    ("not-base64", lambda c, k: "@@@.###.$$$"),
    ("header-not-json", lambda c, k: f"{b64(b'not json')}.{b64(c)}.e30"),
]


@pytest.mark.parametrize("forge", [b[1] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_jwts_are_401_json(cloud: Cloud, forge: Forge) -> None:
    claims, key = await good_claims(cloud)
    token = forge(claims, key)
    r = await cloud.client.get(WHOAMI, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["www-authenticate"].startswith("Bearer")


FORMS = [
    ("bearer", lambda t: f"Bearer {t}", 200),
    ("lower-bearer", lambda t: f"bearer {t}", 200),
    ("bare-jwt-pocketbase-style", lambda t: t, 200),
    ("unknown-scheme", lambda t: f"Token {t}", 401),
    ("bearer-empty", lambda t: "Bearer ", 401),
    ("bearer-garbage", lambda t: "Bearer garbage", 401),
    ("bare-garbage", lambda t: "garbage", 401),
    ("basic-is-not-identity", lambda t: "Basic YTpi", 401),
]


@pytest.mark.parametrize(("render", "status"), [f[1:] for f in FORMS], ids=[f[0] for f in FORMS])
async def test_authorization_header_forms(cloud: Cloud, render: Callable[[str], str],
                                          status: int) -> None:
    token = await cloud.token(org="acme", user="alice")
    r = await cloud.client.get(WHOAMI, headers={"Authorization": render(token)})
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["org"] == "acme" and r.json()["user"] == "alice"


async def test_no_credential_is_anonymous_and_401_on_authenticated_routes(cloud: Cloud) -> None:
    r = await cloud.client.get(WHOAMI)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    assert (await cloud.client.get("/.well-known/jwks")).status_code == 200


async def test_api_keys_authenticate_and_revocation_is_immediate_here(cloud: Cloud) -> None:
    admin = await cloud.headers(org="acme", user="alice", roles=["admin"])
    made = await cloud.client.post("/v1/iam/keys", json={"name": "ci", "roles": ["editor"]},
                                   headers=admin)
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key.startswith("hk-acme_")
    for header in (f"Bearer {key}", key):
        who = await cloud.client.get(WHOAMI, headers={"Authorization": header})
        assert who.status_code == 200 and who.json()["roles"] == ["editor"]
        assert who.json()["user"] == made.json()["id"]
    listed = await cloud.client.get("/v1/iam/keys", headers=admin)
    assert "key" not in listed.json()["items"][0] and listed.json()["items"][0]["lastUsedAt"]
    gone = await cloud.client.delete(f"/v1/iam/keys/{made.json()['id']}", headers=admin)
    assert gone.status_code == 200
    who = await cloud.client.get(WHOAMI, headers={"Authorization": f"Bearer {key}"})
    assert who.status_code == 401


async def test_a_revoked_key_stops_within_the_window_without_notice(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Revoked behind the gateway's back (as at a remote iam): the cache holds it at most
    one revocation window."""
    import asyncio

    from cloud import running_cloud

    monkeypatch.setenv("CLOUD_GATEWAY_REVOCATION_WINDOW", "0.5")
    async with running_cloud(tmp_path / "data", ["iam", "gateway"]) as cloud:
        await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False,
                                email=None)
        record, key = await cloud.iam.clients.create_api_key(
            "acme", name="ci", roles=["viewer"], created_by="alice")
        headers = {"Authorization": f"Bearer {key}"}
        assert (await cloud.client.get(WHOAMI, headers=headers)).status_code == 200
        await cloud.iam.clients.revoke_api_key("acme", record.id)  # no event: silent revoke
        await asyncio.sleep(0.6)
        assert (await cloud.client.get(WHOAMI, headers=headers)).status_code == 401


async def test_malformed_and_foreign_api_keys(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    for key in ("hk-", "hk-acme_", "hk-ghost_abcdef", "hk-ACME_x", "hk-acme_" + "x" * 300,
                "hk-../../x_y"):
        r = await cloud.client.get(WHOAMI, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 401, key
