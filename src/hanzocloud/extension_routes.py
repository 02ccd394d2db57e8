"""`/v1/ext`: an org's own extensions: upload, list, remove, run (tenant = caller's org)."""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.errors import InvalidArgument
from hanzocloud.ext import (
    ExtensionNotFound,
    InstalledModule,
    build_envelope,
    build_response,
    parse_manifest,
)
from hanzocloud.ext.manifest import MANIFEST_FILE
from hanzocloud.extensions import Extensions
from hanzocloud.http import JSONResponse
from hanzocloud.identity import current_identity
from hanzocloud.routing import PolicyRoute, json_body, require_org, route


def _describe(item: InstalledModule) -> dict[str, Any]:
    m = item.manifest
    return {"name": m.name, "version": m.version, "runtime": m.runtime,
            "exports": list(m.exports), "capabilities": list(m.capabilities),
            "sha256": item.sha256}


def extension_routes(ext: Extensions) -> list[PolicyRoute]:
    """The org-facing extension API; operator routes come from `Extensions.operator_routes`."""

    async def list_modules(_: Request) -> Response:
        """The caller's org's installed extensions."""
        org = require_org()
        return JSONResponse({"items": [_describe(i) for i in ext.store.list(org)]})

    async def install(request: Request) -> Response:
        """Install an extension for the caller's org: `{"manifest": {…}, "wasm": base64}`."""
        org = require_org()
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("manifest"), dict) \
                or not isinstance(body.get("wasm"), str):
            raise InvalidArgument("expected {\"manifest\": {...}, \"wasm\": \"<base64>\"}")
        try:
            wasm = base64.b64decode(body["wasm"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("'wasm' is not valid base64") from None
        # Validated before anything touches the disk: `module` becomes a file name there.
        manifest = parse_manifest(body["manifest"], source="manifest")
        # Refused now, not at the next request: a module the operator does not allow would
        # only ever fail to load.
        ext.runtime.check_policy(manifest)
        staging = Path(tempfile.mkdtemp(prefix="ext-upload-"))
        try:
            (staging / MANIFEST_FILE).write_text(json.dumps(body["manifest"]))
            (staging / manifest.module).write_bytes(wasm)
            replace = request.query_params.get("replace") in ("1", "true")
            item = ext.store.install(org, staging, replace=replace)
            ext.invalidate(org)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return JSONResponse(_describe(item), status_code=201)

    async def remove(request: Request) -> Response:
        """Remove one of the caller's org's extensions (every version, or `?version=`)."""
        org = require_org()
        ext.store.delete(org, request.path_params["name"],
                         request.query_params.get("version") or None)
        ext.invalidate(org)
        return Response(status_code=204)

    async def run(request: Request) -> Response:
        """Call an export of one of the caller's org's extensions as a route."""
        org = require_org()
        name, export = request.path_params["name"], request.path_params["export"]
        module = ext.org_module(org, name)
        if export not in module.exports:
            raise ExtensionNotFound(f"extension {module.ref} has no export {export!r}")
        envelope = await build_envelope(request, current_identity.get(),
                                        max_body_bytes=ext.runtime.limits.max_input_bytes)
        output = await ext.runtime.call(module, export, envelope, org=org)
        return build_response(module, export, output)

    return [
        route("/v1/ext/modules", list_modules, policy="authenticated"),
        route("/v1/ext/modules", install, methods=["PUT", "POST"], policy="role:admin"),
        route("/v1/ext/modules/{name}", remove, methods=["DELETE"], policy="role:admin"),
        route("/v1/ext/run/{name}/{export}", run, methods=["GET", "POST", "PUT", "DELETE"],
              policy="authenticated"),
    ]
