"""Reading OAuth requests: form bodies (RFC 6749 §3.2), query strings and Basic client auth."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.http import JSONResponse
from hanzocloud.identity import current_request_id
from subsystems.iam.grants import OAuthError

MAX_FIELDS = 64
MAX_VALUE = 8192
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def unique_params(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Parameters as a dict; a repeated or oversized parameter is invalid_request."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise OAuthError("invalid_request", f"parameter '{key}' is repeated")
        if len(value) > MAX_VALUE or len(key) > 100:
            raise OAuthError("invalid_request", f"parameter '{key[:100]}' is too long")
        out[key] = value
    return out


async def read_form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body, strictly (RFC 6749 §3.2)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request",
                         "the body must be application/x-www-form-urlencoded")
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS,
                          errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the form body is malformed") from None
    return unique_params(pairs)


def query_params(request: Request) -> dict[str, str]:
    """The query string as unique parameters."""
    try:
        return unique_params(parse_qsl(request.url.query, keep_blank_values=True,
                                       max_num_fields=MAX_FIELDS, errors="strict"))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the query string is malformed") from None


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """client_id and secret from `Authorization: Basic` (form-encoded per RFC 6749 §2.3.1)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # not base64, not ASCII, not UTF-8 inside
        raise OAuthError("invalid_client", "malformed Basic credentials", status=401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", status=401)
    return unquote_plus(client_id), unquote_plus(secret)


def oauth_error_response(exc: OAuthError) -> Response:
    """The RFC 6749 §5.2 error body (plus the request id), with no-store headers."""
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    body: dict[str, Any] = {"error": exc.error, "error_description": exc.description,
                            "request_id": current_request_id.get()}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def oauth_json(body: dict[str, Any], status: int = 200) -> Response:
    """A successful OAuth response: JSON, never cached."""
    return JSONResponse(body, status_code=status, headers=dict(NO_STORE))
