"""A running in-process cloud for subsystem tests, and how tests authenticate against it.

`running_cloud` always enables iam and the gateway, so every request goes through the real
edge. With `CLOUD_TEST_SPLIT=1` it builds the split deployment instead, in two OS processes:
iam and kms in one `hanzocloud` process, base in another, each reaching the other's
subsystems over ZAP on loopback through `CLOUD_<NAME>_ZAP_ADDR`. The side that holds what the
test exercises runs in the test process (so tests can still look inside its host); the other
side is a real `hanzocloud` server subprocess, started once per test session and shared.

`Cloud.token(org=…, user=…, roles=…)` returns a real access token: on first use it creates the
org (with its first-party app) and the user through iam's service layer — over the data dir
of whichever process runs iam, as `hanzocloud iam` does while a server runs — then signs in
with the real password grant over `cloud.client`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import os
import shutil
import tempfile
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
SPLIT_FIRST = ("iam", "kms")  # the first process; every other subsystem runs in the second
TEST_MASTER = MasterKey(b"\x01" * 32, "t")


@dataclass
class Cloud:
    host: Host
    client: httpx.AsyncClient
    peer: Peer | None = None  # split mode: the other side, a server subprocess
    iam_service: Any = None  # split mode with iam in the peer: its service layer, from here
    _tokens: dict[tuple[str, str, tuple[str, ...], bool], tuple[str, float]] = field(
        default_factory=dict)

    @property
    def iam(self) -> Any:
        """iam's service layer (orgs, users, apps, keys), wherever iam runs."""
        return self.iam_service if self.iam_service is not None else self.host.deps.iam.target

    def app_for(self, path: str, *, admin: bool = False) -> Any:
        """An ASGI app that serves `path`: the in-process host's public (or admin) app, or,
        when the peer process owns the path, an app that forwards to it over HTTP."""
        if self.peer is not None and self.peer.owns(path):
            return _Forward(self.peer.urls["admin" if admin else "public"])
        return self.host.admin if admin else self.host.public

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
    master = master or TEST_MASTER
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


class Peer:
    """One side of the split deployment, running as a `hanzocloud` server subprocess."""

    def __init__(self, names: Sequence[str], data_dir: Path, server: Any) -> None:
        self.names = tuple(names)
        self.data_dir = data_dir
        self.server = server
        self.urls: dict[str, str] = server.urls
        self.zap_addr = server.urls["zap"].removeprefix("zap://")
        self.prefixes = tuple(f"/v1/{n}" for n in self.names)

    def owns(self, path: str) -> bool:
        """Whether a request for `path` goes to this process."""
        if path.startswith("/.well-known/"):
            return "iam" in self.names
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    def stop(self) -> None:
        if self.server.proc.poll() is None:
            self.server.proc.terminate()
            try:
                self.server.proc.wait(timeout=20)
            except Exception:  # noqa: BLE001 - a stuck peer is killed
                self.server.proc.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


_PEERS: dict[tuple[str, ...], Peer] = {}


@functools.cache
def _home_zap_port() -> int:
    """The in-process side listens for ZAP here, so the shared peer can reach whichever host
    the current test runs (one at a time; if a test holds two clouds, the second gets any
    port)."""
    from conftest import free_port

    return free_port()


def _peer(names: Sequence[str]) -> Peer:
    """The session's server subprocess running `names` (and the gateway), started on demand."""
    key = tuple(names)
    peer = _PEERS.get(key)
    if peer is not None and peer.server.proc.poll() is None:
        return peer
    from conftest import hanzocloud_cmd, start_server, subprocess_env

    data_dir = Path(tempfile.mkdtemp(prefix="cloud-peer-"))
    home = f"127.0.0.1:{_home_zap_port()}"
    others = [s.name for s in SUBSYSTEMS if s.name not in (*names, "gateway")]
    env = subprocess_env(
        CLOUD_TEST_PEER_KEY=base64.b64encode(TEST_MASTER.material).decode(),
        CLOUD_IAM_ARGON2_TIME_COST="1", CLOUD_IAM_ARGON2_MEMORY_KIB="8192",
        # one server for the whole session: never throttle the suites' sign-ins
        **{f"CLOUD_GATEWAY_RATE_{c}": "100000" for c in ("READ", "WRITE", "AUTH", "ANON")},
        **{f"CLOUD_{n.upper()}_ZAP_ADDR": home for n in others})
    server = start_server([
        *hanzocloud_cmd(), f"--enable={','.join((*names, 'gateway'))}",
        f"--data-dir={data_dir}", "--kms-master-key-ref=env:CLOUD_TEST_PEER_KEY",
        "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
        "--zap-listen=127.0.0.1:0", "--log-level=warning"], env=env)
    peer = Peer(names, data_dir, server)
    _PEERS[key] = peer
    return peer


@atexit.register
def _stop_peers() -> None:
    for peer in _PEERS.values():
        peer.stop()


class _Forward:
    """An ASGI app that replays a request against a server over real HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.lower() not in (b"host", b"content-length")]
        url = scope["path"] + (f"?{scope['query_string'].decode()}"
                               if scope.get("query_string") else "")
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            response = await http.request(scope["method"], url, headers=headers, content=body)
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                                for k, v in response.headers.items()
                                if k.lower() not in ("content-length", "content-encoding",
                                                     "transfer-encoding")]})
        await send({"type": "http.response.body", "body": response.content})


class _SplitTransport(httpx.AsyncBaseTransport):
    """Sends each request to the process that serves its path: the peer over real HTTP,
    everything else (the home host's subsystems, /v1/ext, /v1/brand, …) in-process."""

    def __init__(self, home: Host, peer: Peer) -> None:
        self.home = httpx.ASGITransport(app=home.public)
        self.peer = peer
        self.remote = httpx.AsyncHTTPTransport()
        self.remote_url = httpx.URL(peer.urls["public"])

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.peer.owns(request.url.path):
            return await self.home.handle_async_request(request)
        request.url = request.url.copy_with(scheme=self.remote_url.scheme,
                                            host=self.remote_url.host,
                                            port=self.remote_url.port)
        request.headers["host"] = self.remote_url.netloc.decode()
        return await self.remote.handle_async_request(request)

    async def aclose(self) -> None:
        await self.remote.aclose()


@contextlib.asynccontextmanager
async def _split_cloud(data_dir: Path, enable: Sequence[str], wanted: set[str],
                       master: MasterKey, environ: dict[str, str],
                       flags: dict[str, Any]) -> AsyncIterator[Cloud]:
    from hanzocloud.remote import start_zap

    second = [s.name for s in SUBSYSTEMS if s.name not in (*SPLIT_FIRST, "gateway")]
    # The test process runs the side that holds what the test enabled beyond iam and the
    # gateway; the other side is the shared peer process.
    home_second = any(n in second for n in enable)
    peer = _peer(SPLIT_FIRST if home_second else second)
    home_names = [s.name for s in SUBSYSTEMS if s.name == "gateway" or (
        (s.name in wanted and s.name in second) if home_second else s.name in SPLIT_FIRST)]
    env = {**environ, **{f"CLOUD_{n.upper()}_ZAP_ADDR": peer.zap_addr for n in peer.names}}
    host = build_host(_settings(data_dir, home_names, env, flags), master=master)
    iam_service = None
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(host.lifespan())
        if host.zap_services:
            try:
                zap = await start_zap(host.zap_services, master, host="127.0.0.1",
                                      port=_home_zap_port())
            except OSError:  # another cloud of this test holds the port
                zap = await start_zap(host.zap_services, master, host="127.0.0.1", port=0)
            stack.push_async_callback(zap.close)
        if "iam" in peer.names:
            # iam's service layer over the peer's data dir, as `hanzocloud iam` works on a
            # running server's files: tests provision orgs and users through it.
            tool_settings = load_settings({"data_dir": peer.data_dir, "dev": True,
                                           "enable": "iam"}, environ={})
            tool = build_host(tool_settings, master=TEST_MASTER)
            stack.push_async_callback(tool.deps.tenants.close)
            iam_service = tool.deps.iam.target
        transport = _SplitTransport(host, peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud.test") as client:
            yield Cloud(host, client, peer=peer, iam_service=iam_service)
