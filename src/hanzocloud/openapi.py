"""One OpenAPI 3.1 document composed from every mounted subsystem's declared routes."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Mount

from hanzocloud import __version__
from hanzocloud.brand import Brand
from hanzocloud.mount import RouteEntry
from hanzocloud.routing import PolicyRoute

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}")
_NOT_WORD = re.compile(r"[^A-Za-z0-9]+")


def _routes(routes: Sequence[BaseRoute]) -> list[PolicyRoute]:
    out: list[PolicyRoute] = []
    for r in routes:
        if isinstance(r, Mount):
            out.extend(_routes(r.routes))
        elif isinstance(r, PolicyRoute) and r.include_in_schema:
            out.append(r)
    return out


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "request_id": {"type": "string"}, "details": {"type": "object"}},
        }},
    }


def _unique_operation_ids(ops: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    """OpenAPI needs each operationId once. When one handler serves two paths, each of its
    operations (subsystem, path, method, op) takes its path's words in place of the function
    name: `<subsystem>.<path words>.<method>`, the same from run to run."""
    counts = Counter(op["operationId"] for *_, op in ops)
    taken = {op_id for op_id, n in counts.items() if n == 1}
    for subsystem, path, method, op in sorted(ops, key=lambda o: (o[1], o[2])):
        if counts[op["operationId"]] == 1:
            continue
        words = _NOT_WORD.sub("_", path.removeprefix(f"/v1/{subsystem}/")).strip("_")
        op_id, n = f"{subsystem}.{words}.{method}", 1
        while op_id in taken:  # path words can coincide with another function's name
            n += 1
            op_id = f"{subsystem}.{words}_{n}.{method}"
        op["operationId"] = op_id
        taken.add(op_id)


def build_openapi(brand: Brand, table: Sequence[RouteEntry],
                  routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The document served at `/v1/openapi.json` (public listener only)."""
    paths: dict[str, dict[str, Any]] = {}
    ops: list[tuple[str, str, str, dict[str, Any]]] = []
    for r in _routes(routes):
        path = _PARAM.sub(r"{\1}", r.full_path)
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in _PARAM.findall(r.full_path)]
        for method in sorted((r.methods or set()) - {"HEAD"}):
            op: dict[str, Any] = {
                "tags": [r.subsystem],
                "summary": r.summary,
                "operationId": f"{r.subsystem}.{r.name}.{method.lower()}",
                "x-policy": r.policy,
                "responses": {
                    "200": {"description": "OK"},
                    "default": {"description": "Error",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Error"}}}},
                },
            }
            if params:
                op["parameters"] = params
            op["security"] = [] if r.policy == "public" else [{"bearer": []}, {"apiKey": []}]
            op.update(r.openapi_extra.get(method.lower(), {}))
            paths.setdefault(path, {})[method.lower()] = op
            ops.append((r.subsystem, path, method.lower(), op))
    _unique_operation_ids(ops)
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{brand.display_name} API", "version": __version__},
        "servers": [{"url": f"https://{brand.domain}"}],
        "tags": [{"name": name} for name in sorted({e.subsystem for e in table})],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": _error_schema()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "Authorization"},
            },
        },
    }
