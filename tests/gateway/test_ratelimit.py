"""Rate limits per org and per API key (token buckets per route class), and their headers."""

from __future__ import annotations

from pathlib import Path

import pytest
from cloud import running_cloud

from hanzocloud.errors import ConfigError
from subsystems.gateway.config import load_config
from subsystems.gateway.ratelimit import RateLimiter, route_class

WHOAMI = "/v1/gateway/whoami"


async def test_an_org_over_its_read_budget_gets_429_with_headers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_GATEWAY_RATE_READ", "0.01:3")
    async with running_cloud(tmp_path / "data", []) as cloud:
        acme = await cloud.headers(org="acme", user="alice")
        globex = await cloud.headers(org="globex", user="gina")
        answers = [await cloud.client.get(WHOAMI, headers=acme) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert answers[0].headers["ratelimit-policy"] == '"read";q=3;w=300'
        assert answers[0].headers["ratelimit"].startswith('"read";r=2;')
        limited = answers[3]
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit"].startswith('"read";r=0;')
        # another org has its own bucket; another user of acme shares acme's
        assert (await cloud.client.get(WHOAMI, headers=globex)).status_code == 200
        bob = await cloud.headers(org="acme", user="bob")
        assert (await cloud.client.get(WHOAMI, headers=bob)).status_code == 429
        status = await cloud.client.get("/v1/gateway/ratelimit", headers=globex)
        assert status.status_code == 200 and status.json()["classes"]["read"]["limit"] == 3


async def test_an_api_key_has_its_own_bucket_too(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_GATEWAY_RATE_READ", "0.01:2")
    async with running_cloud(tmp_path / "data", []) as cloud:
        await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False,
                                email=None)
        _, key = await cloud.iam.clients.create_api_key("acme", name="k", roles=["viewer"],
                                                        created_by="alice")
        headers = {"Authorization": f"Bearer {key}"}
        codes = [(await cloud.client.get(WHOAMI, headers=headers)).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter({"read": (2.0, 2.0)}, max_buckets=10, clock=lambda: now[0])
    assert [limiter.take("org:a", "read").allowed for _ in range(3)] == [True, True, False]
    now[0] = 0.5  # one token back at 2/s
    assert limiter.take("org:a", "read").allowed
    assert not limiter.take("org:a", "read").allowed


def test_buckets_are_bounded() -> None:
    limiter = RateLimiter({"read": (1.0, 1.0)}, max_buckets=3)
    for i in range(10):
        limiter.take(f"ip:{i}", "read")
    assert len(limiter) == 3


@pytest.mark.parametrize(("method", "path", "cls"), [
    ("GET", "/v1/kms/secrets", "read"), ("POST", "/v1/kms/secrets/x", "write"),
    ("POST", "/v1/iam/oauth/token", "auth"), ("DELETE", "/v1/base/x", "write"),
], ids=["get-read", "post-write", "token-auth", "delete-write"])
def test_route_classes(method: str, path: str, cls: str) -> None:
    assert route_class(method, path) == cls


@pytest.mark.parametrize("env", [{"CLOUD_GATEWAY_RATE_READ": "fast"},
                                 {"CLOUD_GATEWAY_RATE_WRITE": "0:5"},
                                 {"CLOUD_GATEWAY_CACHE_SIZE": "0"},
                                 {"CLOUD_GATEWAY_REVOCATION_WINDOW": "soon"}],
                         ids=["rate-not-number", "zero-rate", "empty-cache", "bad-window"])
def test_bad_gateway_settings_are_one_sentence(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        load_config(env)


async def test_rate_limit_headers_ride_on_handler_errors_too(tmp_path: Path) -> None:
    async with running_cloud(tmp_path / "data", []) as cloud:
        acme = await cloud.headers(org="acme", user="alice")
        missing = await cloud.client.get("/v1/iam/users/nobody-here", headers=acme)
        assert missing.status_code == 404
        assert missing.headers["ratelimit-policy"].startswith('"read";')
        assert missing.headers["ratelimit"].startswith('"read";r=')
        assert missing.headers["x-request-id"]
        assert [k for k, _ in missing.headers.multi_items()].count("ratelimit") == 1
