"""Host imports: log always; kv and http only when requested by the manifest AND allowed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import wasmtime._func
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from hanzocloud.ext import (
    ExtensionFailed,
    ExtensionRuntime,
    InvalidExtension,
    Limits,
    MemoryKvStore,
)

from .support import GuestBuilder, LiveServer, RuntimeFactory

# -- gating ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "requested", "allowed", "fragment"),
    [("kv", ["kv"], set(), "capability 'kv' is not allowed by the operator (allowed: none)"),
     ("http", ["http"], {"kv"}, "capability 'http' is not allowed by the operator (allowed: kv)"),
     ("kv", [], {"kv"}, "imports hanzo.kv_get but extension.json does not request the 'kv'"),
     ("http", ["kv"], {"kv", "http"}, "imports hanzo.http_fetch but extension.json does not "
                                      "request the 'http'")],
    ids=["kv-denied", "http-denied", "kv-not-requested", "http-not-requested"],
)
def test_capability_gating(guest: GuestBuilder, make_runtime: RuntimeFactory, source: str,
                           requested: list[str], allowed: set[str], fragment: str) -> None:
    exports = ["put", "get"] if source == "kv" else ["fetch"]
    runtime = make_runtime(allowed_capabilities=allowed)
    with pytest.raises(InvalidExtension) as info:
        runtime.load(guest(source, exports=exports, capabilities=requested))
    assert fragment in info.value.message
    assert info.value.details["module"] == f"{source}@1.0.0"


# -- kv -------------------------------------------------------------------------------------


async def test_kv_is_scoped_to_the_calling_org(guest: GuestBuilder,
                                               make_runtime: RuntimeFactory) -> None:
    store = MemoryKvStore()
    runtime = make_runtime(allowed_capabilities={"kv"}, kv=store)
    kv = runtime.load(guest("kv", exports=["put", "get"], capabilities=["kv"]))
    assert await runtime.call(kv, "get", {}, org="org-a") == {"status": 404, "body": None}
    stored = await runtime.call(kv, "put", {"secret": "a-only"}, org="org-a")
    assert stored == {"status": 201, "body": "stored"}
    got = await runtime.call(kv, "get", {}, org="org-a")
    assert got == {"status": 200, "body": {"secret": "a-only"}}
    assert await runtime.call(kv, "get", {}, org="org-b") == {"status": 404, "body": None}
    assert store.get("org-a", "note") == b'{"secret":"a-only"}'
    assert store.keys("org-b") == []


async def test_kv_refuses_oversized_values(guest: GuestBuilder,
                                           make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(allowed_capabilities={"kv"}, limits=Limits(kv_max_value_bytes=64))
    kv = runtime.load(guest("kv", exports=["put", "get"], capabilities=["kv"]))
    out = await runtime.call(kv, "put", {"big": "x" * 100}, org="acme")
    assert out == {"status": 500, "body": "kv failed"}
    assert runtime.kv.get("acme", "note") is None


class BrokenKv:
    def get(self, org: str, key: str) -> bytes | None:
        raise OSError("disk on fire")

    def set(self, org: str, key: str, value: bytes) -> None:
        raise OSError("disk on fire")


async def test_kv_backend_failure_is_reported_to_the_guest(
    guest: GuestBuilder, make_runtime: RuntimeFactory
) -> None:
    runtime = make_runtime(allowed_capabilities={"kv"}, kv=BrokenKv())
    kv = runtime.load(guest("kv", exports=["put", "get"], capabilities=["kv"]))
    assert await runtime.call(kv, "put", {}, org="acme") == {"status": 500, "body": "kv failed"}
    assert await runtime.call(kv, "get", {}, org="acme") == {"status": 500, "body": "kv failed"}


# -- http -----------------------------------------------------------------------------------


async def ping(request: Request) -> Response:
    return JSONResponse({"pong": True, "seen": request.headers.get("x-probe")},
                        headers={"x-upstream": "yes"})


async def slow(request: Request) -> Response:
    await asyncio.sleep(1.0)
    return PlainTextResponse("late")


async def large(request: Request) -> Response:
    return PlainTextResponse("z" * 5000)


async def bounce(request: Request) -> Response:
    return RedirectResponse("http://example.invalid/elsewhere", status_code=302)


@pytest.fixture(scope="module")
def upstream() -> Iterator[LiveServer]:
    app = Starlette(routes=[Route("/ping", ping), Route("/slow", slow), Route("/large", large),
                            Route("/bounce", bounce)])
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def fetcher(guest: GuestBuilder, make_runtime: RuntimeFactory) -> tuple[ExtensionRuntime, Any]:
    runtime = make_runtime(allowed_capabilities={"http"}, http_allow_hosts=["127.0.0.1"],
                           limits=Limits(http_timeout_s=0.3, http_max_response_bytes=1000))
    return runtime, runtime.load(guest("http", exports=["fetch"], capabilities=["http"]))


async def test_http_fetch_reaches_allowed_host(upstream: LiveServer,
                                               fetcher: tuple[ExtensionRuntime, Any]) -> None:
    runtime, module = fetcher
    out = await runtime.call(module, "fetch", {"url": f"{upstream.url}/ping",
                                               "headers": {"x-probe": "p1"}}, org="acme")
    answer = out["body"]
    assert answer["status"] == 200
    assert answer["headers"]["x-upstream"] == "yes"
    assert answer["body"] == '{"pong":true,"seen":"p1"}'


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [({"url": "http://localhost:1/ping"}, "is not in the operator's allow-list"),
     ({"url": "file:///etc/passwd"}, "is not in the operator's allow-list"),
     ({"url": "{base}/slow"}, "request timed out after 0.300s"),
     ({"url": "{base}/large"}, "response body exceeds 1000 bytes"),
     ({"url": "{base}/ping", "method": "TRACE"}, "method 'TRACE' is not allowed"),
     ({"url": "{base}/ping", "headers": {"n": 1}}, "headers must be an object of strings"),
     ({"nourl": True}, "url must be a non-empty string")],
    ids=["other-host", "file-scheme", "timeout", "too-large", "method", "headers", "no-url"],
)
async def test_http_fetch_refusals_are_answers_not_crashes(
    upstream: LiveServer, fetcher: tuple[ExtensionRuntime, Any], request_: dict[str, Any],
    fragment: str,
) -> None:
    runtime, module = fetcher
    if "url" in request_:
        request_ = {**request_, "url": request_["url"].replace("{base}", upstream.url)}
    out = await runtime.call(module, "fetch", request_, org="acme")
    assert fragment in out["body"]["error"]


async def test_http_fetch_does_not_follow_redirects(upstream: LiveServer,
                                                    fetcher: tuple[ExtensionRuntime, Any]) -> None:
    runtime, module = fetcher
    out = await runtime.call(module, "fetch", {"url": f"{upstream.url}/bounce"}, org="acme")
    assert out["body"]["status"] == 302
    assert out["body"]["headers"]["location"] == "http://example.invalid/elsewhere"


# -- log ------------------------------------------------------------------------------------


async def test_log_lines_reach_the_host_log_with_module_and_org(
    guest: GuestBuilder, make_runtime: RuntimeFactory
) -> None:
    runtime = make_runtime(limits=Limits(max_log_lines=20))
    logger = runtime.load(guest("log", exports=["say", "chatty", "wild"]))
    with structlog.testing.capture_logs() as logs:
        said = await runtime.call(logger, "say", {"msg": "héllo"}, org="acme")
        await runtime.call(logger, "chatty", {}, org="acme")
    assert said == {"status": 204}
    guest_logs = [entry for entry in logs if entry["event"] == "extension_log"]
    assert guest_logs[0]["message"] == '{"msg":"héllo"}'
    assert guest_logs[0]["module"] == "log@1.0.0" and guest_logs[0]["org"] == "acme"
    assert len(guest_logs) == 1 + 20  # chatty logged 500 lines; the cap kept 20


async def test_host_import_misuse_stops_the_call_cleanly(
    guest: GuestBuilder, runtime: ExtensionRuntime
) -> None:
    logger = runtime.load(guest("log", exports=["say", "chatty", "wild"]))
    with pytest.raises(ExtensionFailed) as info:
        await runtime.call(logger, "wild", {}, org="acme")
    assert info.value.cause == "host_error"
    assert "host call failed: log: range [2147418112, 2147418122) is outside guest memory" in (
        info.value.message)
    assert wasmtime._func.LAST_EXCEPTION is None  # the abort did not linger in wasmtime
    assert (await runtime.call(logger, "say", {}, org="acme")) == {"status": 204}
