"""The sign-in page: brand theme, CSRF, generic failures, throttling, bad requests."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from cloud import TEST_PASSWORD, Cloud, running_cloud

from iam.conftest import pkce_pair

REDIRECT = "http://127.0.0.1:8765/callback"


async def authorize_params(cloud: Cloud) -> dict[str, str]:
    await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False, email=None)
    app = await cloud.iam.clients.first_party_app("acme")
    _, challenge = pkce_pair()
    return {"response_type": "code", "client_id": app.client_id, "redirect_uri": REDIRECT,
            "scope": "openid", "state": "s1", "code_challenge": challenge,
            "code_challenge_method": "S256"}


async def load_page(cloud: Cloud, params: dict[str, str]) -> tuple[httpx.Response, dict[str, str]]:
    page = await cloud.client.get("/v1/iam/oauth/authorize", params=params)
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">',
                             page.text))
    return page, fields


async def test_the_page_is_branded_and_sets_a_strict_csrf_cookie(cloud: Cloud) -> None:
    page, fields = await load_page(cloud, await authorize_params(cloud))
    assert page.status_code == 200
    brand = cloud.host.deps.brand
    assert brand.display_name in page.text and brand.colors.accent in page.text
    cookie = page.headers["set-cookie"]
    assert "hc_csrf=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert fields["csrf_token"] and fields["state"] == "s1"


CSRF = [("no-cookie", "drop-cookie"), ("wrong-token", "bad-token"), ("no-token", "no-token")]


@pytest.mark.parametrize("mode", [c[1] for c in CSRF], ids=[c[0] for c in CSRF])
async def test_posts_without_a_matching_csrf_token_are_refused(cloud: Cloud, mode: str) -> None:
    _, fields = await load_page(cloud, await authorize_params(cloud))
    fields.update(email="alice@acme.test", password=TEST_PASSWORD)
    if mode == "drop-cookie":
        cloud.client.cookies.clear()
    elif mode == "bad-token":
        fields["csrf_token"] = "A" * 43
    else:
        fields.pop("csrf_token")
    r = await cloud.client.post("/v1/iam/oauth/authorize", data=fields)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"


async def test_unknown_user_and_wrong_password_look_the_same(cloud: Cloud) -> None:
    _, fields = await load_page(cloud, await authorize_params(cloud))
    answers = []
    for email, password in (("alice@acme.test", "wrong password!"),
                            ("nobody@acme.test", "wrong password!")):
        r = await cloud.client.post("/v1/iam/oauth/authorize",
                                    data={**fields, "email": email, "password": password})
        answers.append((r.status_code, "Invalid email or password." in r.text))
    assert answers == [(401, True), (401, True)]
    ok = await cloud.client.post("/v1/iam/oauth/authorize", data={
        **fields, "email": "alice@acme.test", "password": TEST_PASSWORD})
    assert ok.status_code == 303 and ok.headers["location"].startswith(REDIRECT + "?code=")
    assert "state=s1" in ok.headers["location"]


async def test_repeated_failures_back_off_per_account(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_IAM_THROTTLE_FREE", "2")
    async with running_cloud(tmp_path / "data", []) as cloud:
        await cloud.ensure_user(org="acme", user="alice", roles=["owner"], admin=False,
                                email=None)
        app = await cloud.iam.clients.first_party_app("acme")
        form = {"grant_type": "password", "client_id": app.client_id,
                "username": "alice@acme.test", "password": "wrong password!"}
        codes = [(await cloud.client.post("/v1/iam/oauth/token", data=form)).status_code
                 for _ in range(4)]
        assert codes == [400, 400, 429, 429]  # two free failures, then backoff
        right = await cloud.client.post("/v1/iam/oauth/token",
                                        data={**form, "password": TEST_PASSWORD})
        assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
        # an unknown account is throttled exactly the same way
        ghost = {**form, "username": "ghost@acme.test"}
        ghost_codes = [(await cloud.client.post("/v1/iam/oauth/token", data=ghost)).status_code
                       for _ in range(4)]
        assert ghost_codes == codes


BAD_AUTHORIZE = [
    ("unknown-client", {"client_id": "nope_1"}, 400, None),
    ("unregistered-redirect", {"redirect_uri": "https://evil.example/cb"}, 400, None),
    ("malformed-redirect", {"redirect_uri": "http://[::1/cb"}, 400, None),
    # a loopback redirect may change its port, nothing else: no userinfo (which once reached
    # the page's CSP header), no fragment (the code would land in it)
    ("loopback-userinfo", {"redirect_uri": "http://x; script-src 'unsafe-inline' "
                                           "@127.0.0.1:9999/callback"}, 400, None),
    ("loopback-fragment", {"redirect_uri": "http://127.0.0.1:9999/callback#f"}, 400, None),
    ("no-pkce-for-public", {"code_challenge": ""}, 303, "invalid_request"),
    ("plain-pkce", {"code_challenge_method": "plain"}, 303, "invalid_request"),
    ("token-response-type", {"response_type": "token"}, 303, "unsupported_response_type"),
    ("bad-scope", {"scope": 'a"b'}, 303, "invalid_scope"),
]


@pytest.mark.parametrize(("change", "status", "error"), [b[1:] for b in BAD_AUTHORIZE],
                         ids=[b[0] for b in BAD_AUTHORIZE])
async def test_bad_authorization_requests(cloud: Cloud, change: dict[str, str], status: int,
                                          error: str | None) -> None:
    params = {**await authorize_params(cloud), **change}
    r = await cloud.client.get("/v1/iam/oauth/authorize", params=params)
    assert r.status_code == status, r.text
    if error is None:
        assert r.json()["error"]["code"] == "invalid_argument"  # never redirected
    else:
        assert r.headers["location"].startswith(REDIRECT) and f"error={error}" in \
            r.headers["location"] and "state=s1" in r.headers["location"]
