"""What a review of the edge found: guessing credentials costs the guesser's address budget,
padding one credential cannot fill the cache, a revocation beats a verification under way and
clears only its own org, and an API key's headers speak of the bucket that binds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cloud import Cloud, running_cloud
from iam.conftest import password_grant

WHOAMI = "/v1/gateway/whoami"


async def test_failed_credentials_spend_the_address_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_GATEWAY_RATE_ANON", "0.01:3")
    async with running_cloud(tmp_path / "data", []) as cloud:
        good = await cloud.headers(org="acme", user="alice")
        assert (await cloud.client.get(WHOAMI, headers=good)).status_code == 200
        lookups = 0
        real = cloud.iam.clients.lookup_api_key

        async def counted(key: str) -> Any:
            nonlocal lookups
            lookups += 1
            return await real(key)

        monkeypatch.setattr(cloud.iam.clients, "lookup_api_key", counted)
        answers = [await cloud.client.get(WHOAMI, headers={
            "Authorization": f"Bearer hk-acme_guess{n}"}) for n in range(6)]
        assert [r.status_code for r in answers] == [401, 401, 401, 429, 429, 429]
        assert lookups == 3  # once the budget is gone, iam is not even asked
        assert answers[0].headers["ratelimit"].startswith('"anon";r=2;')
        assert answers[2].headers["ratelimit"].startswith('"anon";r=0;')
        assert int(answers[3].headers["retry-after"]) >= 1
        # A credential already verified is not held back by its address's failures.
        assert (await cloud.client.get(WHOAMI, headers=good)).status_code == 200


async def test_padding_credentials_does_not_fill_the_cache(cloud: Cloud) -> None:
    await cloud.ensure_user(org="acme", user="alice", roles=["viewer"], admin=False, email=None)
    tokens = [(await password_grant(cloud)).json()["access_token"] for _ in range(3)]
    for token in tokens:  # each first seen padded: a head can carry 64 KiB of it
        for n in range(20):
            r = await cloud.client.get(WHOAMI, headers={
                "Authorization": "Bearer" + " " * (2000 + n) + token})
            assert r.status_code == 200
    cache = _state(cloud).cache
    assert len(cache) <= 2 * len(tokens)  # each credential, and at most its plain form
    assert max(len(k) for k in cache._items) <= max(map(len, tokens)) + 7


def _state(cloud: Cloud) -> Any:
    """The gateway's shared state: the object whose `on_revoked` iam's event reaches."""
    from subsystems.gateway import REVOKED
    from subsystems.gateway.edge import GatewayState

    handlers = cloud.host.deps.events._handlers[REVOKED]
    return next(h.__self__ for h in handlers if isinstance(getattr(h, "__self__", None),
                                                         GatewayState))


async def test_a_revocation_beats_a_verification_under_way(cloud: Cloud,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    admin = await cloud.headers(org="acme", user="alice", roles=["owner"])
    made = await cloud.client.post("/v1/iam/keys", headers=admin,
                                   json={"name": "leaky", "roles": ["viewer"]})
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["id"]
    looked_up, release = asyncio.Event(), asyncio.Event()
    real = cloud.iam.clients.lookup_api_key

    async def slow(raw: str) -> Any:
        found = await real(raw)
        looked_up.set()
        await release.wait()  # iam has answered "valid"; the answer is on its way
        return found

    monkeypatch.setattr(cloud.iam.clients, "lookup_api_key", slow)
    headers = {"Authorization": f"Bearer {key}"}
    in_flight = asyncio.create_task(cloud.client.get(WHOAMI, headers=headers))
    await looked_up.wait()
    assert (await cloud.client.delete(f"/v1/iam/keys/{key_id}", headers=admin)).status_code \
        in (200, 204)
    release.set()
    await in_flight  # began before the revocation; whatever it got, it is not remembered
    monkeypatch.setattr(cloud.iam.clients, "lookup_api_key", real)
    assert (await cloud.client.get(WHOAMI, headers=headers)).status_code == 401


async def test_a_revocation_clears_only_its_own_org(cloud: Cloud) -> None:
    globex = await cloud.headers(org="globex", user="gina")
    assert (await cloud.client.get(WHOAMI, headers=globex)).status_code == 200
    state = _state(cloud)
    cached = [k for k, v in state.cache._items.items() if v.identity.org == "globex"]
    assert cached
    acme = await cloud.headers(org="acme", user="alice", roles=["owner"])
    await cloud.client.post("/v1/iam/oauth/logout", headers=acme)  # a revocation in acme
    assert all(k in state.cache._items for k in cached)
    assert not any(v.identity.org == "acme" for v in state.cache._items.values())


async def test_an_api_key_reports_the_bucket_that_binds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_GATEWAY_RATE_READ", "0.01:5")
    async with running_cloud(tmp_path / "data", []) as cloud:
        user = await cloud.headers(org="acme", user="alice")
        _, key = await cloud.iam.clients.create_api_key("acme", name="k", roles=["viewer"],
                                                        created_by="alice")
        for _ in range(3):
            assert (await cloud.client.get(WHOAMI, headers=user)).status_code == 200
        r = await cloud.client.get(WHOAMI, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert r.headers["ratelimit"].startswith('"read";r=1;')  # the org's, not the key's 4
