"""Spoofed identity headers never reach a handler; minted ones always do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloud import Cloud
from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.config import load_settings
from hanzocloud.host import build_host
from hanzocloud.http import JSONResponse
from hanzocloud.identity import current_identity
from hanzocloud.keys import MasterKey
from hanzocloud.registry import SUBSYSTEMS, Subsystem
from hanzocloud.routing import route


def mount(app: Any, deps: Any) -> None:
    """A test subsystem whose handler echoes every header and the identity it received."""
    async def echo(request: Request) -> Response:
        """Echo."""
        identity = current_identity.get()
        return JSONResponse({"headers": [[k, v] for k, v in request.headers.items()],
                             "org": identity.org, "user": identity.user,
                             "isAdmin": identity.is_admin})

    app.routes([route("/public", echo, policy="public"), route("/private", echo)])


@pytest.fixture
async def echo_cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    registry = (*[s for s in SUBSYSTEMS if s.name == "iam"], Subsystem("echo", __name__),
                *[s for s in SUBSYSTEMS if s.name == "gateway"])
    settings = load_settings({"data_dir": tmp_path / "data", "dev": True,
                              "enable": "iam,echo,gateway"}, environ={},
                             known=tuple(s.name for s in registry))
    host = build_host(settings, registry=registry, master=MasterKey(b"\x03" * 32, "t"))
    async with host.lifespan():
        transport = httpx.ASGITransport(app=host.public)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud.test") as c:
            yield Cloud(host, c)


SPOOFED = {
    "X-Org-Id": "globex", "x-tenant-id": "globex", "X-User-Id": "root",
    "X-User-Email": "root@evil", "X-Roles": "owner", "X-User-IsAdmin": "true",
    "X-User-Permissions": "admin", "X-IAM-Org": "globex", "X-Hanzo-Org": "globex",
    "X-Organization": "globex", "X-ORG-ID": "globex",
    # underscores for dashes: passed through by servers, read as dashes by some frameworks
    "X_User_Id": "root", "x_org_id": "globex", "X-Org_Id": "globex", "X_Roles": "owner",
}


@pytest.mark.parametrize("path", ["/v1/echo/public", "/v1/echo/private"],
                         ids=["public-route", "authenticated-route"])
async def test_spoofed_headers_are_replaced_by_minted_ones(echo_cloud: Cloud,
                                                           path: str) -> None:
    headers = {**SPOOFED, **await echo_cloud.headers(org="acme", user="alice",
                                                     roles=["viewer"])}
    r = await echo_cloud.client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    identity_headers = {k: v for k, v in seen if k.startswith(("x-org", "x-user", "x-roles",
                                                               "x-iam", "x-hanzo",
                                                               "x-tenant"))}
    assert identity_headers == {"x-org-id": "acme", "x-user-id": "alice",
                                "x-user-email": "alice@acme.test", "x-roles": "viewer",
                                "x-user-isadmin": "false"}
    assert [k for k, _ in seen].count("x-org-id") == 1
    assert r.json()["org"] == "acme" and not r.json()["isAdmin"]


async def test_spoofed_headers_without_a_token_reach_nothing(echo_cloud: Cloud) -> None:
    r = await echo_cloud.client.get("/v1/echo/public", headers=SPOOFED)
    assert r.status_code == 200
    names = {k for k, _ in r.json()["headers"]}
    assert not names & {h.lower() for h in SPOOFED}
    assert r.json()["org"] == "" and r.json()["user"] == ""
    private = await echo_cloud.client.get("/v1/echo/private", headers=SPOOFED)
    assert private.status_code == 401


async def test_invalid_token_with_spoofed_headers_is_401_not_anonymous(echo_cloud: Cloud) -> None:
    r = await echo_cloud.client.get("/v1/echo/public",
                                    headers={**SPOOFED, "Authorization": "Bearer a.b.c"})
    assert r.status_code == 401


async def test_mixed_case_header_names_from_a_lax_server_are_still_stripped(
        echo_cloud: Cloud) -> None:
    """ASGI servers lower-case header names; an app behind one that does not is still safe."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/v1/echo/public",
             "raw_path": b"/v1/echo/public", "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 1), "server": ("cloud.test", 80),
             "headers": [(b"host", b"cloud.test"),
                         *[(k.encode(), v.encode()) for k, v in SPOOFED.items()]]}
    await echo_cloud.host.public(scope, receive, send)
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:])
    seen = httpx.Response(200, content=body).json()
    assert not {k.lower() for k, _ in seen["headers"]} & {h.lower() for h in SPOOFED}
    assert seen["org"] == "" and seen["user"] == ""
