"""A running in-process cloud for subsystem tests, and how tests authenticate against it.

`running_cloud` always enables iam and the gateway, so every request goes through the real
edge. With `CLOUD_TEST_SPLIT=1` it builds the split deployment instead: iam and kms in one
host, base in another, each serving its subsystems on its own ZAP listener on loopback and
reaching the other's through `CLOUD_<NAME>_ZAP_ADDR` — so the same tests run against the
RPC clients. `Cloud.token(org=…, user=…, roles=…)` returns a real access token: on first use it
creates the org (with its first-party app) and the user through iam's service layer, then
signs in with the real password grant over `cloud.client`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hanzocloud.config import load_settings
from hanzocloud.host import Host, build_host
from hanzocloud.keys import MasterKey
from hanzocloud.registry import SUBSYSTEMS, Subsystem
from testsubsystems import TEST_REGISTRY

TESTGATE = TEST_REGISTRY[0]
TEST_PASSWORD = "correct horse battery staple"
ALWAYS = ("iam", "gateway")
# Test users hash with cheap argon2 parameters; production defaults are far costlier.
os.environ.setdefault("CLOUD_IAM_ARGON2_TIME_COST", "1")
os.environ.setdefault("CLOUD_IAM_ARGON2_MEMORY_KIB", "8192")


SPLIT = os.environ.get("CLOUD_TEST_SPLIT") == "1"
SPLIT_FIRST = ("iam", "kms")  # the first host; every other subsystem runs in the second


@dataclass
class Cloud:
    host: Host
    client: httpx.AsyncClient
    iam_host: Host | None = None
    _tokens: dict[tuple[str, str, tuple[str, ...], bool], tuple[str, float]] = field(
        default_factory=dict)

    @property
    def iam(self) -> Any:
        """iam's in-process service (its service layer: orgs, users, apps, keys)."""
        return (self.iam_host or self.host).deps.iam.target

    def app_for(self, path: str, *, admin: bool = False) -> Any:
        """The public (or admin) ASGI app of the host that serves `path`."""
        hosts = [self.host] if self.iam_host is None else [self.host, self.iam_host]
        owner = next((h for h in hosts for p in h.points
                      if p.name != "gateway" and (path == p.prefix
                                                  or path.startswith(p.prefix + "/"))),
                     self.iam_host or self.host)
        return owner.admin if admin else owner.public

    async def ensure_user(self, *, org: str, user: str, roles: Sequence[str], admin: bool,
                          email: str | None) -> None:
        """Create the org and the user, or bring the user's roles and admin flag up to date."""
        iam = self.iam
        await iam.ensure_org(org)
        existing = await iam.directory.find_user(org, user)
        if existing is None:
            await iam.directory.create_user(org, email=email or f"{user}@{org}.test",
                                            password=TEST_PASSWORD, roles=list(roles),
                                            is_admin=admin, user_id=user)
        elif list(existing.roles) != list(roles) or existing.is_admin != admin:
            await iam.directory.update_user(org, user, roles=list(roles), is_admin=admin)

    async def token(self, *, org: str = "acme", user: str = "alice",
                    roles: Sequence[str] = ("owner",), admin: bool = False,
                    email: str | None = None) -> str:
        """A real access token for a user of `org` holding `roles` (platform admin if
        `admin`), obtained with the password grant of the org's first-party app."""
        key = (org, user, tuple(roles), admin)
        cached = self._tokens.get(key)
        if cached is not None and cached[1] > time.time() + 30:
            return cached[0]
        await self.ensure_user(org=org, user=user, roles=roles, admin=admin, email=email)
        found = await self.iam.directory.find_user(org, user)
        app = await self.iam.clients.first_party_app(org)
        response = await self.client.post("/v1/iam/oauth/token", data={
            "grant_type": "password", "client_id": app.client_id, "username": found.email,
            "password": TEST_PASSWORD, "scope": "openid profile email"})
        assert response.status_code == 200, response.text
        body = response.json()
        self._tokens[key] = (body["access_token"], time.time() + body["expires_in"])
        return str(body["access_token"])

    async def headers(self, *, org: str = "acme", user: str = "alice",
                      roles: Sequence[str] = ("owner",), admin: bool = False,
                      email: str | None = None) -> dict[str, str]:
        """`Authorization` headers for that user (see `token`)."""
        token = await self.token(org=org, user=user, roles=roles, admin=admin, email=email)
        return {"Authorization": f"Bearer {token}"}


def registry_with_testgate() -> tuple[Subsystem, ...]:
    """The test edge plus the real registry (for hosts that predate real tokens)."""
    return (TESTGATE, *SUBSYSTEMS)


def _settings(data_dir: Path, names: Sequence[str], environ: dict[str, str],
              flags: dict[str, Any]) -> Any:
    return load_settings(
        {"data_dir": data_dir, "dev": True, "enable": ",".join(names),
         "listen": "127.0.0.1:0", "health_listen": "127.0.0.1:0",
         "admin_listen": "127.0.0.1:0", "zap_listen": "127.0.0.1:0", **flags},
        environ=environ)


@contextlib.asynccontextmanager
async def running_cloud(data_dir: Path, enable: Sequence[str], *,
                        master: MasterKey | None = None, environ: dict[str, str] | None = None,
                        **flags: Any) -> AsyncIterator[Cloud]:
    """Build the real host for `enable` plus iam and the gateway, and serve it in-process."""
    master = master or MasterKey(b"\x01" * 32, "t")
    wanted = set(enable) | set(ALWAYS)
    if SPLIT:
        async with _split_cloud(data_dir, enable, wanted, master, environ or {}, flags) as c:
            yield c
        return
    names = [s.name for s in SUBSYSTEMS if s.name in wanted]
    host = build_host(_settings(data_dir, names, environ or {}, flags), master=master)
    async with host.lifespan():
        transport = httpx.ASGITransport(app=host.public)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud.test") as client:
            yield Cloud(host, client)


class _SplitTransport(httpx.AsyncBaseTransport):
    """Sends each request to the host that mounts the subsystem of its path."""

    def __init__(self, first: Host, second: Host) -> None:
        self.first = httpx.ASGITransport(app=first.public)
        self.second = httpx.ASGITransport(app=second.public)
        self.prefixes = tuple(p.prefix for p in second.points if p.name != "gateway")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        inside = any(path == p or path.startswith(p + "/") for p in self.prefixes)
        return await (self.second if inside else self.first).handle_async_request(request)


@contextlib.asynccontextmanager
async def _split_cloud(data_dir: Path, enable: Sequence[str], wanted: set[str],
                       master: MasterKey, environ: dict[str, str],
                       flags: dict[str, Any]) -> AsyncIterator[Cloud]:
    from conftest import free_port
    from hanzocloud.remote import start_zap

    first_names = [s.name for s in SUBSYSTEMS if s.name in (*SPLIT_FIRST, "gateway")]
    second_names = [s.name for s in SUBSYSTEMS
                    if (s.name in wanted and s.name not in SPLIT_FIRST) or s.name == "gateway"]
    ports = {"first": free_port(), "second": free_port()}
    first_env = {**environ, **{f"CLOUD_{n.upper()}_ZAP_ADDR": f"127.0.0.1:{ports['second']}"
                               for n in second_names if n != "gateway"}}
    second_env = {**environ, **{f"CLOUD_{n.upper()}_ZAP_ADDR": f"127.0.0.1:{ports['first']}"
                                for n in SPLIT_FIRST}}
    # One data dir for both: like a shared volume, so org extension modules are visible to each.
    first = build_host(_settings(data_dir, first_names, first_env, flags), master=master)
    second = build_host(_settings(data_dir, second_names, second_env, flags), master=master)
    async with contextlib.AsyncExitStack() as stack:
        for host, port in ((first, ports["first"]), (second, ports["second"])):
            await stack.enter_async_context(host.lifespan())
            if host.zap_services:
                zap = await start_zap(host.zap_services, master, host="127.0.0.1", port=port)
                stack.push_async_callback(zap.close)
        primary = second if any(n in second_names and n != "gateway" for n in enable) \
            else first
        transport = _SplitTransport(first, second)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud.test") as client:
            yield Cloud(primary, client, iam_host=first)
