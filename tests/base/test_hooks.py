"""Org extension hooks around record writes: deny, modify, after-hooks, and org isolation."""

from __future__ import annotations

import base64
from pathlib import Path

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
