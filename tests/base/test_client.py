"""The `base` Deps client, in-process and over ZAP: same calls, same results, same errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cloud import Cloud

from hanzocloud.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from hanzocloud.identity import Identity, current_identity
from hanzocloud.remote import RemoteClients, start_zap

from .support import Api

ALICE = Identity(org="acme", user="alice", roles=("owner",))


@pytest.fixture(params=["local", "remote"])
async def base(request: pytest.FixtureRequest, cloud: Cloud,
               posts: dict[str, str]) -> AsyncIterator[Any]:
    """`deps.base` as resolved in-process, or the generated RPC client over a ZAP listener."""
    if request.param == "local":
        yield cloud.host.deps.base
        return
    server = await start_zap(cloud.host.zap_services, cloud.host.deps.master,
                             host="127.0.0.1", port=0)
    remote = RemoteClients(cloud.host.deps.master)
    try:
        yield remote.factory("base", f"127.0.0.1:{server.port}")
    finally:
        await remote.close()
        await server.close()


@pytest.fixture
def as_alice() -> Any:
    token = current_identity.set(ALICE)
    yield ALICE
    current_identity.reset(token)


async def test_record_calls(base: Any, as_alice: Identity, posts: dict[str, str],
                            api: Api) -> None:
    got = json.loads(await base.get_record("posts", posts["p1"]))
    assert got["title"] == "p1" and got["collectionName"] == "posts"
    page = json.loads(await base.list_records("posts", "views >= 30", "-views", 1, 10))
    assert [i["title"] for i in page["items"]] == ["p4", "p3"] and page["totalItems"] == 2
    made = json.loads(await base.create_record("posts", json.dumps({"title": "rpc"}).encode()))
    changed = json.loads(await base.update_record("posts", made["id"], b'{"views": 3}'))
    assert changed["views"] == 3
    await base.delete_record("posts", made["id"])
    assert "rpc" not in {i["title"] for i in await api.items("posts")}


@pytest.mark.parametrize(("call", "error"), [
    (lambda b: b.get_record("posts", "zzzzzzzzzzzzzzz"), NotFound),
    (lambda b: b.get_record("nosuch", "zzzzzzzzzzzzzzz"), NotFound),
    (lambda b: b.list_records("posts", "views >", "", 1, 10), InvalidArgument),
    (lambda b: b.create_record("posts", b"not json"), InvalidArgument),
    (lambda b: b.create_record("posts", b'{"title": "p0"}'), InvalidArgument),
], ids=["missing", "no-collection", "bad-filter", "bad-json", "unique"])
async def test_errors_cross_the_wire(base: Any, as_alice: Identity, call: Any,
                                     error: type[Exception]) -> None:
    with pytest.raises(error):
        await call(base)


async def test_calls_need_an_org(base: Any) -> None:
    with pytest.raises(Unauthenticated):
        await base.get_record("posts", "zzzzzzzzzzzzzzz")


async def test_other_org_sees_nothing(base: Any, posts: dict[str, str]) -> None:
    token = current_identity.set(Identity(org="beta", user="mallory", roles=("owner",)))
    try:
        with pytest.raises(NotFound):
            await base.get_record("posts", posts["p0"])
    finally:
        current_identity.reset(token)


async def test_open_is_in_process_only_and_scoped(cloud: Cloud, as_alice: Identity) -> None:
    local = cloud.host.deps.base
    handle = await local.open("acme", "notes")
    assert handle.org == "acme" and handle.path.name == "notes.db"
    with pytest.raises(PermissionDenied):
        await local.open("beta", "notes")
    with pytest.raises(InvalidArgument):
        await local.open("acme", "base")
    token = current_identity.set(Identity(org="acme", user="root", is_admin=True))
    try:
        assert (await local.open("beta", "notes")).org == "beta"
    finally:
        current_identity.reset(token)
