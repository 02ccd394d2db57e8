"""Extensions in the host: module routes, operator routes, org uploads, org-scoped hooks."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime

from conftest import ROOT, client_for
from hanzocloud.config import Settings
from hanzocloud.errors import ConfigError
from hanzocloud.host import Host, build_host
from hanzocloud.keys import MasterKey
from testsubsystems import TEST_REGISTRY

ECHO = ROOT / "examples" / "ext" / "echo-wat"
ACME_ADMIN = {"X-Test-Identity": "acme/alice/admin"}
ACME_VIEWER = {"X-Test-Identity": "acme/vic/viewer"}
GLOBEX_ADMIN = {"X-Test-Identity": "globex/gina/admin"}


def upload_body(name: str = "echo-wat", wasm: bytes | None = None,
                exports: list[str] | None = None) -> dict[str, object]:
    manifest = json.loads((ECHO / "extension.json").read_text())
    manifest["name"] = name
    if exports:
        manifest["exports"] = exports
    data = wasm if wasm is not None else (ECHO / "echo.wasm").read_bytes()
    return {"manifest": manifest, "wasm": base64.b64encode(data).decode()}


async def test_mount_point_module_route_sees_the_identity(test_host: Host) -> None:
    async with client_for(test_host.public) as client:
        r = await client.post("/v1/alpha/echo?x=1", headers=ACME_ADMIN, json={"hello": "wasm"})
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["org"] == "acme" and seen["user"] == "alice"
    assert seen["body"] == {"hello": "wasm"} and seen["query"] == {"x": "1"}
    assert "authorization" not in {k.lower() for k in seen["headers"]}


async def test_operator_routes_toml(settings_factory: Callable[..., Settings], master: MasterKey,
                                    tmp_path: Path) -> None:
    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    (ext_dir / "routes.toml").write_text(
        f'[[route]]\nroute = "POST /v1/ext/echo"\nmodule = "{ECHO}"\nexport = "handle"\n'
        'policy = "public"\n')
    host = build_host(settings_factory(enable="testgate", ext_dir=ext_dir),
                      registry=TEST_REGISTRY, master=master)
    async with host.lifespan(), client_for(host.public) as client:
        r = await client.post("/v1/ext/echo", headers=ACME_ADMIN, json=[1, 2])
        assert r.status_code == 200 and r.json()["body"] == [1, 2]
    (ext_dir / "routes.toml").write_text('[[route]]\nroute = "POST /v1/alpha/x"\nmodule = "m"\n')
    with pytest.raises(ConfigError, match="must live under /v1/ext/"):
        build_host(settings_factory(enable="testgate", ext_dir=ext_dir), registry=TEST_REGISTRY,
                   master=master)


async def test_org_upload_run_and_isolation(test_host: Host) -> None:
    async with client_for(test_host.public) as client:
        r = await client.put("/v1/ext/modules", headers=ACME_ADMIN, json=upload_body())
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "echo-wat"
        listed = (await client.get("/v1/ext/modules", headers=ACME_VIEWER)).json()["items"]
        assert [m["name"] for m in listed] == ["echo-wat"]
        ran = await client.post("/v1/ext/run/echo-wat/handle", headers=ACME_VIEWER, json={"a": 1})
        assert ran.status_code == 200 and ran.json()["org"] == "acme"
        # org B sees nothing of org A's modules
        assert (await client.get("/v1/ext/modules", headers=GLOBEX_ADMIN)).json() == {"items": []}
        other = await client.post("/v1/ext/run/echo-wat/handle", headers=GLOBEX_ADMIN, json={})
        assert other.status_code == 404
        assert (await client.delete("/v1/ext/modules/echo-wat",
                                    headers=GLOBEX_ADMIN)).status_code == 404
        assert (await client.delete("/v1/ext/modules/echo-wat",
                                    headers=ACME_ADMIN)).status_code == 204
        assert (await client.get("/v1/ext/modules", headers=ACME_ADMIN)).json() == {"items": []}


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (ACME_VIEWER, upload_body(), 403),
        ({}, upload_body(), 401),
        (ACME_ADMIN, {"manifest": {}, "wasm": "!!!"}, 400),
        (ACME_ADMIN, {"manifest": upload_body()["manifest"], "wasm": "not base64!"}, 400),
        (ACME_ADMIN, upload_body(wasm=b"\x00asm garbage"), 400),
        (ACME_ADMIN, upload_body(name="../../etc"), 400),
        (ACME_ADMIN, {"nothing": True}, 400),
    ],
    ids=["viewer-403", "anonymous-401", "bad-wasm-b64", "bad-b64", "bad-module",
         "bad-name", "bad-shape"],
)
async def test_bad_uploads(test_host: Host, headers: dict[str, str], body: dict[str, object],
                           status: int) -> None:
    async with client_for(test_host.public) as client:
        r = await client.put("/v1/ext/modules", headers=headers, json=body)
        assert r.status_code == status, r.text
        assert "error" in r.json()
        listed = await client.get("/v1/ext/modules", headers=ACME_ADMIN)
        assert listed.json() == {"items": []}


async def test_hooks_run_only_for_their_org(test_host: Host) -> None:
    source = (ROOT / "tests" / "ext" / "guests" / "hook.wat").read_text()
    wasm = wasmtime.wat2wasm(source.replace('(export "deny")', '(export "base_before_create")'))
    async with client_for(test_host.public) as client:
        body = upload_body(name="limits", wasm=wasm, exports=["base_before_create", "allow"])
        body["manifest"]["module"] = "hook.wasm"  # type: ignore[index]
        r = await client.put("/v1/ext/modules", headers=ACME_ADMIN, json=body)
        assert r.status_code == 201, r.text
    ext = test_host.deps.extensions
    denied = await ext.run_hooks("acme", "base_before_create", {"record": {"amount": 5}})
    assert [r.action for r in denied] == ["deny"] and denied[0].message == "amount over limit"
    assert ext.has_hook("acme", "base_before_create")
    assert await ext.run_hooks("globex", "base_before_create", {"record": {}}) == []
    assert not ext.has_hook("globex", "base_before_create")
