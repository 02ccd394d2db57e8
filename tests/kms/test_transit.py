"""Transit keys: every type round-trips, rotation, min_decryption_version, rewrap, datakey,
batches, public-key export only, config and deletion."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .support import Kms, assert_error, b64, unb64

SIGNING = ["ed25519", "ecdsa-p256", "ml-dsa-65"]
CIPHERTEXT = re.compile(r"^hz:v(\d+):[A-Za-z0-9+/]+={0,2}$")


async def create(kms: Kms, name: str, kind: str) -> dict[str, object]:
    r = await kms.call("POST", f"/transit/keys/{name}", json={"type": kind})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def encrypt(kms: Kms, name: str, data: bytes, **extra: object) -> str:
    body = await kms.ok("POST", f"/transit/encrypt/{name}", json={"plaintext": b64(data), **extra})
    return str(body["ciphertext"])


async def decrypt(kms: Kms, name: str, ciphertext: str, **extra: object) -> bytes:
    body = await kms.ok("POST", f"/transit/decrypt/{name}",
                        json={"ciphertext": ciphertext, **extra})
    return unb64(body["plaintext"])


async def test_aes256_gcm_round_trip(kms: Kms) -> None:
    await create(kms, "payments", "aes256-gcm")
    for data in [b"", b"card on file", bytes(range(256)) * 40]:
        ciphertext = await encrypt(kms, "payments", data)
        assert CIPHERTEXT.match(ciphertext) and ciphertext.startswith("hz:v1:")
        assert await decrypt(kms, "payments", ciphertext) == data


async def test_associated_data_is_bound(kms: Kms) -> None:
    await create(kms, "k", "aes256-gcm")
    ciphertext = await encrypt(kms, "k", b"x", associated_data=b64("order-1"))
    assert await decrypt(kms, "k", ciphertext, associated_data=b64("order-1")) == b"x"
    for aad in [None, b64("order-2")]:
        extra = {} if aad is None else {"associated_data": aad}
        r = await kms.call("POST", "/transit/decrypt/k", json={"ciphertext": ciphertext, **extra})
        assert_error(r, 400, "decryption_failed")


@pytest.mark.parametrize("kind", SIGNING)
async def test_signing_round_trip_and_public_key(kms: Kms, kind: str) -> None:
    meta = await create(kms, "signer", kind)
    assert meta["supports_signing"] is True and meta["supports_encryption"] is False
    message = b64(b"release v1.2.3")
    signed = await kms.ok("POST", "/transit/sign/signer", json={"input": message})
    assert CIPHERTEXT.match(signed["signature"]) and signed["key_version"] == 1
    ok = await kms.ok("POST", "/transit/verify/signer",
                      json={"input": message, "signature": signed["signature"]})
    assert ok == {"valid": True}
    bad = await kms.ok("POST", "/transit/verify/signer",
                       json={"input": b64(b"release v6.6.6"), "signature": signed["signature"]})
    assert bad == {"valid": False}
    # The exported PEM verifies the signature outside kms: it is the real public key.
    pem = meta["versions"][0]["public_key"]  # type: ignore[index]
    public = serialization.load_pem_public_key(pem.encode())
    raw = unb64(signed["signature"].split(":", 2)[2])
    if kind == "ecdsa-p256":
        public.verify(raw, b"release v1.2.3", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
    else:
        public.verify(raw, b"release v1.2.3")  # type: ignore[call-arg]


@pytest.mark.parametrize("kind", ["aes256-gcm", *SIGNING])
async def test_key_metadata_never_holds_private_material(kms: Kms, kind: str) -> None:
    await create(kms, "k", kind)
    await kms.ok("POST", "/transit/keys/k/rotate")
    meta = await kms.ok("GET", "/transit/keys/k")
    assert [v["version"] for v in meta["versions"]] == [1, 2]
    text = str(meta)
    assert "PRIVATE" not in text and "sealed" not in text and "material" not in text
    for v in meta["versions"]:
        assert set(v) == ({"version", "created_time", "public_key"} if kind in SIGNING
                          else {"version", "created_time"})


async def test_wrong_key_type_for_operation_is_400(kms: Kms) -> None:
    await create(kms, "enc", "aes256-gcm")
    await create(kms, "sig", "ed25519")
    r = await kms.call("POST", "/transit/sign/enc", json={"input": b64("x")})
    assert_error(r, 400, "invalid_argument")
    r = await kms.call("POST", "/transit/encrypt/sig", json={"plaintext": b64("x")})
    assert_error(r, 400, "invalid_argument")


async def test_rotation_and_min_decryption_version(kms: Kms) -> None:
    await create(kms, "k", "aes256-gcm")
    old = await encrypt(kms, "k", b"from v1")
    await kms.ok("POST", "/transit/keys/k/rotate")
    await kms.ok("POST", "/transit/keys/k/rotate")
    new = await encrypt(kms, "k", b"from v3")
    assert old.startswith("hz:v1:") and new.startswith("hz:v3:")
    assert await decrypt(kms, "k", old) == b"from v1"  # old versions still decrypt

    meta = await kms.ok("PUT", "/transit/keys/k/config", json={"min_decryption_version": 2})
    assert meta["min_decryption_version"] == 2
    r = await kms.call("POST", "/transit/decrypt/k", json={"ciphertext": old})
    error = assert_error(r, 400, "invalid_argument")
    assert error["details"]["min_decryption_version"] == 2
    assert await decrypt(kms, "k", new) == b"from v3"
    # Rewrap of a forbidden version is refused too; lowering the floor restores access.
    assert_error(await kms.call("POST", "/transit/rewrap/k", json={"ciphertext": old}), 400)
    await kms.ok("PUT", "/transit/keys/k/config", json={"min_decryption_version": 1})
    assert await decrypt(kms, "k", old) == b"from v1"


async def test_min_decryption_version_applies_to_verify(kms: Kms) -> None:
    await create(kms, "s", "ecdsa-p256")
    signed = await kms.ok("POST", "/transit/sign/s", json={"input": b64("m")})
    await kms.ok("POST", "/transit/keys/s/rotate")
    await kms.ok("PUT", "/transit/keys/s/config", json={"min_decryption_version": 2})
    r = await kms.call("POST", "/transit/verify/s",
                       json={"input": b64("m"), "signature": signed["signature"]})
    assert_error(r, 400, "invalid_argument")


async def test_rewrap_moves_to_newest_version(kms: Kms) -> None:
    await create(kms, "k", "aes256-gcm")
    old = await encrypt(kms, "k", b"payload", associated_data=b64("ctx"))
    await kms.ok("POST", "/transit/keys/k/rotate")
    rewrapped = await kms.ok("POST", "/transit/rewrap/k",
                             json={"ciphertext": old, "associated_data": b64("ctx")})
    assert rewrapped["key_version"] == 2 and rewrapped["ciphertext"].startswith("hz:v2:")
    assert "plaintext" not in rewrapped
    await kms.ok("PUT", "/transit/keys/k/config", json={"min_decryption_version": 2})
    assert await decrypt(kms, "k", rewrapped["ciphertext"],
                         associated_data=b64("ctx")) == b"payload"


async def test_encrypt_with_explicit_and_forbidden_key_version(kms: Kms) -> None:
    await create(kms, "k", "aes256-gcm")
    await kms.ok("POST", "/transit/keys/k/rotate")
    assert (await encrypt(kms, "k", b"x", key_version=1)).startswith("hz:v1:")
    await kms.ok("PUT", "/transit/keys/k/config", json={"min_encryption_version": 2})
    r = await kms.call("POST", "/transit/encrypt/k", json={"plaintext": b64("x"), "key_version": 1})
    assert assert_error(r, 400)["details"]["field"] == "key_version"
    r = await kms.call("POST", "/transit/encrypt/k", json={"plaintext": b64("x"), "key_version": 3})
    assert_error(r, 400)


@pytest.mark.parametrize(("kind", "with_plaintext"), [("plaintext", True), ("wrapped", False)],
                         ids=["plaintext", "wrapped"])
async def test_datakey(kms: Kms, kind: str, with_plaintext: bool) -> None:
    await create(kms, "k", "aes256-gcm")
    body = await kms.ok("POST", f"/transit/datakey/{kind}/k", json={"bits": 512})
    assert ("plaintext" in body) is with_plaintext and body["key_version"] == 1
    unwrapped = await decrypt(kms, "k", body["ciphertext"])
    assert len(unwrapped) == 64
    if with_plaintext:
        assert unb64(body["plaintext"]) == unwrapped
    default = await kms.ok("POST", f"/transit/datakey/{kind}/k")
    assert len(await decrypt(kms, "k", default["ciphertext"])) == 32


async def test_batches(kms: Kms) -> None:
    await create(kms, "k", "aes256-gcm")
    await create(kms, "s", "ed25519")
    plain = [b"a", b"bb", b""]
    enc = await kms.ok("POST", "/transit/encrypt/k",
                       json={"batch_input": [{"plaintext": b64(p)} for p in plain]})
    cts = [r["ciphertext"] for r in enc["batch_results"]]
    dec = await kms.ok("POST", "/transit/decrypt/k", json={"batch_input": [
        {"ciphertext": cts[0]}, {"ciphertext": "hz:v1:" + b64(b"\x00" * 40)},
        {"ciphertext": cts[2]}]})
    results = dec["batch_results"]
    assert unb64(results[0]["plaintext"]) == b"a" and unb64(results[2]["plaintext"]) == b""
    assert results[1]["error"]["code"] == "decryption_failed"
    signed = await kms.ok("POST", "/transit/sign/s",
                          json={"batch_input": [{"input": b64(p)} for p in plain]})
    sigs = [r["signature"] for r in signed["batch_results"]]
    verified = await kms.ok("POST", "/transit/verify/s", json={"batch_input": [
        {"input": b64(p), "signature": sigs[i]} for i, p in enumerate(plain)] + [
        {"input": b64("other"), "signature": sigs[0]}]})
    assert [r["valid"] for r in verified["batch_results"]] == [True, True, True, False]


async def test_key_lifecycle_create_list_delete(kms: Kms) -> None:
    await create(kms, "b-key", "ed25519")
    await create(kms, "a-key", "aes256-gcm")
    old = await encrypt(kms, "a-key", b"made by the first a-key")
    r = await kms.call("POST", "/transit/keys/a-key", json={"type": "aes256-gcm"})
    assert_error(r, 409, "conflict")
    listed = await kms.ok("GET", "/transit/keys")
    assert [(i["name"], i["type"]) for i in listed["items"]] == [
        ("a-key", "aes256-gcm"), ("b-key", "ed25519")]
    assert_error(await kms.call("DELETE", "/transit/keys/a-key"), 400, "invalid_argument")
    await kms.ok("PUT", "/transit/keys/a-key/config", json={"deletion_allowed": True})
    await kms.ok("DELETE", "/transit/keys/a-key")
    assert_error(await kms.call("GET", "/transit/keys/a-key"), 404, "not_found")
    # A new key under the old name has new material: old ciphertexts do not open.
    await create(kms, "a-key", "aes256-gcm")
    r = await kms.call("POST", "/transit/decrypt/a-key", json={"ciphertext": old})
    assert_error(r, 400, "decryption_failed")
    assert (await kms.ok("GET", "/transit/keys"))["totalItems"] == 2


async def test_create_defaults_to_aes256_gcm(kms: Kms) -> None:
    r = await kms.call("POST", "/transit/keys/plain")
    assert r.status_code == 201 and r.json()["type"] == "aes256-gcm"


@pytest.mark.parametrize("config", [
    {"min_decryption_version": 0}, {"min_decryption_version": 3},
    {"min_encryption_version": 5}, {"min_decryption_version": "2"},
    {"deletion_allowed": "yes"}, {"exportable": True},
], ids=["dec-zero", "dec-ahead", "enc-ahead", "dec-string", "flag-string", "unknown-field"])
async def test_bad_config_is_400_and_changes_nothing(kms: Kms, config: dict[str, object]) -> None:
    await create(kms, "k", "aes256-gcm")
    await kms.ok("POST", "/transit/keys/k/rotate")
    before = await kms.ok("GET", "/transit/keys/k")
    assert_error(await kms.call("PUT", "/transit/keys/k/config", json=config), 400)
    assert await kms.ok("GET", "/transit/keys/k") == before
