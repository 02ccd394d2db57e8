"""Org `gateway_policy` extensions: deny before the handler, add headers, only for their org."""

from __future__ import annotations

import base64
from pathlib import Path

import wasmtime
from cloud import Cloud, running_cloud

ROOT = Path(__file__).resolve().parents[2]
HOOK_WAT = (ROOT / "tests" / "ext" / "guests" / "hook.wat").read_text()


async def install(cloud: Cloud, org: str, export: str) -> None:
    source = HOOK_WAT.replace(f'(export "{export}")', '(export "gateway_policy")')
    body = {"manifest": {"name": "policy", "version": "1.0.0", "runtime": "wasm",
                         "module": "hook.wasm", "exports": ["gateway_policy"]},
            "wasm": base64.b64encode(wasmtime.wat2wasm(source)).decode()}
    headers = await cloud.headers(org=org, user="admin", roles=["admin"])
    r = await cloud.client.put("/v1/ext/modules", headers=headers, json=body)
    assert r.status_code == 201, r.text


async def test_deny_policy_blocks_every_route_of_its_org_only(tmp_path: Path) -> None:
    async with running_cloud(tmp_path / "data", ["kms"]) as cloud:
        await install(cloud, "acme", "deny")
        acme = await cloud.headers(org="acme", user="alice", roles=["owner"])
        r = await cloud.client.get("/v1/kms/secrets", headers=acme)
        assert r.status_code == 403 and r.json()["error"]["message"] == "amount over limit"
        globex = await cloud.headers(org="globex", user="gina", roles=["owner"])
        assert (await cloud.client.get("/v1/kms/secrets", headers=globex)).status_code == 200
        # anonymous public routes are not subject to an org's policy
        assert (await cloud.client.get("/v1/brand")).status_code == 200


async def test_allow_policy_passes_through(tmp_path: Path) -> None:
    async with running_cloud(tmp_path / "data", ["kms"]) as cloud:
        await install(cloud, "acme", "allow")
        acme = await cloud.headers(org="acme", user="alice", roles=["owner"])
        assert (await cloud.client.get("/v1/kms/secrets", headers=acme)).status_code == 200
