"""Signing keys: algorithms, rotation (old tokens stay valid), JWKS retention, sealing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import jwt
import pytest
from cloud import Cloud, running_cloud
from cryptography.exceptions import InvalidTag
from sqlalchemy import text

from hanzocloud.errors import ConfigError
from subsystems.iam.config import load_config
from subsystems.iam.keys import unseal

WHOAMI = "/v1/gateway/whoami"


async def test_rotation_keeps_old_tokens_valid_until_they_expire(cloud: Cloud) -> None:
    old = await cloud.token(org="acme", user="alice")
    old_kid = jwt.get_unverified_header(old)["kid"]
    admin = await cloud.headers(org="acme", user="root", roles=["owner"], admin=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cloud.host.admin),
                                 base_url="http://admin.test") as admin_client:
        rotated = await admin_client.post("/v1/iam/signing-keys/rotate", headers=admin)
        assert rotated.status_code == 201, rotated.text
        denied = await admin_client.post("/v1/iam/signing-keys/rotate",
                                         headers={"Authorization": f"Bearer {old}"})
        assert denied.status_code == 403
    new_kid = rotated.json()["kid"]
    jwks = (await cloud.client.get("/.well-known/jwks")).json()
    assert [k["kid"] for k in jwks["keys"]][:1] == [new_kid] and old_kid in \
        [k["kid"] for k in jwks["keys"]]
    cloud._tokens.clear()
    fresh = await cloud.token(org="acme", user="alice")
    assert jwt.get_unverified_header(fresh)["kid"] == new_kid
    for token in (old, fresh):
        r = await cloud.client.get(WHOAMI, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    # once the retired key's last token has expired, it leaves the JWKS
    keys = cloud.iam.keys
    real_clock = keys.clock
    keys.clock = lambda: real_clock() + keys.max_token_life + 1
    try:
        assert old_kid not in [k["kid"] for k in keys.jwks()["keys"]]
    finally:
        keys.clock = real_clock


@pytest.mark.parametrize(("alg", "kty"), [("ES256", "EC"), ("EdDSA", "OKP"), ("RS256", "RSA")],
                         ids=["es256", "eddsa", "rs256"])
async def test_signing_algorithm_is_selectable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               alg: str, kty: str) -> None:
    monkeypatch.setenv("CLOUD_IAM_ALG", alg)
    async with running_cloud(tmp_path / "data", []) as cloud:
        token = await cloud.token()
        assert jwt.get_unverified_header(token)["alg"] == alg
        jwks = (await cloud.client.get("/v1/iam/.well-known/jwks")).json()
        assert jwks["keys"][0]["kty"] == kty and jwks["keys"][0]["alg"] == alg
        meta = (await cloud.client.get("/.well-known/oauth-authorization-server")).json()
        assert meta["id_token_signing_alg_values_supported"] == [alg]
        r = await cloud.client.get(WHOAMI, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


async def test_private_keys_are_sealed_and_bound_to_their_kid(cloud: Cloud) -> None:
    keys = cloud.iam.keys
    await keys.load()
    async with cloud.iam.store.platform() as s:
        rows = (await s.execute(text("SELECT kid, sealed FROM signing_keys"))).all()
    kid, sealed = rows[0]
    assert b"PRIVATE" not in sealed and len(sealed) > 100
    assert unseal(keys.seal_key, kid, sealed) is not None
    with pytest.raises(InvalidTag):
        unseal(keys.seal_key, "another-kid", sealed)


@pytest.mark.parametrize(("env", "needle"), [
    ({"CLOUD_IAM_ALG": "HS256"}, "CLOUD_IAM_ALG"),
    ({"CLOUD_IAM_ACCESS_TTL": "soon"}, "CLOUD_IAM_ACCESS_TTL"),
    ({"CLOUD_IAM_ACCESS_TTL": "0"}, "CLOUD_IAM_ACCESS_TTL"),
    ({"CLOUD_IAM_ROTATE_INTERVAL": "-5"}, "CLOUD_IAM_ROTATE_INTERVAL"),
], ids=["unknown-alg", "ttl-not-a-number", "ttl-zero", "negative-interval"])
def test_bad_iam_settings_are_one_sentence(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(env)


async def test_scheduled_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_IAM_ROTATE_INTERVAL", "0.5")
    monkeypatch.setenv("CLOUD_IAM_ROTATE_CHECK", "0.2")
    async with running_cloud(tmp_path / "data", []) as cloud:
        first = (await cloud.iam.keys.active()).kid
        for _ in range(50):
            await asyncio.sleep(0.1)
            if cloud.iam.keys._active.kid != first:
                break
        assert cloud.iam.keys._active.kid != first
        assert first in [k["kid"] for k in cloud.iam.keys.jwks()["keys"]]
