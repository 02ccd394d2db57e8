"""Org extension hooks around record writes: deny, modify, after-hooks, and org isolation."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import wasmtime
from cloud import Cloud

from .support import Api, api_for

ROOT = Path(__file__).resolve().parents[2]
HOOK_WAT = (ROOT / "tests" / "ext" / "guests" / "hook.wat").read_text()


async def install(cloud: Cloud, org: str, name: str, renames: dict[str, str]) -> None:
    source = HOOK_WAT
    for old, new in renames.items():
        source = source.replace(f'(export "{old}")', f'(export "{new}")')
    body = {"manifest": {"name": name, "version": "1.0.0", "runtime": "wasm",
                         "module": "hook.wasm", "exports": sorted(renames.values())},
            "wasm": base64.b64encode(wasmtime.wat2wasm(source)).decode()}
    headers = await cloud.headers(org=org, user="admin", roles=["admin"])
    r = await cloud.client.put("/v1/ext/modules", headers=headers, json=body)
    assert r.status_code == 201, r.text


async def notes(api: Api) -> None:
    await api.collection("notes", [{"name": "text", "type": "text"},
                                   {"name": "amount", "type": "number"}])


async def test_before_create_deny_stores_nothing(cloud: Cloud, api: Api) -> None:
    await notes(api)
    await install(cloud, "acme", "limits", {"deny": "base_before_create"})
    r = await api.post("/collections/notes/records", {"text": "x", "amount": 5})
    assert r.status_code == 400
    assert "amount over limit" in r.text
    assert await api.items("notes") == []


async def test_before_create_modify_replaces_the_record(cloud: Cloud, api: Api) -> None:
    await notes(api)
    # This guest's `modify` answers with its whole input as the record, so the stored
    # record is built from {collection, record, org}: none of the original fields survive.
    await install(cloud, "acme", "shape", {"modify": "base_before_create"})
    r = await api.post("/collections/notes/records", {"text": "kept", "amount": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["text"], r.json()["amount"]) == ("", 0)
    assert [(n["text"], n["amount"]) for n in await api.items("notes")] == [("", 0)]


async def test_hooks_of_one_org_never_run_for_another(cloud: Cloud, api: Api) -> None:
    await install(cloud, "acme", "limits", {"deny": "base_before_create"})
    other = await api_for(cloud, org="globex", user="gina")
    await notes(other)
    r = await other.post("/collections/notes/records", {"text": "fine", "amount": 5})
    assert r.status_code == 200, r.text
    assert [n["text"] for n in await other.items("notes")] == ["fine"]


async def test_after_hook_sees_committed_record(cloud: Cloud, api: Api) -> None:
    await notes(api)
    await install(cloud, "acme", "audit", {"deny": "base_after_create"})
    r = await api.post("/collections/notes/records", {"text": "stored", "amount": 2})
    assert r.status_code == 200  # an after-hook cannot undo a committed write
    assert [n["text"] for n in await api.items("notes")] == ["stored"]


def _batch(*requests: tuple[str, str, object]) -> dict[str, object]:
    return {"requests": [{"method": m, "url": u, "body": b} for m, u, b in requests]}


async def test_batch_runs_before_hooks_and_a_deny_writes_nothing(cloud: Cloud,
                                                                 api: Api) -> None:
    await notes(api)
    kept = await api.create("notes", {"text": "kept", "amount": 1})
    await install(cloud, "acme", "limits", {"deny": "base_before_delete"})
    r = await api.post("/batch", _batch(
        ("POST", "/api/collections/notes/records", {"text": "new", "amount": 2}),
        ("DELETE", f"/api/collections/notes/records/{kept['id']}", None)))
    assert r.status_code == 400
    assert "request 1" in r.json()["message"]
    assert "1" in r.json()["data"]["requests"]
    assert [n["text"] for n in await api.items("notes")] == ["kept"]


async def test_batch_modify_hook_replaces_each_body(cloud: Cloud, api: Api) -> None:
    await notes(api)
    await install(cloud, "acme", "shape", {"modify": "base_before_create"})
    r = await api.post("/batch", _batch(
        ("POST", "/api/collections/notes/records", {"text": "a", "amount": 1}),
        ("POST", "/api/collections/notes/records", {"text": "b", "amount": 2})))
    assert r.status_code == 200, r.text
    assert [(n["text"], n["amount"]) for n in await api.items("notes")] == [("", 0), ("", 0)]


async def test_batch_after_hooks_see_every_committed_write(
        cloud: Cloud, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from subsystems.base.hooks import RecordHooks

    seen: list[tuple[str, str, str]] = []
    original = RecordHooks.after

    async def spy(self: RecordHooks, org: str, action: str, collection: str,
                  record: dict[str, object]) -> None:
        seen.append((action, collection, str(record.get("text", record["id"]))))
        await original(self, org, action, collection, record)

    monkeypatch.setattr(RecordHooks, "after", spy)
    await notes(api)
    old = await api.create("notes", {"text": "old", "amount": 1})
    gone = await api.create("notes", {"text": "gone", "amount": 1})
    seen.clear()
    r = await api.post("/batch", _batch(
        ("POST", "/api/collections/notes/records?fields=id", {"text": "made", "amount": 1}),
        ("PATCH", f"/api/collections/notes/records/{old['id']}", {"text": "edited"}),
        ("PUT", "/api/collections/notes/records/upsertedrecord1", {"text": "upserted"}),
        ("DELETE", f"/api/collections/notes/records/{gone['id']}", None)))
    assert r.status_code == 200, r.text
    assert seen == [("create", "notes", "made"), ("update", "notes", "edited"),
                    ("create", "notes", "upserted"), ("delete", "notes", gone["id"])]
    seen.clear()
    r = await api.post("/batch", _batch(
        ("POST", "/api/collections/notes/records", {"text": "never", "amount": 1}),
        ("PATCH", "/api/collections/notes/records/missingrecord00", {"text": "x"})))
    assert r.status_code == 404 or r.status_code == 400
    assert seen == []  # nothing committed, no after hook


async def test_deps_client_writes_run_the_hooks(cloud: Cloud, api: Api,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from hanzocloud.errors import InvalidArgument
    from hanzocloud.identity import Identity, current_identity
    from subsystems.base.hooks import RecordHooks

    seen: list[str] = []
    original = RecordHooks.after

    async def spy(self: RecordHooks, org: str, action: str, collection: str,
                  record: dict[str, object]) -> None:
        seen.append(action)
        await original(self, org, action, collection, record)

    monkeypatch.setattr(RecordHooks, "after", spy)
    await notes(api)
    base = cloud.host.deps.base
    token = current_identity.set(Identity(org="acme", user="alice", roles=("owner",)))
    try:
        made = json.loads(await base.create_record("notes", b'{"text": "a", "amount": 1}'))
        await base.update_record("notes", made["id"], b'{"text": "b"}')
        await base.delete_record("notes", made["id"])
        assert seen == ["create", "update", "delete"]
        await install(cloud, "acme", "limits", {"deny": "base_before_create"})
        with pytest.raises(InvalidArgument):
            await base.create_record("notes", b'{"text": "refused", "amount": 1}')
    finally:
        current_identity.reset(token)
    assert await api.items("notes") == []
