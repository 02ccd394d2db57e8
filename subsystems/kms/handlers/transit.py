"""Endpoints for transit keys: management, encrypt/decrypt/rewrap, datakey, sign/verify."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.errors import InvalidArgument
from hanzocloud.http import JSONResponse
from hanzocloud.routing import require_org

from .. import keytypes, validate
from ..transit import Plain, Sealed, Signed, Transit
from .common import body_object, items, paging

DATAKEY_BITS = (128, 256, 512)


def _name(request: Request) -> str:
    return validate.key_name(request.path_params.get("name", ""))


def _answer(results: list[dict[str, Any]], batch: bool) -> Response:
    return JSONResponse({"batch_results": results} if batch else results[0])


def _plain(item: dict[str, Any]) -> Plain:
    return Plain(validate.b64decode(item.get("plaintext"), field="plaintext"),
                 validate.b64decode(item.get("associated_data"), field="associated_data",
                                    required=False))


def _sealed(item: dict[str, Any]) -> Sealed:
    version, blob = validate.versioned(item.get("ciphertext"))
    return Sealed(version, blob, validate.b64decode(item.get("associated_data"),
                                                    field="associated_data", required=False))


def _signable(item: dict[str, Any]) -> Plain:
    return Plain(validate.b64decode(item.get("input"), field="input"))


def _signed(item: dict[str, Any]) -> Signed:
    version, signature = validate.versioned(item.get("signature"), field="signature")
    return Signed(validate.b64decode(item.get("input"), field="input"), version, signature)


def _flag(body: dict[str, Any], field: str) -> bool | None:
    value = body.get(field)
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(f"{field} must be true or false", details={"field": field})
    return value


class TransitHandlers:
    """HTTP face of `Transit` (Vault Transit shapes, see docs/kms.md)."""

    def __init__(self, transit: Transit) -> None:
        self._transit = transit

    async def create(self, request: Request) -> Response:
        """Create a key: `{"type": "aes256-gcm" | "ed25519" | "ecdsa-p256" | "ml-dsa-65"}`."""
        org = require_org()
        name = _name(request)
        body = await body_object(request, ("type",), empty_ok=True)
        kind = keytypes.key_type(body.get("type", "aes256-gcm"))
        return JSONResponse(await self._transit.create(org, name, kind), status_code=201)

    async def list_keys(self, request: Request) -> Response:
        """Key names, types and latest versions, paged with `page` and `perPage`."""
        org = require_org()
        number, per_page = paging(request)
        return JSONResponse(await self._transit.names(org, number=number, per_page=per_page))

    async def describe(self, request: Request) -> Response:
        """A key's settings and versions, with public keys only."""
        org = require_org()
        return JSONResponse(await self._transit.describe(org, _name(request)))

    async def rotate(self, request: Request) -> Response:
        """Add a new key version."""
        org = require_org()
        return JSONResponse(await self._transit.rotate(org, _name(request)))

    async def configure(self, request: Request) -> Response:
        """Set `min_decryption_version`, `min_encryption_version`, `deletion_allowed`."""
        org = require_org()
        name = _name(request)
        body = await body_object(request, ("min_decryption_version", "min_encryption_version",
                                           "deletion_allowed"))
        return JSONResponse(await self._transit.configure(
            org, name,
            min_decryption_version=validate.optional_int(body, "min_decryption_version",
                                                         minimum=1),
            min_encryption_version=validate.optional_int(body, "min_encryption_version"),
            deletion_allowed=_flag(body, "deletion_allowed")))

    async def delete(self, request: Request) -> Response:
        """Delete a key whose config allows it."""
        org = require_org()
        await self._transit.delete(org, _name(request))
        return Response(status_code=204)

    async def encrypt(self, request: Request) -> Response:
        """Encrypt `{"plaintext": b64, "associated_data"?: b64}` or `batch_input`."""
        org = require_org()
        name = _name(request)
        body = await body_object(request, ("plaintext", "associated_data", "key_version",
                                           "batch_input"))
        parsed, batch = items(body, _plain, ("plaintext", "associated_data"), ("key_version",))
        results = await self._transit.encrypt(
            org, name, parsed, key_version=validate.optional_int(body, "key_version", minimum=1),
            batch=batch)
        return _answer(results, batch)

    async def decrypt(self, request: Request) -> Response:
        """Decrypt `{"ciphertext": "hz:v<N>:…", "associated_data"?}` or `batch_input`."""
        return await self._open(request, rewrap=False)

    async def rewrap(self, request: Request) -> Response:
        """Re-encrypt ciphertexts under the newest key version without revealing them."""
        return await self._open(request, rewrap=True)

    async def _open(self, request: Request, *, rewrap: bool) -> Response:
        org = require_org()
        name = _name(request)
        body = await body_object(request, ("ciphertext", "associated_data", "batch_input"))
        parsed, batch = items(body, _sealed, ("ciphertext", "associated_data"))
        results = await self._transit.decrypt(org, name, parsed, batch=batch, rewrap=rewrap)
        return _answer(results, batch)

    async def datakey(self, request: Request) -> Response:
        """A new data key: `/datakey/plaintext/{name}` (clear + wrapped) or `/wrapped/{name}`."""
        org = require_org()
        kind = request.path_params.get("kind")
        if kind not in ("plaintext", "wrapped"):
            raise InvalidArgument("datakey kind must be 'plaintext' or 'wrapped'",
                                  details={"field": "kind"})
        name = _name(request)
        body = await body_object(request, ("bits", "associated_data"), empty_ok=True)
        bits = body.get("bits", 256)
        if type(bits) is not int or bits not in DATAKEY_BITS:  # not 256.0, not true
            raise InvalidArgument("bits must be 128, 256 or 512", details={"field": "bits"})
        aad = validate.b64decode(body.get("associated_data"), field="associated_data",
                                 required=False)
        return JSONResponse(await self._transit.datakey(
            org, name, bits=bits, with_plaintext=kind == "plaintext", aad=aad))

    async def sign(self, request: Request) -> Response:
        """Sign `{"input": b64}` or `batch_input`."""
        org = require_org()
        name = _name(request)
        body = await body_object(request, ("input", "key_version", "batch_input"))
        parsed, batch = items(body, _signable, ("input",), ("key_version",))
        results = await self._transit.sign(
            org, name, parsed, key_version=validate.optional_int(body, "key_version", minimum=1),
            batch=batch)
        return _answer(results, batch)

    async def verify(self, request: Request) -> Response:
        """Verify `{"input": b64, "signature": "hz:v<N>:…"}` or `batch_input`."""
        org = require_org()
        name = _name(request)
        body = await body_object(request, ("input", "signature", "batch_input"))
        parsed, batch = items(body, _signed, ("input", "signature"))
        return _answer(await self._transit.verify(org, name, parsed, batch=batch), batch)
