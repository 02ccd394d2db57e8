"""A token for org B never reads org A's data: every route of every subsystem in the
registry, called as B (an owner of B) with A's names and ids in its path and A's request
bodies replayed, never returns A's marker. The route list is the host's compiled table, so
a subsystem that lands later is covered without editing this file."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from cloud import Cloud, running_cloud

from hanzocloud.config import load_settings
from hanzocloud.host import build_host
from hanzocloud.keys import MasterKey
from hanzocloud.mount import RouteEntry
from hanzocloud.registry import SUBSYSTEMS

pytestmark = pytest.mark.asyncio(loop_scope="module")
MARKER = "orgA-secret-7c1f9e"
ORG_A, ORG_B = "orga", "orgb"
PARAM = re.compile(r"\{([^}:]+)(:[^}]*)?\}")
WRITE = ("POST", "PUT", "PATCH", "DELETE")


def _table() -> list[RouteEntry]:
    """The compiled route table of a host with every registered subsystem enabled."""
    tmp = Path(tempfile.mkdtemp())
    try:
        settings = load_settings({"data_dir": tmp, "dev": True}, environ={})
        host = build_host(settings, master=MasterKey(b"\x04" * 32, "t"))
        return list(host.table)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


CALLS = [(e, m) for e in _table() for m in sorted(e.methods - {"HEAD"})]

# Org A's data, through each subsystem's public API (subsystems not enabled are skipped by
# the table; a seed whose route does not exist simply fails and is ignored).
SEEDS: list[tuple[str, str, dict[str, Any]]] = [
    ("PUT", "/v1/kms/secrets/seed1", {"value": MARKER}),
    ("POST", "/v1/kms/transit/keys/seed1", {}),
    ("POST", "/v1/kms/transit/encrypt/seed1",
     {"plaintext": base64.b64encode(MARKER.encode()).decode()}),
    ("POST", "/v1/base/api/collections", {
        "name": "seed1", "fields": [{"name": "title", "type": "text"}], "listRule": "",
        "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": ""}),
    ("POST", "/v1/base/api/collections/seed1/records", {"title": MARKER}),
    ("POST", "/v1/iam/roles", {"name": "seedrole", "description": MARKER}),
    ("POST", "/v1/iam/users", {"email": "seed@orga.test", "password": "long enough pw",
                               "name": MARKER, "roles": ["viewer"]}),
    ("POST", "/v1/iam/apps", {"name": MARKER, "public": False,
                              "grants": ["client_credentials"]}),
    ("POST", "/v1/iam/keys", {"name": MARKER, "roles": ["viewer"]}),
]


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


async def asgi_call(app: Any, method: str, path: str, headers: dict[str, str],
                    body: bytes, *, timeout: float = 1.0) -> tuple[int, bytes]:
    """Call an ASGI app directly, keeping what a streaming response sent before `timeout`."""
    status, chunks = 0, []
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": raw_headers,
             "client": ("127.0.0.1", 5000), "server": ("cloud.test", 80)}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    # a stream (e.g. server-sent events) is cut at `timeout`: judge what it sent so far
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app(scope, receive, send), timeout)
    return status, b"".join(chunks)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    names = [s.name for s in SUBSYSTEMS]
    async with running_cloud(tmp_path_factory.mktemp("iso") / "data", names) as cloud:
        a = await cloud.headers(org=ORG_A, user="ann", roles=["owner"])
        b = await cloud.headers(org=ORG_B, user="bob", roles=["owner"])
        candidates, bodies = ["seed1", "ann"], []
        for method, path, body in SEEDS:
            r = await cloud.client.request(method, path, json=body, headers=a)
            if r.status_code < 300:
                bodies.append(body)
                try:
                    data = r.json()
                except ValueError:
                    continue
                for s in _strings(data):
                    if s != MARKER and 0 < len(s) <= 80 and re.fullmatch(r"[\w.:-]+", s):
                        candidates.append(s)
                        if s.startswith(("vault:", "hk-")):
                            bodies.append({"ciphertext": s, "token": s, "key": s})
        yield {"cloud": cloud, "a": a, "b": b, "candidates": list(dict.fromkeys(candidates))[:12],
               "bodies": bodies}


def _ids() -> list[str]:
    return [f"{e.listener}:{m} {e.path}" for e, m in CALLS]


@pytest.mark.parametrize(("entry", "method"), CALLS, ids=_ids())
async def test_org_b_never_sees_org_a_data(seeded: dict[str, Any], entry: RouteEntry,
                                           method: str) -> None:
    cloud: Cloud = seeded["cloud"]
    app = cloud.app_for(entry.path, admin=entry.listener == "admin")
    values = seeded["candidates"] if PARAM.search(entry.path) else ["-"]
    bodies = [{}, *seeded["bodies"]] if method in WRITE else [None]
    for value in values:
        path = PARAM.sub(value, entry.path)
        for body in bodies:
            payload = msgspec.json.encode(body) if body is not None else b""
            # B replays A's request shapes but never A's marker: an echo of B's own input
            # is not a leak, so only A's stored data can put the marker in a response.
            payload = payload.replace(MARKER.encode(), b"orgB-probe-000000")
            headers = {**seeded["b"], "content-type": "application/json"}
            status, raw = await asgi_call(app, method, path, headers, payload)
            assert status != 500, f"{method} {path} answered 500"
            assert MARKER.encode() not in raw, f"{method} {path} leaked org A data: {raw[:300]!r}"


async def test_org_a_still_has_its_data(seeded: dict[str, Any]) -> None:
    cloud: Cloud = seeded["cloud"]
    listed = await cloud.client.get("/v1/iam/users", headers=seeded["a"])
    assert MARKER in listed.text
    cloud._tokens.clear()  # B's session ended when the sweep called the logout route
    b = await cloud.headers(org=ORG_B, user="bob", roles=["owner"])
    mine = await cloud.client.get("/v1/iam/users", headers=b)
    assert mine.status_code == 200 and MARKER not in mine.text
    if any(s.name == "kms" for s in SUBSYSTEMS):
        secret = await cloud.client.get("/v1/kms/secrets/seed1", headers=seeded["a"])
        assert MARKER in secret.text, secret.text


async def test_every_route_is_covered() -> None:
    covered = {(e.listener, e.path) for e, _ in CALLS}
    assert covered == {(e.listener, e.path) for e in _table()}
