"""HTTP handlers of the base API. Each reads the tenant from the minted identity only."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hanzocloud.errors import InvalidArgument
from hanzocloud.http import JSONResponse, client_source
from hanzocloud.identity import Identity, current_identity
from hanzocloud.routing import decode_json, json_body, require_org
from subsystems.base import collection_service, records
from subsystems.base.batch import (
    Done,
    after_hooks,
    before_hooks,
    parse_requests,
    run_batch,
    sub_requests,
)
from subsystems.base.expand import expand_records
from subsystems.base.hooks import RecordHooks
from subsystems.base.query import parse_fields, parse_list_params, parse_tree, pick
from subsystems.base.realtime import Broker
from subsystems.base.store import BaseStore


def _caller() -> tuple[str, Identity]:
    return require_org(), current_identity.get()


def _name(request: Request) -> str:
    return str(request.path_params["collection"])


class Handlers:
    """The endpoints, bound to one BaseStore and realtime Broker."""

    def __init__(self, store: BaseStore, broker: Broker, hooks: RecordHooks) -> None:
        self.store = store
        self.broker = broker
        self.hooks = hooks

    # -- collections ------------------------------------------------------------------------

    async def list_collections(self, request: Request) -> Response:
        """List the org's collections."""
        org, who = _caller()
        text = request.query_params.get("filter", "")
        return JSONResponse(await self.store.read(
            org, who, lambda tx: collection_service.list_collections(tx, filter_text=text)))

    async def create_collection(self, request: Request) -> Response:
        """Create a collection (and its table)."""
        org, who = _caller()
        body = await json_body(request)
        return JSONResponse(await self.store.write(
            org, who, lambda tx: collection_service.create(tx, body), offload=True))

    async def view_collection(self, request: Request) -> Response:
        """View one collection."""
        org, who = _caller()
        name = _name(request)
        return JSONResponse(await self.store.read(
            org, who, lambda tx: collection_service.view_collection(tx, name)))

    async def update_collection(self, request: Request) -> Response:
        """Change a collection; existing rows are migrated in the same transaction."""
        org, who = _caller()
        name, body = _name(request), await json_body(request)
        return JSONResponse(await self.store.write(
            org, who, lambda tx: collection_service.update(tx, name, body), offload=True))

    async def delete_collection(self, request: Request) -> Response:
        """Delete a collection and its records."""
        org, who = _caller()
        name = _name(request)
        await self.store.write(org, who, lambda tx: collection_service.delete(tx, name),
                               offload=True)
        return Response(status_code=204)

    # -- records ----------------------------------------------------------------------------

    async def list_records(self, request: Request) -> Response:
        """A page of records: filter, sort, expand, fields, skipTotal."""
        org, who = _caller()
        name, params = _name(request), parse_list_params(request.query_params)
        return JSONResponse(await self.store.read(
            org, who, lambda tx: records.list_records(tx, name, params)))

    async def view_record(self, request: Request) -> Response:
        """One record by id."""
        org, who = _caller()
        name, rid = _name(request), str(request.path_params["id"])
        q = request.query_params
        expand = parse_tree(q.get("expand"), what="expand")
        fields = parse_fields(q.get("fields"))
        return JSONResponse(await self.store.read(
            org, who, lambda tx: records.view_record(tx, name, rid, expand=expand,
                                                     fields=fields)))

    async def create_record(self, request: Request) -> Response:
        """Create a record."""
        org, who = _caller()
        name, body = _name(request), await _record_body(request)
        body = await self.hooks.before_write(org, "create", name, body)
        shape = _shaper(request, name)
        created = await self.store.write(
            org, who, lambda tx: shape(tx, records.create_record(tx, name, body)))
        await self.hooks.after(org, "create", name, created)
        return JSONResponse(created)

    async def update_record(self, request: Request) -> Response:
        """Update some fields of a record."""
        org, who = _caller()
        name, rid = _name(request), str(request.path_params["id"])
        body, shape = await _record_body(request), _shaper(request, name)
        body = await self.hooks.before_write(org, "update", name, body, rid)
        updated = await self.store.write(
            org, who, lambda tx: shape(tx, records.update_record(tx, name, rid, body)))
        await self.hooks.after(org, "update", name, updated)
        return JSONResponse(updated)

    async def delete_record(self, request: Request) -> Response:
        """Delete a record (cascading where relations ask for it)."""
        org, who = _caller()
        name, rid = _name(request), str(request.path_params["id"])
        await self.hooks.before_write(org, "delete", name, None, rid)
        await self.store.write(org, who, lambda tx: records.delete_record(tx, name, rid))
        await self.hooks.after(org, "delete", name, {"id": rid})
        return Response(status_code=204)

    # -- batch, realtime, health ------------------------------------------------------------

    async def batch(self, request: Request) -> Response:
        """Several record writes in one all-or-nothing transaction."""
        org, who = _caller()
        subs = sub_requests(parse_requests(await _batch_payload(request)))
        subs = await before_hooks(self.hooks, org, subs)
        done: Done = []
        results = await self.store.write(org, who, lambda tx: run_batch(tx, subs, done))
        await after_hooks(self.hooks, org, done)
        return JSONResponse(results)

    async def realtime_connect(self, request: Request) -> Response:
        """Open the SSE stream (PB_CONNECT first)."""
        client = self.broker.connect(current_identity.get(), client_source(request.scope))
        return StreamingResponse(self.broker.stream(client), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def realtime_subscribe(self, request: Request) -> Response:
        """Set the subscriptions of a stream opened by the same identity."""
        require_org()
        body = await json_body(request)
        if not isinstance(body, dict):
            raise InvalidArgument("expected {\"clientId\": …, \"subscriptions\": [...]}")
        self.broker.subscribe(current_identity.get(), body.get("clientId"),
                              body.get("subscriptions", []))
        return Response(status_code=204)

    async def health(self, _: Request) -> Response:
        """PocketBase's health check."""
        return JSONResponse({"code": 200, "message": "API is healthy.", "data": {}})


def _shaper(request: Request, name: str) -> Any:
    """Apply `expand` and `fields` from the query to a created/updated record."""
    expand = parse_tree(request.query_params.get("expand"), what="expand")
    fields = parse_fields(request.query_params.get("fields"))

    def shape(tx: Any, record: dict[str, Any]) -> Any:
        if expand:
            expand_records(tx, tx.schema.get(name), [record], expand)
        return pick(record, fields)

    return shape


async def _record_body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return _form_dict(await request.form())
    return await json_body(request)


def _form_dict(form: Any) -> dict[str, Any]:
    """A form as a record body: `@jsonPayload` merged in, repeated keys as lists."""
    out: dict[str, Any] = {}
    for key in set(form.keys()):
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        if key == "@jsonPayload":
            for raw in values:
                decoded = decode_json(raw, "@jsonPayload")
                if isinstance(decoded, dict):
                    out.update(decoded)
        elif values:
            out[key] = values if len(values) > 1 else values[0]
    return out


async def _batch_payload(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return _form_dict(await request.form())
    return await json_body(request)
