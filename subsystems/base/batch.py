"""`POST /api/batch`: several record writes in one transaction, all or nothing.

The body is `{"requests": [{"method", "url", "body"}]}` as JSON, or, as the SDK sends it,
multipart form data whose `@jsonPayload` part holds that JSON. Supported sub-requests:
`POST …/records` (create), `PATCH …/records/{id}` (update), `PUT …/records/{id}` (upsert,
the id may be new) and `DELETE …/records/{id}`, under `/api/collections/{collection}`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from hanzocloud.errors import CloudError, InvalidArgument, NotFound
from subsystems.base import records
from subsystems.base.expand import expand_records
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


def _one(tx: Tx, item: dict[str, Any]) -> dict[str, Any]:
    method = str(item.get("method", "")).upper()
    parts = urlsplit(str(item.get("url", "")))
    m = _URL.match(parts.path)
    if m is None:
        raise InvalidArgument(f"unsupported batch url {str(item.get('url'))[:200]!r}: use "
                              "/api/collections/{collection}/records[/{id}]")
    collection, record_id = unquote(m.group(1)), unquote(m.group(2) or "")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    body = item.get("body") if item.get("body") is not None else {}
    if method == "POST" and not record_id:
        record = records.create_record(tx, collection, body)
    elif method == "PATCH" and record_id:
        record = records.update_record(tx, collection, record_id, body)
    elif method == "PUT" and record_id:
        try:
            record = records.update_record(tx, collection, record_id, body)
        except NotFound:
            record = records.create_record(tx, collection, {**_dict(body), "id": record_id})
    elif method == "DELETE" and record_id:
        records.delete_record(tx, collection, record_id)
        return {"status": 204, "body": None}
    else:
        raise InvalidArgument(f"unsupported batch request {method} {parts.path[:200]}")
    expand = parse_tree(query.get("expand"), what="expand")
    if expand:
        expand_records(tx, tx.schema.get(collection), [record], expand)
    return {"status": 200, "body": pick(record, parse_fields(query.get("fields")))}


def _dict(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgument("the record must be a JSON object")
    return body


def run_batch(tx: Tx, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run every sub-request in `tx`; the first failure aborts the whole batch."""
    results = []
    for index, item in enumerate(items):
        try:
            results.append(_one(tx, item))
        except CloudError as exc:
            failure = {"code": "batch_request_failed", "message": exc.message,
                       "response": {"status": exc.status, "message": exc.message,
                                    "data": exc.details.get("fields", {})}}
            raise InvalidArgument(f"Batch transaction failed: request {index}: {exc.message}",
                                  details={"fields": {"requests": {str(index): failure}}},
                                  ) from None
    return results
