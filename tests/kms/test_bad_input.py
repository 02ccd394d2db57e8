"""Bad input, class by class: a 4xx JSON error with the right status, and nothing stored."""

from __future__ import annotations

from typing import Any

import pytest

from .support import Kms, assert_error, b64

MIB = 1024 * 1024
LONG_PATH = "/".join(["seg"] * 200)  # 799 characters


async def snapshot(kms: Kms) -> list[Any]:
    """Everything an org has stored, as seen through the API."""
    return [
        await kms.ok("GET", "/secrets", params={"perPage": "500"}),
        await kms.ok("GET", "/metadata/known/path"),
        await kms.ok("GET", "/secrets/known/path"),
        await kms.ok("GET", "/transit/keys"),
        await kms.ok("GET", "/transit/keys/enc"),
        await kms.ok("GET", "/transit/keys/sig"),
    ]


@pytest.fixture
async def seeded(kms: Kms) -> Kms:
    await kms.ok("PUT", "/secrets/known/path", json={"value": "kept"})
    await kms.ok("POST", "/transit/keys/enc", json={"type": "aes256-gcm"})
    await kms.ok("POST", "/transit/keys/sig", json={"type": "ed25519"})
    return kms


CT = "hz:v1:" + b64(b"\x00" * 32)
# (id, method, url, request kwargs, status)
CASES: list[tuple[str, str, str, dict[str, Any], int]] = [
    # plaintext and other base64 fields
    ("plaintext-not-base64", "POST", "/transit/encrypt/enc", {"json": {"plaintext": "%%%"}}, 400),
    ("plaintext-bad-padding", "POST", "/transit/encrypt/enc", {"json": {"plaintext": "YWJj="}},
     400),
    ("plaintext-urlsafe", "POST", "/transit/encrypt/enc", {"json": {"plaintext": "-_-_"}}, 400),
    ("plaintext-number", "POST", "/transit/encrypt/enc", {"json": {"plaintext": 12}}, 400),
    ("plaintext-missing", "POST", "/transit/encrypt/enc", {"json": {}}, 400),
    ("plaintext-too-big", "POST", "/transit/encrypt/enc",
     {"json": {"plaintext": b64(b"x" * (MIB + 1))}}, 413),
    ("aad-not-base64", "POST", "/transit/encrypt/enc",
     {"json": {"plaintext": "", "associated_data": "??"}}, 400),
    ("batch-item-bad", "POST", "/transit/encrypt/enc",
     {"json": {"batch_input": [{"plaintext": "YQ=="}, {"plaintext": "nope!"}]}}, 400),
    ("batch-not-list", "POST", "/transit/encrypt/enc", {"json": {"batch_input": "x"}}, 400),
    ("batch-empty", "POST", "/transit/encrypt/enc", {"json": {"batch_input": []}}, 400),
    ("sign-input-not-base64", "POST", "/transit/sign/sig", {"json": {"input": "a b"}}, 400),
    # ciphertexts and signatures
    ("ciphertext-v0", "POST", "/transit/decrypt/enc", {"json": {"ciphertext": "hz:v0:AAAA"}},
     400),
    ("ciphertext-no-v", "POST", "/transit/decrypt/enc", {"json": {"ciphertext": "hz:1:AAAA"}},
     400),
    ("ciphertext-foreign-prefix", "POST", "/transit/decrypt/enc",
     {"json": {"ciphertext": CT.replace("hz:", "vault:")}}, 400),
    ("ciphertext-not-base64", "POST", "/transit/decrypt/enc",
     {"json": {"ciphertext": "hz:v1:not base64"}}, 400),
    ("signature-malformed", "POST", "/transit/verify/sig",
     {"json": {"input": "", "signature": "sig"}}, 400),
    # key types and names
    ("unknown-key-type", "POST", "/transit/keys/newkey", {"json": {"type": "rsa-4096"}}, 400),
    ("key-type-not-string", "POST", "/transit/keys/newkey", {"json": {"type": 1}}, 400),
    ("key-name-space", "POST", "/transit/keys/bad%20name", {"json": {"type": "ed25519"}}, 400),
    ("key-name-dot", "POST", "/transit/keys/.hidden", {"json": {"type": "ed25519"}}, 400),
    ("key-name-unicode", "POST", "/transit/keys/cl%C3%A9", {"json": {"type": "ed25519"}}, 400),
    ("datakey-bits", "POST", "/transit/datakey/plaintext/enc", {"json": {"bits": 100}}, 400),
    ("datakey-kind", "POST", "/transit/datakey/both/enc", {"json": {}}, 400),
    ("key-version-zero", "POST", "/transit/encrypt/enc",
     {"json": {"plaintext": "", "key_version": 0}}, 400),
    # secret values
    ("value-over-1mib", "PUT", "/secrets/new/big", {"json": {"value": "v" * (MIB + 1)}}, 413),
    ("value-multibyte-over-1mib", "PUT", "/secrets/new/big",
     {"json": {"value": "é" * (MIB // 2 + 1)}}, 413),
    ("value-number", "PUT", "/secrets/new/x", {"json": {"value": 5}}, 400),
    ("value-missing", "PUT", "/secrets/new/x", {"json": {"cas": 0}}, 400),
    ("cas-negative", "PUT", "/secrets/new/x", {"json": {"value": "v", "cas": -1}}, 400),
    ("cas-string", "PUT", "/secrets/known/path", {"json": {"value": "v", "cas": "1"}}, 400),
    ("cas-bool", "PUT", "/secrets/known/path", {"json": {"value": "v", "cas": True}}, 400),
    ("unknown-field", "PUT", "/secrets/known/path", {"json": {"value": "v", "ttl": 3}}, 400),
    ("body-not-json", "PUT", "/secrets/known/path",
     {"content": b"{value", "headers": {"content-type": "application/json"}}, 400),
    ("body-array", "PUT", "/secrets/known/path", {"json": ["v"]}, 400),
    ("body-wrong-type", "PUT", "/secrets/known/path",
     {"content": b"value=v", "headers": {"content-type": "text/plain"}}, 415),
    # secret paths
    ("path-space", "PUT", "/secrets/new/a%20b", {"json": {"value": "v"}}, 400),
    ("path-empty-segment", "PUT", "/secrets/new//x", {"json": {"value": "v"}}, 400),
    ("path-dotdot", "PUT", "/secrets/new/%2E%2E/x", {"json": {"value": "v"}}, 400),
    ("path-dot", "PUT", "/secrets/new/%2E/x", {"json": {"value": "v"}}, 400),
    ("path-trailing-slash", "PUT", "/secrets/new/x/", {"json": {"value": "v"}}, 400),
    ("path-nul", "PUT", "/secrets/new/a%00b", {"json": {"value": "v"}}, 400),
    ("path-unicode", "PUT", "/secrets/new/%C3%BC", {"json": {"value": "v"}}, 400),
    ("path-quote", "PUT", "/secrets/new/a'--", {"json": {"value": "v"}}, 400),
    ("path-too-long", "PUT", f"/secrets/{LONG_PATH}", {"json": {"value": "v"}}, 400),
    ("path-empty", "PUT", "/secrets/", {"json": {"value": "v"}}, 400),
    ("list-prefix-bad", "GET", "/secrets?prefix=a%20b", {}, 400),
    ("version-not-int", "GET", "/secrets/known/path?version=abc", {}, 400),
    ("version-zero", "GET", "/secrets/known/path?version=0", {}, 400),
    ("page-zero", "GET", "/secrets?page=0", {}, 400),
    ("per-page-huge", "GET", "/transit/keys?perPage=100000", {}, 400),
    ("versions-empty", "POST", "/destroy/known/path", {"json": {"versions": []}}, 400),
    ("versions-not-ints", "POST", "/destroy/known/path", {"json": {"versions": ["1"]}}, 400),
    ("max-versions-negative", "PUT", "/metadata/known/path", {"json": {"max_versions": -1}},
     400),
    ("cas-required-string", "PUT", "/metadata/known/path", {"json": {"cas_required": "yes"}},
     400),
    # references
    ("ref-missing", "GET", "/resolve", {}, 400),
    ("ref-wrong-scheme", "GET", "/resolve?ref=https://hanzo/acme/known/path", {}, 400),
    ("ref-no-purpose", "GET", "/resolve?ref=kms://hanzo/acme", {}, 400),
    ("ref-upper-org", "GET", "/resolve?ref=kms://hanzo/ACME/known/path", {}, 400),
    ("ref-dotdot", "GET", "/resolve?ref=kms://hanzo/acme/../known/path", {}, 400),
    ("ref-empty-org", "GET", "/resolve?ref=kms://hanzo//known/path", {}, 400),
    # JSON whose string bytes are not UTF-8; a data key size that is a float equal to one
    ("body-not-utf8", "PUT", "/secrets/known/path",
     {"content": b'{"value": "\xff"}', "headers": {"content-type": "application/json"}}, 400),
    ("datakey-bits-float", "POST", "/transit/datakey/plaintext/enc", {"json": {"bits": 256.0}},
     400),
]


@pytest.mark.parametrize(("method", "url", "kwargs", "status"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
async def test_bad_input_is_a_json_4xx_and_stores_nothing(
        seeded: Kms, method: str, url: str, kwargs: dict[str, Any], status: int) -> None:
    before = await snapshot(seeded)
    audit_before = (await seeded.ok("GET", "/audit"))["totalItems"]
    r = await seeded.call(method, url, **kwargs)
    assert_error(r, status)
    assert await snapshot(seeded) == before
    # The reads of `snapshot` add audit rows of their own; the bad call added none.
    assert (await seeded.ok("GET", "/audit"))["totalItems"] == audit_before + 1


async def test_batch_error_names_the_item(seeded: Kms) -> None:
    r = await seeded.call("POST", "/transit/encrypt/enc",
                          json={"batch_input": [{"plaintext": "YQ=="}, {"plaintext": "!"}]})
    error = assert_error(r, 400, "invalid_argument")
    assert error["details"] == {"field": "plaintext", "index": 1}
    assert error["message"].startswith("batch_input[1]:")
