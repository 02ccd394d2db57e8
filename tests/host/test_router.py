"""IndexedRouter: the same outcome as Starlette's Router, from fewer route matches."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Host, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from hanzocloud.routing import IndexedRouter, route_path


def _endpoint(label: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"route": label, "params": request.path_params,
                             "root": request.scope.get("root_path", "")})
    return endpoint


def _asgi(label: str) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = {"route": label, "path": scope["path"], "root": scope.get("root_path", "")}
        await JSONResponse(body)(scope, receive, send)
    return app


def _routes() -> list[BaseRoute]:
    inner = [Route("/api/health", _endpoint("health")),
             Route("/api/items", _endpoint("list")),
             Route("/api/items", _endpoint("create"), methods=["POST"]),
             Route("/api/items/{id}", _endpoint("view")),
             Route("/api/items/{id}", _endpoint("delete"), methods=["DELETE"]),
             Route("/api/items/{id}/files/{name:path}", _endpoint("file")),
             Route("/api/{kind}/count", _endpoint("count")),
             Route("/api/items/special", _endpoint("special"))]  # shadowed by {id} above
    return [Route("/", _endpoint("root")),
            Route("/v1/brand", _endpoint("brand")),
            Route("/v1/{name}.json", _endpoint("dotted")),
            Route("/n/{num:int}", _endpoint("int")),
            Mount("/v1/base", app=Router(inner)),
            Mount("/v1/fast", app=IndexedRouter(inner)),
            Mount("/static", app=_asgi("static")),
            Host("other.test", app=_asgi("host")),
            Route("/v1/base/late", _endpoint("late"))]


def _apps() -> tuple[Starlette, Starlette]:
    plain = Starlette(routes=_routes())
    indexed = Starlette()
    indexed.router = IndexedRouter(_routes())
    return plain, indexed


async def _outcome(app: Starlette, method: str, path: str,
                   host: str = "test") -> tuple[int, str, str | None]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
        r = await client.request(method, path)
    return r.status_code, r.text, r.headers.get("location")


PATHS = ["/", "/v1/brand", "/v1/brand/", "/v1/base/api/health", "/v1/base/api/items",
         "/v1/base/api/items/", "/v1/base/api/items/abc", "/v1/base/api/items/special",
         "/v1/base/api/items/abc/files/a/b.txt", "/v1/base/api/items/abc/files/",
         "/v1/base/api/things/count", "/v1/base/api", "/v1/base", "/v1/base/", "/v1/base/late",
         "/v1/x.json", "/v1/.json", "/n/12", "/n/x", "/static", "/static/", "/static/a/b",
         "/nowhere", "//", "/v1//brand", "/v1/fast/api/items/abc", "/v1/fast/api/items",
         "/v1/fast/api/items/special", "/v1/fast/api/items/abc/files/a"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_same_outcome_as_starlette(method: str, path: str) -> None:
    plain, indexed = _apps()
    assert await _outcome(indexed, method, path) == await _outcome(plain, method, path)


async def test_a_mount_with_an_indexed_router_matches_like_a_plain_one() -> None:
    plain, _ = _apps()
    for tail in ("/api/items/abc", "/api/items", "/api/things/count", "/api/items/abc/files/x"):
        for method in ("GET", "DELETE", "PUT"):
            slow = await _outcome(plain, method, "/v1/base" + tail)
            fast = await _outcome(plain, method, "/v1/fast" + tail)
            assert fast[0] == slow[0]
            assert fast[1].replace("/v1/fast", "/v1/base") == slow[1]


async def test_declaration_order_wins_and_hosts_are_tried() -> None:
    _, indexed = _apps()
    status, body, _ = await _outcome(indexed, "GET", "/v1/fast/api/items/special")
    assert status == 200 and '"route":"view"' in body
    status, body, _ = await _outcome(indexed, "GET", "/v1/x", host="other.test")
    assert status == 200 and '"route":"host"' in body


async def test_routes_added_later_are_indexed() -> None:
    router = IndexedRouter([Route("/a", _endpoint("a"))])
    app = Starlette()
    app.router = router
    assert (await _outcome(app, "GET", "/b"))[0] == 404
    router.routes.append(Route("/b", _endpoint("b")))
    assert (await _outcome(app, "GET", "/b"))[0] == 200


def test_candidates_are_few() -> None:
    router = IndexedRouter(_routes())
    names = [getattr(r, "path", "host") for r in router.candidates("/v1/brand")]
    assert names == ["/v1/brand", "/v1/{name}.json", "host"]
    inner = IndexedRouter(_routes()[4].routes)  # type: ignore[attr-defined]
    assert [r.path for r in inner.candidates("/api/items/abc")] == [
        "/api/items/{id}", "/api/items/{id}"]


SEGMENT = st.sampled_from(["", "v1", "base", "api", "items", "abc", "files", "x.json", "12",
                           "special", "count", "static", "n", "brand", "late", "%20", "fast"])


@settings(max_examples=200, deadline=None)
@given(st.lists(SEGMENT, max_size=7), st.sampled_from(["GET", "POST", "DELETE"]))
async def test_any_path_same_outcome(segments: list[str], method: str) -> None:
    plain, indexed = _apps()
    path = "/" + "/".join(segments)
    assume(not path.startswith("//"))  # httpx reads that as a host
    assert await _outcome(indexed, method, path) == await _outcome(plain, method, path)


@pytest.mark.parametrize(("path", "root_path", "expected"), [
    ("/v1/base/api/x", "", "/v1/base/api/x"),
    ("/v1/base/api/x", "/v1/base", "/api/x"),
    ("/v1/base", "/v1/base", ""),
    ("/v1/basement/x", "/v1/base", "/v1/basement/x"),  # a prefix, not a parent folder
    ("/other", "/v1/base", "/other"),
])
def test_route_path_strips_only_a_whole_mount_prefix(path: str, root_path: str,
                                                      expected: str) -> None:
    assert route_path({"path": path, "root_path": root_path}) == expected


async def test_a_405_allows_every_method_the_path_takes() -> None:
    _, indexed = _apps()
    transport = httpx.ASGITransport(app=indexed)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        listed = await client.put("/v1/fast/api/items")  # GET on one route, POST on another
        one = await client.put("/v1/fast/api/health")
    def allowed(r: httpx.Response) -> set[str]:
        assert r.status_code == 405
        return set(r.headers["allow"].split(", "))

    assert allowed(listed) == {"GET", "HEAD", "POST"}
    assert allowed(one) == {"GET", "HEAD"}
