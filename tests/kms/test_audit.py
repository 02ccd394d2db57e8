"""The audit trail: one row per read, write, decrypt and sign (and key management), with
who, what, which version, the request id and the outcome; never a value."""

from __future__ import annotations

from typing import Any

import pytest

from .support import Kms, b64

SECRET = "audit-me-" + "q" * 20


async def rows(kms: Kms, **params: str) -> list[dict[str, Any]]:
    return list((await kms.ok("GET", "/audit", params={"perPage": "500", **params}))["items"])


# (id, method, url, body, expected (action, kind, target, version, outcome))
ACTIONS: list[tuple[str, str, str, dict[str, Any] | None, tuple[Any, ...]]] = [
    ("write", "PUT", "/secrets/db/pw", {"value": SECRET}, ("write", "secret", "db/pw", 2, "ok")),
    ("read", "GET", "/secrets/db/pw", None, ("read", "secret", "db/pw", 1, "ok")),
    ("read-missing", "GET", "/secrets/db/none", None,
     ("read", "secret", "db/none", None, "not_found")),
    ("cas-conflict", "PUT", "/secrets/db/pw", {"value": "x", "cas": 0},
     ("write", "secret", "db/pw", None, "conflict")),
    ("delete", "DELETE", "/secrets/db/pw", None, ("delete", "secret", "db/pw", 1, "ok")),
    ("destroy", "POST", "/destroy/db/pw", {"versions": [1]},
     ("destroy", "secret", "db/pw", 1, "ok")),
    ("resolve", "GET", "/resolve?ref=kms://hanzo/acme/db/pw", None,
     ("read", "secret", "db/pw", 1, "ok")),
    ("resolve-foreign", "GET", "/resolve?ref=kms://hanzo/other/db/pw", None,
     ("read", "secret", "kms://hanzo/other/db/pw", None, "not_found")),
    ("decrypt", "POST", "/transit/decrypt/enc", {"ciphertext": "{ct}"},
     ("decrypt", "key", "enc", 1, "ok")),
    ("decrypt-bad", "POST", "/transit/decrypt/enc", {"ciphertext": "hz:v1:" + b64(b"0" * 40)},
     ("decrypt", "key", "enc", 1, "decryption_failed")),
    ("sign", "POST", "/transit/sign/sig", {"input": b64("m")}, ("sign", "key", "sig", 1, "ok")),
    ("datakey", "POST", "/transit/datakey/plaintext/enc", None,
     ("datakey", "key", "enc", 1, "ok")),
    ("rotate", "POST", "/transit/keys/enc/rotate", None, ("rotate_key", "key", "enc", 2, "ok")),
    ("key-create", "POST", "/transit/keys/fresh", {"type": "ecdsa-p256"},
     ("create_key", "key", "fresh", 1, "ok")),
]


@pytest.fixture
async def ready(kms: Kms) -> str:
    await kms.ok("PUT", "/secrets/db/pw", json={"value": SECRET})
    await kms.ok("POST", "/transit/keys/enc", json={"type": "aes256-gcm"})
    await kms.ok("POST", "/transit/keys/sig", json={"type": "ed25519"})
    return str((await kms.ok("POST", "/transit/encrypt/enc",
                             json={"plaintext": b64(SECRET)}))["ciphertext"])


@pytest.mark.parametrize(("method", "url", "body", "expected"), [a[1:] for a in ACTIONS],
                         ids=[a[0] for a in ACTIONS])
async def test_each_action_appends_one_row(kms: Kms, ready: str, method: str, url: str,
                                           body: dict[str, Any] | None,
                                           expected: tuple[Any, ...]) -> None:
    before = await rows(kms)
    if body and body.get("ciphertext") == "{ct}":
        body = {"ciphertext": ready}
    actor = kms.as_(user="carol", role="owner")
    r = await actor.call(method, url, json=body)
    after = await rows(kms)
    assert len(after) == len(before) + 1
    row = after[0]
    assert (row["action"], row["kind"], row["target"], row["version"], row["outcome"]) == expected
    assert (row["actor"], row["org"], row["via"]) == ("carol", "acme", "http")
    assert row["request_id"] == r.headers["x-request-id"] and row["time"].endswith("Z")
    assert SECRET not in str(after) and b64(SECRET) not in str(after)


async def test_a_batch_records_whether_its_items_failed(kms: Kms, ready: str) -> None:
    bad = {"ciphertext": "hz:v1:" + b64(b"0" * 40)}
    outcomes = []
    for batch in ([{"ciphertext": ready}] * 2, [bad] * 50, [{"ciphertext": ready}, bad]):
        for action in ("decrypt", "rewrap"):
            await kms.ok("POST", f"/transit/{action}/enc", json={"batch_input": batch})
            row = (await rows(kms))[0]
            outcomes.append((row["action"], row["version"], row["outcome"]))
    assert outcomes == [("decrypt", None, "ok"), ("rewrap", None, "ok"),
                        ("decrypt", None, "decryption_failed"),
                        ("rewrap", None, "decryption_failed"),
                        ("decrypt", None, "partial"), ("rewrap", None, "partial")]


@pytest.mark.parametrize(("method", "url", "body"), [
    ("GET", "/secrets", None), ("GET", "/metadata/db/pw", None), ("GET", "/transit/keys", None),
    ("POST", "/transit/encrypt/enc", {"plaintext": b64("x")}),
    ("PUT", "/secrets/db/pw", {"value": 5}),
], ids=["list", "metadata", "key-list", "encrypt", "rejected-input"])
async def test_names_encrypt_and_rejected_input_are_not_audited(
        kms: Kms, ready: str, method: str, url: str, body: dict[str, Any] | None) -> None:
    before = len(await rows(kms))
    await kms.call(method, url, json=body)
    assert len(await rows(kms)) == before


async def test_pages_newest_first(kms: Kms) -> None:
    for i in range(5):
        await kms.ok("PUT", f"/secrets/p{i}", json={"value": "v"})
    first = await kms.ok("GET", "/audit", params={"perPage": "2"})
    second = await kms.ok("GET", "/audit", params={"perPage": "2", "page": "2"})
    assert first["totalItems"] == 5 and (first["page"], first["perPage"]) == (1, 2)
    assert [r["target"] for r in first["items"] + second["items"]] == ["p4", "p3", "p2", "p1"]
