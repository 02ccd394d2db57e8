"""ZAP RPC end to end over loopback: multiplexing, errors, identity, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest
import structlog

from hanzocloud.errors import (
    CloudError,
    DeadlineExceeded,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ShuttingDown,
    SubsystemUnavailable,
)
from hanzocloud.identity import Identity, current_identity, current_request_id
from hanzocloud.zap import ZapChannel, ZapServer, derive_service_key, parse_addr, service_key

from .helpers import KEY, EchoService, free_port

Served = tuple[ZapServer, EchoService]


async def test_echo_and_every_type(echo_client: Any, kitchen: ModuleType) -> None:
    assert await echo_client.echo("héllo") == "héllo"
    value = kitchen.Everything(
        flag=True,
        i8=-128,
        u64=2**64 - 1,
        text="t",
        data=b"\x00\xff",
        color=kitchen.Color.blue,
        matrix=[[1, 2], []],
        shape=kitchen.ShapeMany([kitchen.ShapeLabel("x")]),
        tree=kitchen.Tree("root", [kitchen.Tree("leaf", [])]),
    )
    assert await echo_client.round_trip(value) == value


async def test_many_calls_in_flight_on_one_connection(
    echo_client: Any, echo_server: Served
) -> None:
    started = time.perf_counter()
    results = await asyncio.gather(*(echo_client.sleep(200) for _ in range(200)))
    elapsed = time.perf_counter() - started
    assert results == [True] * 200
    assert echo_server[1].max_in_flight == 200  # all 200 ran at once, multiplexed
    assert elapsed < 2.0
    texts = await asyncio.gather(*(echo_client.echo(str(i)) for i in range(500)))
    assert texts == [str(i) for i in range(500)]  # replies matched to their request ids


ERRORS = [
    ("not_found", NotFound),
    ("permission_denied", PermissionDenied),
    ("rate_limited", RateLimited),
    ("deadline_exceeded", DeadlineExceeded),
]


@pytest.mark.parametrize(("code", "cls"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_typed_errors_survive_the_wire(echo_client: Any, code: str, cls: type) -> None:
    with pytest.raises(cls) as info:
        await echo_client.fail(code, "it went wrong")
    assert info.value.message == "it went wrong"
    assert info.value.details == {"why": "test"}


async def test_subsystem_unavailable_keeps_its_subsystem(echo_client: Any) -> None:
    with pytest.raises(SubsystemUnavailable) as info:
        await echo_client.fail("subsystem_unavailable", "kms is down")
    assert info.value.subsystem == "kms" and info.value.message == "kms is down"


async def test_unknown_codes_keep_code_and_status(echo_client: Any) -> None:
    with pytest.raises(CloudError) as info:
        await echo_client.fail("teapot", "short and stout")
    assert (info.value.code, info.value.status, info.value.message) == (
        "teapot",
        418,
        "short and stout",
    )


async def test_unexpected_exceptions_do_not_leak(echo_client: Any) -> None:
    with pytest.raises(CloudError) as info:
        await echo_client.fail("boom", "")
    assert info.value.code == "internal" and "secret" not in info.value.message


class Unencodable(EchoService):
    """Echo whose `echo` returns `reply` and whose `fail` raises `error`, as a test sets them."""

    reply: object = None
    error: CloudError = CloudError()

    async def echo(self, text: str) -> Any:
        return self.reply

    async def fail(self, code: str, message: str) -> None:
        raise self.error


@pytest.fixture
async def unencodable(kitchen: ModuleType) -> AsyncIterator[tuple[Unencodable, Any]]:
    impl = Unencodable(kitchen)
    server = ZapServer(key=KEY)
    server.register("echo", kitchen.ECHO_METHODS, impl)
    await server.start("127.0.0.1", 0)
    try:
        async with ZapChannel(f"127.0.0.1:{server.port}", key=KEY, pool_size=1) as channel:
            yield impl, kitchen.EchoRpcClient(channel)
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("reply", "failure"),
    [(object(), "TypeError"), (2**64, "OverflowError")],
    ids=["object", "int_past_64_bits"],
)
async def test_a_reply_that_cannot_be_encoded_is_an_internal_error(
    unencodable: tuple[Unencodable, Any], reply: object, failure: str
) -> None:
    impl, client = unencodable
    impl.reply = reply
    started = time.perf_counter()
    with structlog.testing.capture_logs() as logs, pytest.raises(CloudError) as info:
        await client.echo("x", timeout=5)
    assert time.perf_counter() - started < 1.0  # answered at once, not at the deadline
    assert (info.value.code, info.value.message) == ("internal", "internal error")
    # Logged once, by type only: the result may hold data that must not reach the logs.
    assert logs == [
        {
            "event": "zap.unencodable_reply",
            "method": "echo.echo",
            "error": failure,
            "log_level": "error",
        }
    ]
    assert await client.sleep(1) is True  # the connection still serves


@pytest.mark.parametrize(
    ("details", "failure"),
    [({"n": 2**70}, "OverflowError"), ({1: "x"}, "ValidationError")],
    ids=["int_past_64_bits", "non_text_key"],
)
async def test_error_details_that_cannot_be_sent_are_dropped(
    unencodable: tuple[Unencodable, Any], details: dict[Any, Any], failure: str
) -> None:
    impl, client = unencodable
    impl.error = PermissionDenied("not yours", details=details)
    started = time.perf_counter()
    with structlog.testing.capture_logs() as logs, pytest.raises(PermissionDenied) as info:
        await client.fail("", "", timeout=5)
    assert time.perf_counter() - started < 1.0
    assert (info.value.message, info.value.details) == ("not yours", {})
    assert logs == [
        {
            "event": "zap.unencodable_error",
            "code": "permission_denied",
            "error": failure,
            "log_level": "error",
        }
    ]
    assert await client.sleep(1) is True


async def test_an_error_message_that_cannot_be_sent_is_an_internal_error(
    unencodable: tuple[Unencodable, Any],
) -> None:
    impl, client = unencodable
    impl.error = PermissionDenied("lone surrogate \ud800")
    with pytest.raises(CloudError) as info:
        await client.fail("", "", timeout=5)
    assert (info.value.code, info.value.message) == ("internal", "internal error")
    assert await client.sleep(1) is True


async def test_identity_is_carried(echo_client: Any) -> None:
    who = Identity("acme", "u1", "a@acme.test", ("admin", "billing"), True, "req-42")
    token = current_identity.set(who)
    try:
        got = await echo_client.whoami()
    finally:
        current_identity.reset(token)
    assert (got.org, got.user, got.email, got.roles, got.is_admin, got.request_id) == (
        "acme",
        "u1",
        "a@acme.test",
        ["admin", "billing"],
        True,
        "req-42",
    )
    anonymous = await echo_client.whoami()
    assert (anonymous.org, anonymous.user) == ("", "")


async def test_the_http_request_id_travels_when_the_identity_has_none(echo_client: Any) -> None:
    # the gateway's cached identity has no request id: the request's own one is carried
    token = current_identity.set(Identity("acme", "u1"))
    rid = current_request_id.set("req-from-http")
    try:
        got = await echo_client.whoami()
    finally:
        current_request_id.reset(rid)
        current_identity.reset(token)
    assert (got.org, got.user, got.request_id) == ("acme", "u1", "req-from-http")


async def test_deadline_is_enforced_by_the_server(echo_client: Any, echo_server: Served) -> None:
    started = time.perf_counter()
    with pytest.raises(DeadlineExceeded) as info:
        await echo_client.sleep(5000, timeout=0.2)
    assert time.perf_counter() - started < 1.0
    assert info.value.details["enforced_by"] == "server"
    await asyncio.wait_for(echo_server[1].cancelled.wait(), 1.0)  # the method was stopped


async def test_cancelling_the_caller_cancels_the_server_task(
    echo_client: Any, echo_server: Served
) -> None:
    impl = echo_server[1]
    call = asyncio.create_task(echo_client.sleep(10_000, timeout=30))
    await asyncio.wait_for(impl.started.wait(), 2.0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(impl.cancelled.wait(), 1.0)
    assert await echo_client.echo("still fine") == "still fine"


async def test_unknown_method_is_not_found(echo_server: Served, kitchen: ModuleType) -> None:
    async with ZapChannel(f"127.0.0.1:{echo_server[0].port}", key=KEY) as channel:
        with pytest.raises(NotFound, match="no ZAP method nope.echo"):
            await kitchen.EchoRpcClient(channel, service="nope").echo("x")


async def test_wrong_credential_is_refused(echo_server: Served, kitchen: ModuleType) -> None:
    async with ZapChannel(f"127.0.0.1:{echo_server[0].port}", key=b"wrong") as channel:
        with pytest.raises(SubsystemUnavailable, match="wrong ZAP service credential"):
            await kitchen.EchoRpcClient(channel).echo("x")


async def test_client_refuses_server_without_the_key(kitchen: ModuleType) -> None:
    server = ZapServer(key=b"other key")
    server.register("echo", kitchen.ECHO_METHODS, EchoService(kitchen))
    await server.start("127.0.0.1", 0)
    try:
        async with ZapChannel(f"127.0.0.1:{server.port}", key=KEY) as channel:
            with pytest.raises(SubsystemUnavailable):
                await kitchen.EchoRpcClient(channel).echo("x")
    finally:
        await server.close()


async def test_oversized_frames(echo_server: Served, echo_client: Any, kitchen: ModuleType) -> None:
    addr = f"127.0.0.1:{echo_server[0].port}"
    # The client refuses to send more than its own limit...
    async with ZapChannel(addr, key=KEY, max_frame=1024) as small:
        with pytest.raises(PayloadTooLarge):
            await kitchen.EchoRpcClient(small).echo("x" * 2000)
    # ...and a server that gets more than its limit (1 MiB here) drops that peer only.
    async with ZapChannel(addr, key=KEY, max_frame=4 << 20) as big:
        with pytest.raises(SubsystemUnavailable, match="payload_too_large|exceeds"):
            await kitchen.EchoRpcClient(big).echo("x" * (2 << 20))
    # A reply over the server's limit becomes an error, not a dropped connection.
    with pytest.raises(PayloadTooLarge):
        await echo_client.blob(2 << 20)
    assert await echo_client.echo("ok") == "ok"


async def test_server_close_fails_pending_calls(kitchen: ModuleType) -> None:
    server = ZapServer(key=KEY)
    server.register("echo", kitchen.ECHO_METHODS, EchoService(kitchen))
    await server.start("127.0.0.1", 0)
    async with ZapChannel(f"127.0.0.1:{server.port}", key=KEY) as channel:
        call = asyncio.create_task(kitchen.EchoRpcClient(channel).sleep(10_000, timeout=20))
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        await server.close()
        with pytest.raises(SubsystemUnavailable, match="lost the ZAP connection"):
            await call
        assert time.perf_counter() - started < 1.0


async def test_drain_finishes_running_calls_and_turns_new_ones_away(
        kitchen: ModuleType) -> None:
    """SIGTERM's drain: no new connection, a new call on an open one answered 503
    `shutting_down`, and a call already running finishes and gets its reply."""
    server = ZapServer(key=KEY)
    impl = EchoService(kitchen)
    server.register("echo", kitchen.ECHO_METHODS, impl)
    await server.start("127.0.0.1", 0)
    addr = f"127.0.0.1:{server.port}"
    try:
        async with ZapChannel(addr, key=KEY, pool_size=1) as channel:  # one connection
            client = kitchen.EchoRpcClient(channel)
            running = asyncio.create_task(client.sleep(400, timeout=20))
            await asyncio.wait_for(impl.started.wait(), 2.0)
            drain = asyncio.create_task(server.drain(10))
            await asyncio.sleep(0.05)
            with pytest.raises(ShuttingDown):
                await client.echo("late")
            async with ZapChannel(addr, key=KEY) as fresh:
                with pytest.raises(SubsystemUnavailable):
                    await kitchen.EchoRpcClient(fresh).echo("new connection")
            await drain
            assert await running is True
            assert not impl.cancelled.is_set()
    finally:
        await server.close()


async def test_drain_gives_up_when_its_time_is_up(kitchen: ModuleType) -> None:
    server = ZapServer(key=KEY)
    impl = EchoService(kitchen)
    server.register("echo", kitchen.ECHO_METHODS, impl)
    await server.start("127.0.0.1", 0)
    async with ZapChannel(f"127.0.0.1:{server.port}", key=KEY) as channel:
        call = asyncio.create_task(kitchen.EchoRpcClient(channel).sleep(10_000, timeout=20))
        await asyncio.wait_for(impl.started.wait(), 2.0)
        started = time.perf_counter()
        await server.drain(0.2)
        assert 0.15 < time.perf_counter() - started < 2.0
        await server.close()  # what still runs is cancelled
        with pytest.raises(SubsystemUnavailable):
            await call
        await asyncio.wait_for(impl.cancelled.wait(), 1.0)


async def test_unreachable_address_fails_fast(kitchen: ModuleType) -> None:
    async with ZapChannel(f"127.0.0.1:{free_port()}", key=KEY) as channel:
        client = kitchen.EchoRpcClient(channel)
        for _ in range(2):  # the first dials and fails; the second is inside the backoff
            started = time.perf_counter()
            with pytest.raises(SubsystemUnavailable) as info:
                await client.echo("x")
            assert time.perf_counter() - started < 1.0
            assert info.value.subsystem == "echo"


def test_register_twice_is_an_error(kitchen: ModuleType) -> None:
    server = ZapServer(key=KEY)
    server.register("echo", kitchen.ECHO_METHODS, object())
    with pytest.raises(ValueError, match="already registered"):
        server.register("echo", kitchen.ECHO_METHODS, object())


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:9653", ("127.0.0.1", 9653)),
        ("iam.internal:1", ("iam.internal", 1)),
        ("[::1]:9653", ("::1", 9653)),
        (":9653", ("127.0.0.1", 9653)),
    ],
)
def test_parse_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_addr(addr) == expected


@pytest.mark.parametrize("addr", ["nohost", "host:", "host:http", "host:70000", "host:0"])
def test_parse_addr_rejects(addr: str) -> None:
    with pytest.raises(ValueError, match="bad ZAP address"):
        parse_addr(addr)


def test_service_key() -> None:
    master = bytes(range(32))
    key = derive_service_key(master)
    assert len(key) == 32 and key == derive_service_key(master) and key != master
    assert key != derive_service_key(bytes(32))
    assert service_key(master_key=master, environ={}) == key
    assert service_key(master_key=master, environ={"CLOUD_ZAP_TOKEN": "shared"}) == b"shared"
    with pytest.raises(ValueError, match="CLOUD_ZAP_TOKEN"):
        service_key(master_key=None, environ={})
