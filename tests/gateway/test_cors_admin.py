"""CORS from the brand's origins and the domain; the admin listener admits platform admins."""

from __future__ import annotations

import httpx
import pytest
from cloud import Cloud

from subsystems.gateway.cors import CorsPolicy

ORIGINS = [
    ("brand-exact", "https://hanzo.ai", True),
    ("brand-wildcard", "https://console.hanzo.ai", True),
    ("deep-wildcard", "https://a.b.hanzo.ai", True),
    ("domain-dev-http", "http://localhost", True),
    ("wrong-scheme", "http://console.hanzo.ai", False),
    ("suffix-trick", "https://evilhanzo.ai", False),
    ("other", "https://evil.example", False),
    ("null", "null", False),
]


@pytest.mark.parametrize(("origin", "allowed"), [o[1:] for o in ORIGINS],
                         ids=[o[0] for o in ORIGINS])
async def test_preflight_and_simple_requests(cloud: Cloud, origin: str, allowed: bool) -> None:
    pre = await cloud.client.options("/v1/gateway/whoami", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, content-type"})
    if allowed:
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == origin
        assert "authorization" in pre.headers["access-control-allow-headers"]
    else:
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    headers = {"Origin": origin, **await cloud.headers()}
    r = await cloud.client.get("/v1/gateway/whoami", headers=headers)
    assert r.status_code == 200
    assert (r.headers.get("access-control-allow-origin") == origin) is allowed
    denied = await cloud.client.get("/v1/gateway/whoami", headers={"Origin": origin})
    assert denied.status_code == 401  # errors carry CORS headers too, so browsers can read them
    assert (denied.headers.get("access-control-allow-origin") == origin) is allowed


def test_wildcards_never_match_lookalikes() -> None:
    policy = CorsPolicy(["https://*.example.com"])
    assert policy.allows("https://a.example.com")
    for origin in ("https://example.com", "https://a.example.com.evil", "https://a.example.com:8443",
                   "https://a.example.com/x", "https://x@a.example.com"):
        assert not policy.allows(origin), origin


async def test_admin_listener_admits_only_platform_admins(cloud: Cloud) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cloud.host.admin),
                                 base_url="http://admin.test") as admin:
        assert (await admin.get("/v1/gateway/status")).status_code == 401
        owner = await cloud.headers(org="acme", user="alice", roles=["owner"])
        assert (await admin.get("/v1/gateway/status", headers=owner)).status_code == 403
        spoof = {"X-User-IsAdmin": "true", "X-Roles": "owner", "X-Org-Id": "acme"}
        assert (await admin.get("/v1/gateway/status", headers=spoof)).status_code == 401
        root = await cloud.headers(org="acme", user="root", roles=["owner"], admin=True)
        r = await admin.get("/v1/gateway/status", headers=root)
        assert r.status_code == 200 and r.json()["mode"] == "iam-local"
        assert r.json()["cacheEntries"] >= 1
