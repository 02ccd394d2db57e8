"""The mount contract: route table, collisions, lazy imports, Deps, errors and host routes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.routing import BaseRoute

from conftest import client_for, subprocess_env
from hanzocloud.config import Settings
from hanzocloud.errors import ConfigError
from hanzocloud.host import Host, build_host
from hanzocloud.keys import MasterKey
from hanzocloud.mount import MountPoint, compile_table
from testsubsystems import TEST_REGISTRY

ALICE = {"X-Test-Identity": "acme/alice/editor"}


def test_collision_names_both_subsystems(settings_factory: Callable[..., Settings],
                                         master: MasterKey) -> None:
    with pytest.raises(ConfigError) as err:
        build_host(settings_factory(enable="beta,gamma"), registry=TEST_REGISTRY, master=master)
    message = str(err.value)
    assert "'beta'" in message and "'gamma'" in message and "/.well-known/thing" in message


def test_enable_limits_imported_modules(tmp_path: object) -> None:
    code = """
import sys, json
from conftest import make_settings
from hanzocloud.host import build_host
from hanzocloud.keys import MasterKey
from hanzocloud.mount import MountPoint, compile_table
from testsubsystems import TEST_REGISTRY
from pathlib import Path
build_host(make_settings(Path(sys.argv[1]), enable="alpha"), registry=TEST_REGISTRY,
           master=MasterKey(b"m" * 32, "t"))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("testsubsystems."))))
"""
    env = subprocess_env()
    env["PYTHONPATH"] += ":" + str(__import__("conftest").ROOT / "tests")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["testsubsystems.alpha"]


def test_real_registry_imports_only_enabled(tmp_path: object) -> None:
    from hanzocloud.registry import SUBSYSTEMS

    if len(SUBSYSTEMS) < 2:
        pytest.skip("needs two real subsystems")
    first = SUBSYSTEMS[0]
    code = f"""
import sys, json
from pathlib import Path
from hanzocloud.config import load_settings
from hanzocloud.host import build_host
from hanzocloud.keys import MasterKey
s = load_settings({{"data_dir": sys.argv[1], "dev": True, "enable": "{first.name}"}}, environ={{}})
build_host(s, master=MasterKey(b"m" * 32, "t"))
print(json.dumps(sorted(m.split(".")[1] for m in sys.modules if m.startswith("subsystems."))))
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, env=subprocess_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    imported = set(json.loads(out.stdout.strip().splitlines()[-1]))
    others = {s.name for s in SUBSYSTEMS if s.name != first.name and not s.edge}
    assert first.name in imported and not (imported & others)


async def test_disabled_dependency_is_503_naming_it(test_host: Host) -> None:
    async with client_for(test_host.public) as client:
        r = await client.get("/v1/alpha/needs-kms", headers=ALICE)
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    error = r.json()["error"]
    assert error["code"] == "subsystem_unavailable"
    assert "'kms'" in error["message"] and "CLOUD_KMS_ZAP_ADDR" in error["message"]
    assert error["request_id"] == r.headers["x-request-id"]


async def test_deps_modes(test_host: Host) -> None:
    assert test_host.deps.kms.mode == "disabled"
    assert test_host.deps.payments.mode == "disabled"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("GET", "/v1/alpha/ping", {}, 200, None),
        ("GET", "/v1/alpha/whoami", {}, 401, "unauthenticated"),
        ("GET", "/v1/alpha/editors", {"X-Test-Identity": "acme/bob/viewer"}, 403,
         "permission_denied"),
        ("GET", "/v1/alpha/editors", {"X-Test-Identity": "acme/bob/owner"}, 200, None),
        ("GET", "/v1/alpha/nope", {}, 404, "not_found"),
        ("DELETE", "/v1/alpha/ping", {}, 405, "method_not_allowed"),
        ("GET", "/v1/alpha/boom", {}, 500, "internal"),
        ("POST", "/v1/alpha/notes", {**ALICE, "content-type": "text/plain"}, 415,
         "unsupported_media_type"),
        ("POST", "/v1/alpha/notes", {**ALICE, "content-type": "application/json"}, 400,
         "invalid_argument"),
    ],
    ids=["public", "no-token-401", "role-too-low-403", "role-ranked-ok", "unknown-404",
         "method-405", "crash-500-json", "wrong-media-415", "empty-json-400"],
)
async def test_errors_are_json(test_host: Host, method: str, path: str, headers: dict[str, str],
                               status: int, code: str | None) -> None:
    async with client_for(test_host.public) as client:
        r = await client.request(method, path, headers=headers, content=b"")
    assert r.status_code == status
    if code:
        body = r.json()
        assert body["error"]["code"] == code
        assert "Traceback" not in r.text and "secret internal detail" not in r.text


async def test_request_id_is_echoed_or_created(test_host: Host) -> None:
    async with client_for(test_host.public) as client:
        given = await client.get("/v1/alpha/ping", headers={"X-Request-Id": "abc-123"})
        made = await client.get("/v1/alpha/ping", headers={"X-Request-Id": "bad id\twith space"})
        fresh = [(await client.get("/v1/alpha/ping")).headers["x-request-id"] for _ in range(50)]
    assert given.headers["x-request-id"] == "abc-123"
    assert made.headers["x-request-id"] not in ("", "bad id\twith space")
    # Made ones are 32 hex characters, never repeated.
    assert len(set(fresh + [made.headers["x-request-id"]])) == 51
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in fresh)


async def test_body_limit_413_before_reading(settings_factory: Callable[..., Settings],
                                             master: MasterKey) -> None:
    host = build_host(settings_factory(enable="testgate,alpha", body_limit=100),
                      registry=TEST_REGISTRY, master=master)
    async with host.lifespan(), client_for(host.public) as client:
        r = await client.post("/v1/alpha/notes", headers=ALICE, json={"body": "x" * 500})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        async def chunks():  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b"x" * 50

        r = await client.post("/v1/alpha/notes", headers=ALICE, content=chunks())
        assert r.status_code == 413
        r = await client.get("/v1/alpha/notes", headers=ALICE)
        assert r.json() == {"items": []}


async def test_tenant_data_is_per_org(test_host: Host) -> None:
    async with client_for(test_host.public) as client:
        assert (await client.post("/v1/alpha/notes", headers=ALICE,
                                  json={"body": "acme note"})).status_code == 201
        other = {"X-Test-Identity": "globex/gina/editor"}
        assert (await client.get("/v1/alpha/notes", headers=other)).json() == {"items": []}
        assert (await client.get("/v1/alpha/notes", headers=ALICE)).json() == {
            "items": ["acme note"]}
    assert (test_host.settings.data_dir / "orgs" / "acme" / "alpha.db").exists()


async def test_brand_and_openapi(test_host: Host) -> None:
    async with client_for(test_host.public) as client:
        brand = (await client.get("/v1/brand")).json()
        doc = (await client.get("/v1/openapi.json")).json()
    assert brand["name"] == "hanzo" and brand["displayName"] == "Hanzo Cloud"
    assert "/v1/alpha/ping" in doc["paths"] and "/.well-known/thing" in doc["paths"]
    assert doc["paths"]["/v1/alpha/notes"]["post"]["x-policy"] == "role:editor"
    assert doc["paths"]["/v1/alpha/ping"]["get"]["security"] == []


@pytest.mark.parametrize("brand", ["hanzo", "osage", "lux", "zoo"])
async def test_every_builtin_brand_loads(settings_factory: Callable[..., Settings],
                                         master: MasterKey, brand: str) -> None:
    host = build_host(settings_factory(enable="testgate", brand=brand), registry=TEST_REGISTRY,
                      master=master)
    async with host.lifespan(), client_for(host.public) as client:
        assert (await client.get("/v1/brand")).json()["name"] == brand


def test_custom_brand_file(settings_factory: Callable[..., Settings], master: MasterKey,
                           tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "acme.toml"
    path.write_text('name = "acme"\ndisplay_name = "Acme Cloud"\ndomain = "acme.test"\n'
                    'default_issuer = "https://acme.test"\n[colors]\nprimary = "#000000"\n'
                    'accent = "#ffffff"\nbackground = "#ffffff"\n')
    host = build_host(settings_factory(enable="testgate", brand_file=path),
                      registry=TEST_REGISTRY, master=master)
    assert host.deps.brand.display_name == "Acme Cloud"
    path.write_text('name = "acme"\n')
    with pytest.raises(ConfigError, match="brand file"):
        build_host(settings_factory(enable="testgate", brand_file=path), registry=TEST_REGISTRY,
                   master=master)


async def test_lifespans_compose_and_stop_in_reverse(settings_factory: Callable[..., Settings],
                                                     master: MasterKey) -> None:
    from testsubsystems.alpha import EVENTS

    EVENTS.clear()
    host = build_host(settings_factory(enable="alpha,beta"), registry=TEST_REGISTRY,
                      master=master)
    async with host.lifespan():
        assert EVENTS == ["alpha:start", "beta:start"]
    assert EVENTS == ["alpha:start", "beta:start", "beta:stop", "alpha:stop"]


async def test_admin_listener_admits_only_platform_admins(test_host: Host) -> None:
    async with client_for(test_host.admin) as client:
        assert (await client.get("/v1/alpha/stats")).status_code == 401
        r = await client.get("/v1/alpha/stats", headers={"X-Test-Identity": "acme/a/owner"})
        assert r.status_code == 403
        r = await client.get("/v1/admin/subsystems",
                             headers={"X-Test-Identity": "acme/root/owner/admin"})
        assert r.status_code == 200 and r.json()["enabled"] == ["testgate", "alpha", "beta"]


def test_mount_needs_policy_routes(settings_factory: Callable[..., Settings],
                                   master: MasterKey) -> None:
    from starlette.routing import Route

    from hanzocloud.mount import MountPoint, compile_table

    point = MountPoint("x", build_host(settings_factory(enable="testgate"),
                                       registry=TEST_REGISTRY, master=master).deps)
    point.routes([Route("/plain", lambda r: None)])
    with pytest.raises(ConfigError, match="must be declared with"):
        compile_table([point], [])


def test_route_inside_another_prefix_is_a_collision(settings_factory: Callable[..., Settings],
                                                    master: MasterKey) -> None:
    from hanzocloud.mount import MountPoint, compile_table
    from hanzocloud.routing import route

    deps = build_host(settings_factory(enable="testgate"), registry=TEST_REGISTRY,
                      master=master).deps
    a, b = MountPoint("a", deps), MountPoint("b", deps)
    a.routes([route("/x", lambda r: None)])
    b.well_known([route("/v1/a/x", lambda r: None)])
    with pytest.raises(ConfigError, match="'b' claims /v1/a/x, inside the prefix /v1/a"):
        compile_table([a, b], [])


async def _nothing(_: object) -> None:
    """A handler the collision tests never call."""


async def _asgi(scope: object, receive: object, send: object) -> None:
    """An ASGI app behind a Mount: it answers every path under the mount."""


def _register(point: MountPoint, where: str, spec: str) -> None:
    """Add one route to `point`: `GET,POST /path`, `mount /path` (a bare ASGI app) or
    `router /path` (a Mount of routes, which still takes every path under it)."""
    from starlette.routing import Mount

    from hanzocloud.routing import route

    kind, path = spec.split(" ")
    item: BaseRoute
    if kind == "mount":
        item = Mount(path, app=_asgi)
    elif kind == "router":
        item = Mount(path, routes=[route("/evil", _nothing, policy="public")])
    else:
        item = route(path, _nothing, methods=kind.split(","), policy="public")
    {"routes": point.routes, "well_known": point.well_known,
     "admin": point.admin_routes}[where]([item])


def _evil_and_victim(settings_factory: Callable[..., Settings], master: MasterKey,
                     evil: tuple[str, str], victim: tuple[str, str]) -> list[MountPoint]:
    deps = build_host(settings_factory(enable="testgate"), registry=TEST_REGISTRY,
                      master=master).deps
    points = [MountPoint("evil", deps), MountPoint("victim", deps)]
    for point, (where, spec) in zip(points, (evil, victim), strict=True):
        _register(point, where, spec)
    return points


# (evil's registration, victim's registration): each pair can match one request twice.
OVERLAPS = {
    "param-segment-into-prefix": (("well_known", "GET /v1/{sub}/secret"),
                                  ("routes", "GET /secret")),
    "path-tail-into-prefix": (("well_known", "GET /v1/{sub}/{rest:path}"),
                              ("routes", "GET /other")),
    "param-vs-literal": (("well_known", "GET /.well-known/{name}"),
                         ("well_known", "GET /.well-known/thing")),
    "int-convertor-vs-literal": (("well_known", "GET /.well-known/{n:int}"),
                                 ("well_known", "GET /.well-known/7")),
    "path-tail-vs-literal": (("well_known", "POST /.well-known/{rest:path}"),
                             ("well_known", "GET,POST /.well-known/thing/x")),
    "asgi-mount-vs-route": (("well_known", "mount /.well-known"),
                            ("well_known", "DELETE /.well-known/thing")),
    "asgi-mount-over-prefix": (("well_known", "mount /v1"), ("routes", "GET /anything")),
    "router-mount-vs-route": (("well_known", "router /.well-known"),
                              ("well_known", "GET /.well-known/thing")),
}


@pytest.mark.parametrize("order", ["evil-first", "victim-first"])
@pytest.mark.parametrize(("evil", "victim"), OVERLAPS.values(), ids=OVERLAPS.keys())
def test_overlapping_routes_refuse_to_start(settings_factory: Callable[..., Settings],
                                            master: MasterKey, order: str,
                                            evil: tuple[str, str],
                                            victim: tuple[str, str]) -> None:
    points = _evil_and_victim(settings_factory, master, evil, victim)
    with pytest.raises(ConfigError, match="route collision") as err:
        compile_table(points if order == "evil-first" else points[::-1], [])
    message = str(err.value)
    assert "'evil'" in message and "'victim'" in message
    assert evil[1].split(" ")[1] in message


# Pairs no one request can match twice: these must still start.
APART = {
    "longer-than-literal": (("well_known", "GET /.well-known/{name}/keys"),
                            ("well_known", "GET /.well-known/thing")),
    "other-method": (("well_known", "POST /.well-known/{name}"),
                     ("well_known", "GET /.well-known/thing")),
    "tail-under-other-segment": (("well_known", "GET /.well-known/a/{rest:path}"),
                                 ("well_known", "GET /.well-known/b")),
    "mount-beside-route": (("well_known", "mount /.well-known/a"),
                           ("well_known", "GET /.well-known/b/c")),
    "own-prefixes": (("admin", "GET /{name}"), ("routes", "GET /{name}")),
}


@pytest.mark.parametrize(("evil", "victim"), APART.values(), ids=APART.keys())
def test_disjoint_routes_start(settings_factory: Callable[..., Settings], master: MasterKey,
                               evil: tuple[str, str], victim: tuple[str, str]) -> None:
    points = _evil_and_victim(settings_factory, master, evil, victim)
    assert [e.subsystem for e in compile_table(points, [])][-1] == "victim"


def test_one_subsystem_may_overlap_itself(settings_factory: Callable[..., Settings],
                                          master: MasterKey) -> None:
    from hanzocloud.routing import route

    deps = build_host(settings_factory(enable="testgate"), registry=TEST_REGISTRY,
                      master=master).deps
    point = MountPoint("a", deps)
    point.routes([route("/items/new", _nothing), route("/items/{id}", _nothing),
                  route("/files/{rest:path}", _nothing)])
    assert [e.path for e in compile_table([point], [])] == [
        "/v1/a/items/new", "/v1/a/items/{id}", "/v1/a/files/{rest:path}"]


async def _operation_ids(tmp: Path) -> list[str]:
    from hanzocloud.config import load_settings

    settings = load_settings({"data_dir": tmp, "dev": True, "enable": "all"}, environ={})
    host = build_host(settings, master=MasterKey(b"\x03" * 32, "t"))
    async with client_for(host.public) as client:
        doc = (await client.get("/v1/openapi.json")).json()
    return [op["operationId"] for item in doc["paths"].values() for op in item.values()]


async def test_openapi_operation_ids_are_unique_and_stable(tmp_path: Path) -> None:
    from hanzocloud.registry import SUBSYSTEMS

    first = await _operation_ids(tmp_path / "one")
    assert len(first) == len(set(first)), sorted({i for i in first if first.count(i) > 1})
    assert {i.split(".")[0] for i in first} >= {s.name for s in SUBSYSTEMS if not s.edge}
    assert await _operation_ids(tmp_path / "two") == first


def test_tenant_settings_reach_the_store(settings_factory: Callable[..., Settings],
                                         master: MasterKey) -> None:
    host = build_host(settings_factory(enable="alpha", tenant_cache_size=7,
                                       tenant_read_budget_ms=50, tenant_write_budget_ms=0),
                      registry=TEST_REGISTRY, master=master)
    assert host.deps.tenants.max_open == 7 and host.deps.tenants.read_budget == 0.05
    assert host.deps.tenants.write_budget == 0
