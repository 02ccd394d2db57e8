"""A running in-process cloud for subsystem tests, and how tests authenticate against it.

`Cloud.headers(org=…, roles=…)` is the one place tests get credentials. Until the gateway
mints identities from real tokens, it uses the test edge (`X-Test-Identity`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hanzocloud.config import load_settings
from hanzocloud.host import Host, build_host
from hanzocloud.keys import MasterKey
from hanzocloud.registry import SUBSYSTEMS, Subsystem
from testsubsystems import TEST_REGISTRY

TESTGATE = TEST_REGISTRY[0]


@dataclass
class Cloud:
    host: Host
    client: httpx.AsyncClient

    async def token(self, *, org: str = "acme", user: str = "alice",
                    roles: Sequence[str] = ("owner",), admin: bool = False,
                    email: str | None = None) -> str:
        """A bearer token for a user of `org` holding `roles` (platform admin if `admin`)."""
        return "test:" + f"{org}/{user}/{'+'.join(roles)}" + ("/admin" if admin else "")

    async def headers(self, *, org: str = "acme", user: str = "alice",
                      roles: Sequence[str] = ("owner",), admin: bool = False,
                      email: str | None = None) -> dict[str, str]:
        """`Authorization` headers for that user (see `token`)."""
        token = await self.token(org=org, user=user, roles=roles, admin=admin, email=email)
        return {"Authorization": f"Bearer {token}"}


def registry_with_testgate() -> tuple[Subsystem, ...]:
    return (TESTGATE, *SUBSYSTEMS)


@contextlib.asynccontextmanager
async def running_cloud(data_dir: Path, enable: Sequence[str], *,
                        master: MasterKey | None = None, environ: dict[str, str] | None = None,
                        **flags: Any) -> AsyncIterator[Cloud]:
    """Build the real host for `enable` (plus the test edge) and serve it in-process."""
    registry = registry_with_testgate()
    names = tuple(s.name for s in registry)
    settings = load_settings(
        {"data_dir": data_dir, "dev": True, "enable": ",".join(["testgate", *enable]),
         "listen": "127.0.0.1:0", "health_listen": "127.0.0.1:0",
         "admin_listen": "127.0.0.1:0", "zap_listen": "127.0.0.1:0", **flags},
        environ=environ or {}, known=names)
    host = build_host(settings, registry=registry, master=master or MasterKey(b"\x01" * 32, "t"))
    async with host.lifespan():
        transport = httpx.ASGITransport(app=host.public)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud.test") as client:
            yield Cloud(host, client)
