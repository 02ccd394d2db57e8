"""Endpoints for versioned secrets, their metadata, references and the audit trail."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.errors import InvalidArgument
from hanzocloud.http import JSONResponse
from hanzocloud.routing import require_org

from .. import audit, validate
from ..kv import Secrets
from ..service import KmsService
from ..store import KmsDb
from .common import body_object, paging, path_param, versions

MAX_VERSIONS_LIMIT = 10_000


class SecretHandlers:
    """HTTP face of `Secrets` (KV v2 shapes, see docs/kms.md)."""

    def __init__(self, secrets: Secrets, service: KmsService, db: KmsDb) -> None:
        self._secrets = secrets
        self._service = service
        self._db = db

    async def put(self, request: Request) -> Response:
        """Write a new version: `{"value": "…", "cas": N}` (cas optional)."""
        org = require_org()
        path = path_param(request)
        body = await body_object(request, ("value", "cas"))
        value = validate.secret_value(body.get("value"))
        cas = validate.optional_int(body, "cas")
        return JSONResponse(await self._secrets.put(org, path, value, cas=cas))

    async def get(self, request: Request) -> Response:
        """Read the current version, or `?version=N`."""
        org = require_org()
        path = path_param(request)
        version = validate.query_int(request.query_params.get("version"), field="version",
                                     default=0, minimum=1, maximum=2**31 - 1)
        return JSONResponse(await self._secrets.get(org, path, version=version or None))

    async def delete_current(self, request: Request) -> Response:
        """Soft-delete the current version."""
        org = require_org()
        await self._secrets.delete(org, path_param(request))
        return Response(status_code=204)

    async def delete_versions(self, request: Request) -> Response:
        """Soft-delete `{"versions": […]}`."""
        org = require_org()
        path = path_param(request)
        body = await body_object(request, ("versions",))
        await self._secrets.delete(org, path, versions(body, required=True))
        return Response(status_code=204)

    async def undelete(self, request: Request) -> Response:
        """Restore soft-deleted `{"versions": […]}`."""
        org = require_org()
        path = path_param(request)
        body = await body_object(request, ("versions",))
        await self._secrets.undelete(org, path, versions(body, required=True) or [])
        return Response(status_code=204)

    async def destroy(self, request: Request) -> Response:
        """Permanently remove the values of `{"versions": […]}`."""
        org = require_org()
        path = path_param(request)
        body = await body_object(request, ("versions",))
        await self._secrets.destroy(org, path, versions(body, required=True) or [])
        return Response(status_code=204)

    async def list_paths(self, request: Request) -> Response:
        """Paths under `?prefix=` (names only), paged with `page` and `perPage`."""
        org = require_org()
        prefix = validate.path_prefix(request.query_params.get("prefix"))
        number, per_page = paging(request)
        return JSONResponse(await self._secrets.paths(org, prefix, number=number,
                                                     per_page=per_page))

    async def metadata(self, request: Request) -> Response:
        """Settings and version history of a path (no values)."""
        org = require_org()
        return JSONResponse(await self._secrets.metadata(org, path_param(request)))

    async def configure(self, request: Request) -> Response:
        """Set `max_versions` (0 = default) and/or `cas_required` for a path."""
        org = require_org()
        path = path_param(request)
        body = await body_object(request, ("max_versions", "cas_required"))
        max_versions = body.get("max_versions")
        if max_versions is not None:
            validate.positive_int(max_versions, field="max_versions",
                                  maximum=MAX_VERSIONS_LIMIT)
        cas_required = body.get("cas_required")
        if cas_required is not None and not isinstance(cas_required, bool):
            raise InvalidArgument("cas_required must be true or false",
                                           details={"field": "cas_required"})
        return JSONResponse(await self._secrets.configure(
            org, path, max_versions=max_versions, cas_required=cas_required))

    async def purge(self, request: Request) -> Response:
        """Delete a path, all its versions and its metadata."""
        org = require_org()
        await self._secrets.purge(org, path_param(request))
        return Response(status_code=204)

    async def resolve(self, request: Request) -> Response:
        """Read the secret behind `?ref=kms://<deployment>/<org>/<purpose>`."""
        ref = request.query_params.get("ref")
        result = await self._service.resolve(ref)
        return JSONResponse({"ref": ref, **result})

    async def audit(self, request: Request) -> Response:
        """The org's audit trail, newest first, paged with `page` and `perPage`."""
        org = require_org()
        number, per_page = paging(request)
        return JSONResponse(await audit.page(self._db, org, number=number, per_page=per_page))
