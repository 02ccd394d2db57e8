"""Who may do what: viewers see names and metadata, editors read values and use keys,
admins and owners write and manage. Every route, every built-in role, and no token at all."""

from __future__ import annotations

from typing import Any

import pytest

from .support import Kms, assert_error, b64

ROLES = ["viewer", "editor", "admin", "owner"]

# (id, method, url, body, lowest role allowed)
ROUTES: list[tuple[str, str, str, dict[str, Any] | None, str]] = [
    ("list", "GET", "/secrets", None, "viewer"),
    ("metadata", "GET", "/metadata/app/x", None, "viewer"),
    ("read-value", "GET", "/secrets/app/x", None, "editor"),
    ("resolve", "GET", "/resolve?ref=kms://hanzo/acme/app/x", None, "editor"),
    ("write", "PUT", "/secrets/app/x", {"value": "v"}, "admin"),
    ("soft-delete", "DELETE", "/secrets/app/x", None, "admin"),
    ("delete-versions", "POST", "/delete/app/x", {"versions": [1]}, "admin"),
    ("undelete", "POST", "/undelete/app/x", {"versions": [1]}, "admin"),
    ("destroy", "POST", "/destroy/app/x", {"versions": [1]}, "admin"),
    ("configure", "PUT", "/metadata/app/x", {"max_versions": 5}, "admin"),
    ("purge", "DELETE", "/metadata/app/x", None, "admin"),
    ("audit", "GET", "/audit", None, "admin"),
    ("key-list", "GET", "/transit/keys", None, "viewer"),
    ("key-describe", "GET", "/transit/keys/enc", None, "viewer"),
    ("key-create", "POST", "/transit/keys/new", {"type": "ed25519"}, "admin"),
    ("key-rotate", "POST", "/transit/keys/enc/rotate", None, "admin"),
    ("key-config", "PUT", "/transit/keys/enc/config", {"deletion_allowed": False}, "admin"),
    ("key-delete", "DELETE", "/transit/keys/enc", None, "admin"),
    ("encrypt", "POST", "/transit/encrypt/enc", {"plaintext": b64("x")}, "editor"),
    ("decrypt", "POST", "/transit/decrypt/enc", {"ciphertext": "{ct}"}, "editor"),
    ("rewrap", "POST", "/transit/rewrap/enc", {"ciphertext": "{ct}"}, "editor"),
    ("datakey", "POST", "/transit/datakey/wrapped/enc", None, "editor"),
    ("sign", "POST", "/transit/sign/sig", {"input": b64("x")}, "editor"),
    ("verify", "POST", "/transit/verify/sig", {"input": b64("x"), "signature": "{sig}"},
     "viewer"),
]


@pytest.fixture
async def ready(kms: Kms) -> dict[str, str]:
    await kms.ok("PUT", "/secrets/app/x", json={"value": "v"})
    await kms.ok("POST", "/transit/keys/enc", json={"type": "aes256-gcm"})
    await kms.ok("POST", "/transit/keys/sig", json={"type": "ed25519"})
    ct = await kms.ok("POST", "/transit/encrypt/enc", json={"plaintext": b64("x")})
    sig = await kms.ok("POST", "/transit/sign/sig", json={"input": b64("x")})
    return {"{ct}": ct["ciphertext"], "{sig}": sig["signature"]}


def _fill(body: dict[str, Any] | None, values: dict[str, str]) -> dict[str, Any] | None:
    if body is None:
        return None
    return {k: values.get(v, v) if isinstance(v, str) else v for k, v in body.items()}


@pytest.mark.parametrize(("method", "url", "body", "lowest"), [r[1:] for r in ROUTES],
                         ids=[r[0] for r in ROUTES])
async def test_role_matrix(kms: Kms, ready: dict[str, str], method: str, url: str,
                           body: dict[str, Any] | None, lowest: str) -> None:
    for role in ROLES:  # weakest first, so a destructive call runs after the refusals
        r = await kms.as_(role=role, user=f"user-{role}").call(method, url,
                                                               json=_fill(body, ready))
        if ROLES.index(role) < ROLES.index(lowest):
            assert_error(r, 403, "permission_denied")
        else:
            assert r.status_code not in (401, 403), (role, r.status_code, r.text)


@pytest.mark.parametrize(("method", "url"), [(r[1], r[2]) for r in ROUTES],
                         ids=[r[0] for r in ROUTES])
async def test_no_token_is_401(kms: Kms, method: str, url: str) -> None:
    r = await kms.cloud.client.request(method, f"/v1/kms{url}")
    assert_error(r, 401)


async def test_viewer_sees_names_never_values(kms: Kms, ready: dict[str, str]) -> None:
    viewer = kms.as_(role="viewer", user="vic")
    listed = await viewer.ok("GET", "/secrets")
    assert [i["path"] for i in listed["items"]] == ["app/x"]
    assert all("value" not in item for item in listed["items"])
    meta = await viewer.ok("GET", "/metadata/app/x")
    assert "value" not in str(meta)
    assert_error(await viewer.call("GET", "/secrets/app/x"), 403, "permission_denied")
