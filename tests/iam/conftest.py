"""Fixtures for iam tests: a running cloud with iam and the gateway, and token helpers."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cloud import TEST_PASSWORD, Cloud, running_cloud


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path / "data", ["iam", "gateway"]) as c:
        yield c


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def password_grant(cloud: Cloud, org: str = "acme", user: str = "alice",
                         **extra: str) -> Any:
    """Sign `user` in with the password grant of the org's first-party app."""
    await cloud.ensure_user(org=org, user=user, roles=["owner"], admin=False, email=None)
    app = await cloud.iam.clients.first_party_app(org)
    found = await cloud.iam.directory.find_user(org, user)
    data = {"grant_type": "password", "client_id": app.client_id, "username": found.email,
            "password": TEST_PASSWORD, **extra}
    return await cloud.client.post("/v1/iam/oauth/token", data=data)
