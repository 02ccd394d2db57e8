"""Request parsing shared by the kms endpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from starlette.requests import Request

from hanzocloud.errors import CloudError, InvalidArgument
from hanzocloud.routing import json_body

from .. import validate

T = TypeVar("T")
MAX_PER_PAGE = 500


async def body_object(request: Request, allowed: Iterable[str], *,
                      empty_ok: bool = False) -> dict[str, Any]:
    """The JSON object body; unknown fields are a 400 so a typo never passes silently."""
    if empty_ok and not await request.body():
        return {}
    body = validate.json_object(await json_body(request))
    return only(body, allowed)


def only(body: dict[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    """Refuse fields outside `allowed`, naming the first one."""
    known = set(allowed)
    for name in body:
        if name not in known:
            raise InvalidArgument(f"unknown field '{name}'; expected {', '.join(sorted(known))}",
                                  details={"field": name})
    return body


def paging(request: Request) -> tuple[int, int]:
    """`page` (from 1) and `perPage` (1-500, default 50) from the query string."""
    q = request.query_params
    number = validate.query_int(q.get("page"), field="page", default=1, minimum=1,
                                maximum=10**6)
    per_page = validate.query_int(q.get("perPage"), field="perPage", default=50, minimum=1,
                                  maximum=MAX_PER_PAGE)
    return number, per_page


def versions(body: dict[str, Any], *, required: bool) -> list[int] | None:
    """`versions`: a non-empty list of version numbers."""
    raw = body.get("versions")
    if raw is None and not required:
        return None
    if not isinstance(raw, list) or not 1 <= len(raw) <= validate.MAX_BATCH:
        raise InvalidArgument(f"versions must be a list of 1 to {validate.MAX_BATCH} version "
                              "numbers", details={"field": "versions"})
    return sorted({validate.positive_int(v, field="versions", minimum=1) for v in raw})


def items(body: dict[str, Any], parse: Callable[[dict[str, Any]], T], fields: Iterable[str],
          options: Iterable[str] = ()) -> tuple[list[T], bool]:
    """One item (the body itself) or `batch_input`; every item is checked before any runs.

    `fields` are an item's fields; `options` apply to the whole request (e.g. key_version).
    """
    fields, options = tuple(fields), tuple(options)
    if "batch_input" not in body:
        return [parse(only(body, fields + options))], False
    only(body, ("batch_input", *options))
    raw = body["batch_input"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= validate.MAX_BATCH:
        raise InvalidArgument(f"batch_input must be a list of 1 to {validate.MAX_BATCH} items",
                              details={"field": "batch_input"})
    out: list[T] = []
    for index, item in enumerate(raw):
        try:
            out.append(parse(only(validate.json_object(item), fields)))
        except CloudError as exc:
            raise type(exc)(f"batch_input[{index}]: {exc.message}",
                            details={**exc.details, "index": index}) from None
    return out, True


def path_param(request: Request, name: str = "path") -> str:
    """The secret path from the URL, checked."""
    return validate.secret_path(request.path_params.get(name, ""))
