"""Org isolation, one case per route: org B (an owner of its own org) cannot read, list,
change, decrypt with, sign with, or even detect org A's secrets and keys.

"Cannot detect" is checked by comparison: B's answer for A's real name must equal B's answer
for a name that exists nowhere (after swapping the two names), status, code and message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from cloud import Cloud

from .support import Kms, b64

A_PATH, GHOST_PATH = "team/db-password", "team/nothing-here"
A_KEY, GHOST_KEY = "payments", "nokey"
A_SIGNER, GHOST_SIGNER = "release", "nosigner"
VALUE = "a-value-only-org-a-knows"
_VOLATILE = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+Z")


@dataclass
class OrgA:
    ciphertext: str
    signature: str


@pytest.fixture
async def org_a(kms: Kms) -> OrgA:
    a = kms.as_(org="acme", user="alice", role="owner")
    await a.ok("PUT", f"/secrets/{A_PATH}", json={"value": VALUE})
    await a.ok("POST", f"/transit/keys/{A_KEY}", json={"type": "aes256-gcm"})
    await a.ok("POST", f"/transit/keys/{A_SIGNER}", json={"type": "ed25519"})
    ct = (await a.ok("POST", f"/transit/encrypt/{A_KEY}", json={"plaintext": b64(VALUE)}))
    sig = (await a.ok("POST", f"/transit/sign/{A_SIGNER}", json={"input": b64(VALUE)}))
    return OrgA(ct["ciphertext"], sig["signature"])


# (id, method, url template, body template); {p} {k} {s} are a path, key and signer name.
PROBES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("read", "GET", "/secrets/{p}", None),
    ("read-version", "GET", "/secrets/{p}?version=1", None),
    ("list", "GET", "/secrets?prefix={p}", None),
    ("metadata", "GET", "/metadata/{p}", None),
    ("cas-write", "PUT", "/secrets/{p}", {"value": "x", "cas": 1}),
    ("soft-delete", "DELETE", "/secrets/{p}", None),
    ("delete-versions", "POST", "/delete/{p}", {"versions": [1]}),
    ("undelete", "POST", "/undelete/{p}", {"versions": [1]}),
    ("destroy", "POST", "/destroy/{p}", {"versions": [1]}),
    ("purge", "DELETE", "/metadata/{p}", None),
    ("resolve-a-ref", "GET", "/resolve?ref=kms://hanzo/acme/{p}", None),
    ("resolve-own-ref", "GET", "/resolve?ref=kms://hanzo/bravo/{p}", None),
    ("key-list", "GET", "/transit/keys", None),
    ("key-describe", "GET", "/transit/keys/{k}", None),
    ("key-rotate", "POST", "/transit/keys/{k}/rotate", None),
    ("key-config", "PUT", "/transit/keys/{k}/config", {"deletion_allowed": True}),
    ("key-delete", "DELETE", "/transit/keys/{k}", None),
    ("encrypt", "POST", "/transit/encrypt/{k}", {"plaintext": b64("x")}),
    ("decrypt", "POST", "/transit/decrypt/{k}", {"ciphertext": "{ct}"}),
    ("rewrap", "POST", "/transit/rewrap/{k}", {"ciphertext": "{ct}"}),
    ("datakey-plaintext", "POST", "/transit/datakey/plaintext/{k}", None),
    ("datakey-wrapped", "POST", "/transit/datakey/wrapped/{k}", None),
    ("sign", "POST", "/transit/sign/{s}", {"input": b64("x")}),
    ("verify", "POST", "/transit/verify/{s}", {"input": b64(VALUE), "signature": "{sig}"}),
]


def _fill(template: Any, names: dict[str, str]) -> Any:
    if isinstance(template, str):
        for key, value in names.items():
            template = template.replace("{" + key + "}", value)
        return template
    if isinstance(template, dict):
        return {k: _fill(v, names) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, names) for v in template]
    return template


def _normalise(body: Any, real: dict[str, str], ghost: dict[str, str]) -> str:
    text = str(body)
    for key in ("p", "k", "s"):
        text = text.replace(real[key], "<" + key + ">").replace(ghost[key], "<" + key + ">")
    return _VOLATILE.sub("<time>", re.sub(r"'request_id': '[^']*'", "", text))


@pytest.mark.parametrize(("method", "url", "body"), [p[1:] for p in PROBES],
                         ids=[p[0] for p in PROBES])
async def test_org_b_cannot_reach_or_detect_org_a(kms: Kms, org_a: OrgA, method: str, url: str,
                                                  body: dict[str, Any] | None) -> None:
    b = kms.as_(org="bravo", user="bob", role="owner")
    real = {"p": A_PATH, "k": A_KEY, "s": A_SIGNER, "ct": org_a.ciphertext,
            "sig": org_a.signature}
    ghost = {"p": GHOST_PATH, "k": GHOST_KEY, "s": GHOST_SIGNER, "ct": org_a.ciphertext,
             "sig": org_a.signature}
    on_real = await b.call(method, _fill(url, real), json=_fill(body, real))
    on_ghost = await b.call(method, _fill(url, ghost), json=_fill(body, ghost))
    assert on_real.status_code == on_ghost.status_code
    assert _normalise(on_real.json(), real, ghost) == _normalise(on_ghost.json(), real, ghost)
    assert on_real.status_code in (200, 404, 409), on_real.text
    if on_real.status_code == 200:  # only B's own, empty namespace is visible
        assert on_real.json()["items"] == []
    assert VALUE not in on_real.text and b64(VALUE) not in on_real.text
    await assert_org_a_untouched(kms, org_a)


async def assert_org_a_untouched(kms: Kms, org_a: OrgA) -> None:
    a = kms.as_(org="acme", user="alice", role="owner")
    assert (await a.ok("GET", f"/secrets/{A_PATH}"))["value"] == VALUE
    assert (await a.ok("GET", f"/metadata/{A_PATH}"))["current_version"] == 1
    key = await a.ok("GET", f"/transit/keys/{A_KEY}")
    assert (key["latest_version"], key["deletion_allowed"]) == (1, False)
    plain = await a.ok("POST", f"/transit/decrypt/{A_KEY}", json={"ciphertext": org_a.ciphertext})
    assert plain["plaintext"] == b64(VALUE)


async def test_org_b_writes_land_in_its_own_namespace(kms: Kms, org_a: OrgA) -> None:
    b = kms.as_(org="bravo", user="bob", role="owner")
    # Same names as A: created fresh for B (no 409 that would reveal A's), at version 1.
    assert (await b.ok("PUT", f"/secrets/{A_PATH}", json={"value": "b"}))["version"] == 1
    meta = await b.ok("PUT", f"/metadata/{A_PATH}", json={"max_versions": 1})
    assert meta["current_version"] == 1
    r = await b.call("POST", f"/transit/keys/{A_KEY}", json={"type": "aes256-gcm"})
    assert r.status_code == 201
    # B's key of the same name is different material: A's ciphertext does not open with it.
    r = await b.call("POST", f"/transit/decrypt/{A_KEY}", json={"ciphertext": org_a.ciphertext})
    assert r.status_code == 400 and r.json()["error"]["code"] == "decryption_failed"
    await assert_org_a_untouched(kms, org_a)


async def test_audit_trail_is_per_org(kms: Kms, org_a: OrgA, cloud: Cloud) -> None:
    b = kms.as_(org="bravo", user="bob", role="owner")
    await b.call("GET", f"/secrets/{A_PATH}")
    rows = (await b.ok("GET", "/audit"))["items"]
    assert rows and {(r["org"], r["actor"]) for r in rows} == {("bravo", "bob")}
    assert all(r["outcome"] == "not_found" for r in rows)
