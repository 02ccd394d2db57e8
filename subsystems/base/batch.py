"""`POST /api/batch`: several record writes in one transaction, all or nothing.

The body is `{"requests": [{"method", "url", "body"}]}` as JSON, or, as the SDK sends it,
multipart form data whose `@jsonPayload` part holds that JSON. Supported sub-requests:
`POST …/records` (create), `PATCH …/records/{id}` (update), `PUT …/records/{id}` (upsert,
the id may be new) and `DELETE …/records/{id}`, under `/api/collections/{collection}`.

An org's record hooks run as for single writes: every `base_before_*` hook before the
transaction (in request order; a deny fails the batch, a modify replaces that request's
body), every `base_after_*` hook once it has committed. An upsert runs `base_before_update`,
then the after hook of what it did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from hanzocloud.errors import CloudError, InvalidArgument, NotFound
from subsystems.base import records
from subsystems.base.expand import expand_records
from subsystems.base.hooks import RecordHooks
from subsystems.base.query import parse_fields, parse_tree, pick
from subsystems.base.store import Tx

MAX_REQUESTS = 50
_URL = re.compile(r"^/api/collections/([^/]{1,100})/records(?:/([^/]{1,100}))?/?$")


def parse_requests(payload: Any) -> list[dict[str, Any]]:
    """Validate the batch payload's shape (the sub-requests are checked when run)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
        raise InvalidArgument("the batch body must be {\"requests\": [...]}")
    items: list[dict[str, Any]] = payload["requests"]
    if not items:
        raise InvalidArgument("the batch has no requests")
    if len(items) > MAX_REQUESTS:
        raise InvalidArgument(f"a batch holds at most {MAX_REQUESTS} requests")
    if not all(isinstance(i, dict) for i in items):
        raise InvalidArgument("each batch request must be an object")
    return items


@dataclass(frozen=True, slots=True)
class SubRequest:
    """One request of a batch, checked and split up."""

    method: str
    collection: str
    record_id: str
    query: dict[str, str]
    body: Any


# (action, collection, record) of every write a batch made, for its after hooks
Done = list[tuple[str, str, dict[str, Any]]]


def _sub_request(item: dict[str, Any]) -> SubRequest:
    method = str(item.get("method", "")).upper()
    parts = urlsplit(str(item.get("url", "")))
    m = _URL.match(parts.path)
    if m is None:
        raise InvalidArgument(f"unsupported batch url {str(item.get('url'))[:200]!r}: use "
                              "/api/collections/{collection}/records[/{id}]")
    collection, record_id = unquote(m.group(1)), unquote(m.group(2) or "")
    if (method, bool(record_id)) not in (("POST", False), ("PATCH", True), ("PUT", True),
                                         ("DELETE", True)):
        raise InvalidArgument(f"unsupported batch request {method} {parts.path[:200]}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    body = item.get("body") if item.get("body") is not None else {}
    return SubRequest(method, collection, record_id, query, body)


def sub_requests(items: list[dict[str, Any]]) -> list[SubRequest]:
    """Check every request of the batch; the first bad one fails it (before any write)."""
    subs = []
    for index, item in enumerate(items):
        try:
            subs.append(_sub_request(item))
        except CloudError as exc:
            raise failure(index, exc) from None
    return subs


async def before_hooks(hooks: RecordHooks, org: str,
                       subs: list[SubRequest]) -> list[SubRequest]:
    """Run the org's `base_before_*` hooks on each request, as a single write would."""
    out = []
    for index, sub in enumerate(subs):
        action = {"POST": "create", "DELETE": "delete"}.get(sub.method, "update")
        try:
            body = await hooks.before_write(org, action, sub.collection, sub.body,
                                            sub.record_id)
        except CloudError as exc:
            raise failure(index, exc) from None
        out.append(replace(sub, body=body))
    return out


async def after_hooks(hooks: RecordHooks, org: str, done: Done) -> None:
    """Run the org's `base_after_*` hooks for every write of a committed batch."""
    for action, collection, record in done:
        await hooks.after(org, action, collection, record)


def _one(tx: Tx, sub: SubRequest, done: Done) -> dict[str, Any]:
    name, rid, body = sub.collection, sub.record_id, sub.body
    if sub.method == "POST":
        action, record = "create", records.create_record(tx, name, body)
    elif sub.method == "PATCH":
        action, record = "update", records.update_record(tx, name, rid, body)
    elif sub.method == "PUT":
        try:
            action, record = "update", records.update_record(tx, name, rid, body)
        except NotFound:
            action = "create"
            record = records.create_record(tx, name, {**_dict(body), "id": rid})
    else:
        records.delete_record(tx, name, rid)
        done.append(("delete", name, {"id": rid}))
        return {"status": 204, "body": None}
    done.append((action, name, record))
    expand = parse_tree(sub.query.get("expand"), what="expand")
    if expand:
        expand_records(tx, tx.schema.get(name), [record], expand)
    return {"status": 200, "body": pick(record, parse_fields(sub.query.get("fields")))}


def _dict(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgument("the record must be a JSON object")
    return body


def failure(index: int, exc: CloudError) -> InvalidArgument:
    """The batch's 400 for request `index` failing with `exc` (PocketBase's shape)."""
    detail = {"code": "batch_request_failed", "message": exc.message,
              "response": {"status": exc.status, "message": exc.message,
                           "data": exc.details.get("fields", {})}}
    return InvalidArgument(f"Batch transaction failed: request {index}: {exc.message}",
                           details={"fields": {"requests": {str(index): detail}}})


def run_batch(tx: Tx, subs: list[SubRequest], done: Done) -> list[dict[str, Any]]:
    """Run every sub-request in `tx`; the first failure aborts the whole batch. `done` gets
    what was written (it starts empty: a transaction retried after a lock starts over)."""
    done.clear()
    results = []
    batch = tx.request
    try:
        for index, sub in enumerate(subs):
            # Rules reading `@request.query.*` see this request's own query string (the
            # batch request's headers still apply).
            if batch is not None:
                tx.request = {**batch, "query_string": urlencode(sub.query).encode()}
            try:
                results.append(_one(tx, sub, done))
            except CloudError as exc:
                raise failure(index, exc) from None
    finally:
        tx.request = batch
    return results
