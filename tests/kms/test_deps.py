"""The `kms` Deps client, in-process and over ZAP: same calls, same answers, same tenancy.

The tenant is the org of the identity the caller runs under; a reference to another org,
or to another deployment, is answered exactly like a missing secret.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from cloud import Cloud

from hanzocloud.errors import CloudError, InvalidArgument, NotFound, Unauthenticated
from hanzocloud.identity import Identity, current_identity
from hanzocloud.zap import ZapChannel, ZapServer
from hanzocloud.zap.gen.kms import KMS_METHODS, KmsClient, KmsRpcClient

from .support import Kms

KEY = b"kms-test-zap-key"


@contextlib.contextmanager
def acting_as(org: str, user: str = "billing-svc") -> Iterator[None]:
    token = current_identity.set(Identity(org=org, user=user, request_id=f"req-{org}"))
    try:
        yield
    finally:
        current_identity.reset(token)


@pytest.fixture(params=["in-process", "zap"])
async def client(request: pytest.FixtureRequest, cloud: Cloud) -> AsyncIterator[KmsClient]:
    local: Any = cloud.host.deps.kms
    assert local.mode == "local"
    if request.param == "in-process":
        yield local
        return
    server = ZapServer(key=KEY)
    server.register("kms", KMS_METHODS, local.target)
    await server.start("127.0.0.1", 0)
    channel = ZapChannel(f"127.0.0.1:{server.port}", key=KEY)
    try:
        yield KmsRpcClient(channel)
    finally:
        await channel.close()
        await server.close()


@pytest.fixture
async def keys(kms: Kms) -> None:
    await kms.ok("POST", "/transit/keys/enc", json={"type": "aes256-gcm"})
    await kms.ok("POST", "/transit/keys/sig", json={"type": "ml-dsa-65"})


async def test_secret_round_trip(client: KmsClient, kms: Kms) -> None:
    ref = "kms://hanzo/acme/billing/stripe-key"
    with acting_as("acme"):
        assert await client.put_secret(ref, "sk_live_1") == 1
        assert await client.put_secret(ref, "sk_live_2") == 2
        assert await client.get_secret(ref) == "sk_live_2"
    # The same secret over HTTP, and the audit trail says who did it and how.
    assert (await kms.ok("GET", "/secrets/billing/stripe-key"))["value"] == "sk_live_2"
    rows = (await kms.ok("GET", "/audit"))["items"]
    deps_rows = [r for r in rows if r["via"] == "deps"]
    assert [(r["action"], r["actor"], r["target"]) for r in reversed(deps_rows)] == [
        ("write", "billing-svc", "billing/stripe-key"),
        ("write", "billing-svc", "billing/stripe-key"),
        ("read", "billing-svc", "billing/stripe-key")]
    assert {r["request_id"] for r in deps_rows} == {"req-acme"}


async def test_transit_round_trip(client: KmsClient, keys: None) -> None:
    with acting_as("acme"):
        ciphertext = await client.encrypt("enc", b"\x00binary\xff")
        assert ciphertext.startswith("hz:v1:")
        assert await client.decrypt("enc", ciphertext) == b"\x00binary\xff"
        signature = await client.sign("sig", b"message")
        assert await client.verify("sig", b"message", signature) is True
        assert await client.verify("sig", b"other", signature) is False


async def _error(call: Any) -> CloudError:
    with pytest.raises(CloudError) as info:
        await call
    return info.value


async def test_other_orgs_reference_is_indistinguishable_from_absent(client: KmsClient) -> None:
    with acting_as("acme"):
        await client.put_secret("kms://hanzo/acme/db", "acme-only")
    with acting_as("bravo"):
        foreign = await _error(client.get_secret("kms://hanzo/acme/db"))
        absent = await _error(client.get_secret("kms://hanzo/acme/nothing"))
        write = await _error(client.put_secret("kms://hanzo/acme/db", "overwrite"))
        other_deployment = await _error(client.get_secret("kms://osage/bravo/db"))
    for error in (foreign, absent, write, other_deployment):
        assert isinstance(error, NotFound) and error.status == 404
    assert foreign.message.replace("/db", "/X") == absent.message.replace("/nothing", "/X")
    with acting_as("acme"):
        assert await client.get_secret("kms://hanzo/acme/db") == "acme-only"


async def test_other_orgs_keys_are_not_found(client: KmsClient, keys: None) -> None:
    with acting_as("acme"):
        ciphertext = await client.encrypt("enc", b"x")
    with acting_as("bravo"):
        for call in (client.encrypt("enc", b"x"), client.decrypt("enc", ciphertext),
                     client.sign("sig", b"x")):
            error = await _error(call)
            assert isinstance(error, NotFound)
            assert error.message == "no transit key '" + error.details["name"] + "'"


@pytest.mark.parametrize(("ref", "expected"), [
    ("not-a-ref", InvalidArgument),
    ("kms://hanzo/acme", InvalidArgument),
    ("kms://hanzo/acme/a//b", InvalidArgument),
    ("kms://hanzo/acme/never-written", NotFound),
], ids=["no-scheme", "no-purpose", "bad-path", "absent"])
async def test_bad_and_absent_references(client: KmsClient, ref: str,
                                         expected: type[CloudError]) -> None:
    with acting_as("acme"):
        error = await _error(client.get_secret(ref))
    assert type(error) is expected


async def test_a_value_that_is_not_unicode_text_is_400(cloud: Cloud) -> None:
    local: Any = cloud.host.deps.kms  # only in process: no wire can carry a lone surrogate
    with acting_as("acme"):
        error = await _error(local.put_secret("kms://hanzo/acme/x/y", "a\ud800b"))
    assert isinstance(error, InvalidArgument) and "Unicode" in error.message


async def test_calls_need_an_identity(client: KmsClient) -> None:
    error = await _error(client.get_secret("kms://hanzo/acme/x"))
    assert isinstance(error, Unauthenticated) and error.status == 401


async def test_malformed_ciphertext_and_oversized_input(client: KmsClient, keys: None) -> None:
    with acting_as("acme"):
        assert (await _error(client.decrypt("enc", "hz:v1:%%%"))).status == 400
        assert (await _error(client.encrypt("enc", b"x" * (1024 * 1024 + 1)))).status == 413
        assert (await _error(client.put_secret("kms://hanzo/acme/big",
                                               "x" * (1024 * 1024 + 1)))).status == 413
        assert (await _error(client.get_secret("kms://hanzo/acme/big"))).status == 404
