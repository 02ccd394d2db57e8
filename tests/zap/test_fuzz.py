"""Garbage thrown at the ZAP listener never crashes it; a good client is served afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import random
from types import ModuleType
from typing import Any

import msgspec
import pytest

from hanzocloud.zap import ZapServer
from hanzocloud.zap.wire import (
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    Challenge,
    ErrorBody,
    Hello,
    Kind,
    encode_frame,
    proof,
)

from .helpers import KEY

Served = tuple[ZapServer, Any]


def hello(
    challenge: bytes, *, key: bytes = KEY, magic: bytes = MAGIC, version: int = PROTOCOL_VERSION
) -> bytes:
    nonce = b"n" * 32
    server_nonce = msgspec.msgpack.decode(challenge, type=Challenge).nonce
    message = Hello(magic, version, nonce, proof(key, b"client", server_nonce, nonce))
    return encode_frame(0, Kind.HANDSHAKE, msgspec.msgpack.encode(message))


async def read_challenge(reader: asyncio.StreamReader) -> bytes:
    length, _, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
    assert kind == Kind.HANDSHAKE
    return await reader.readexactly(length)


async def drain_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it hangs up (it must hang up within 3 s)."""
    return await asyncio.wait_for(reader.read(-1), 3.0)


def closing_error(data: bytes) -> ErrorBody:
    length, request_id, kind = HEADER.unpack(data[: HEADER.size])
    assert (request_id, kind) == (0, Kind.ERROR)
    return msgspec.msgpack.decode(data[HEADER.size : HEADER.size + length], type=ErrorBody)


BAD_HANDSHAKES = [
    ("wrong-key", lambda c: hello(c, key=b"nope"), "wrong ZAP service credential"),
    ("bad-magic", lambda c: hello(c, magic=b"HTTP"), "bad magic"),
    ("bad-version", lambda c: hello(c, version=99), "unsupported ZAP protocol version"),
    ("not-msgpack", lambda c: encode_frame(0, Kind.HANDSHAKE, b"\xc1\xc1"), "malformed"),
    ("request-first", lambda c: encode_frame(1, Kind.REQUEST, b"\x90"), "must be a handshake"),
    ("huge-handshake", lambda c: HEADER.pack(1 << 20, 0, 0), "exceeds"),
]


@pytest.mark.parametrize(
    ("make", "reason"), [b[1:] for b in BAD_HANDSHAKES], ids=[b[0] for b in BAD_HANDSHAKES]
)
async def test_bad_handshakes_are_refused(
    echo_server: Served, echo_client: Any, make: Any, reason: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server[0].port)
    writer.write(make(await read_challenge(reader)))
    error = closing_error(await drain_until_closed(reader))
    assert reason in error.message
    writer.close()
    assert await echo_client.echo("ok") == "ok"


async def test_oversized_request_disconnects_only_that_peer(
    echo_server: Served, echo_client: Any
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server[0].port)
    writer.write(hello(await read_challenge(reader)))
    length, _, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
    assert kind == Kind.HANDSHAKE
    await reader.readexactly(length)  # the welcome: we are in
    writer.write(HEADER.pack(0xFFFFFFFF, 7, Kind.REQUEST))
    assert closing_error(await drain_until_closed(reader)).code == "payload_too_large"
    writer.close()
    assert await echo_client.echo("ok") == "ok"


async def test_silent_peer_is_dropped_after_the_handshake_timeout(kitchen: ModuleType) -> None:
    server = ZapServer(key=KEY, handshake_timeout=0.2)
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await read_challenge(reader)
        error = closing_error(await drain_until_closed(reader))  # we never say hello
        assert error.code == "unauthenticated" and "in time" in error.message
        writer.close()
    finally:
        await server.close()


def garbage(rng: random.Random, challenge: bytes) -> bytes:
    """One random hostile input: noise, bad headers, truncated or mangled frames."""
    choice = rng.randrange(7)
    noise = rng.randbytes(rng.randrange(0, 64))
    if choice == 0:
        return noise
    if choice == 1:  # a header promising more than is sent
        return HEADER.pack(rng.randrange(1, 4096), 0, 0) + noise
    if choice == 2:  # a truncated header
        return HEADER.pack(rng.randrange(1 << 32), rng.randrange(1 << 32), 0)[: rng.randrange(12)]
    if choice == 3:  # an absurd length prefix
        return HEADER.pack(rng.randrange(1 << 24, 1 << 32), 0, rng.randrange(8))
    good = hello(challenge)
    if choice == 4:  # a valid hello with flipped bytes
        mangled = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            mangled[rng.randrange(len(mangled))] ^= 1 << rng.randrange(8)
        return bytes(mangled)
    if choice == 5:  # authenticated, then a garbage request body and a random kind
        return (
            good
            + encode_frame(rng.randrange(1, 9), Kind.REQUEST, noise)
            + encode_frame(rng.randrange(9), rng.randrange(16), noise)
        )
    return good + noise  # authenticated, then noise


async def test_fuzzed_input_never_hurts_the_listener(
    echo_server: Served, echo_client: Any, kitchen: ModuleType
) -> None:
    rng = random.Random(0x2A9)
    port = echo_server[0].port

    async def one(case: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            payload = garbage(rng, await read_challenge(reader))
            cuts = sorted(rng.sample(range(len(payload) + 1), min(2, len(payload) + 1)))
            for start, end in zip([0, *cuts], [*cuts, len(payload)], strict=True):
                writer.write(payload[start:end])  # in pieces, to exercise partial reads
                await writer.drain()
            if case % 2:
                writer.write_eof()
            # Still open after 0.3 s means the server waits for the rest of a frame: fine.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(-1), 0.3)
        except ConnectionError:
            pass  # the server hung up on us mid-write: fine
        finally:
            writer.close()

    for batch in range(6):
        await asyncio.gather(*(one(batch * 40 + i) for i in range(40)))
        assert await echo_client.echo(f"batch {batch}") == f"batch {batch}"
    assert await echo_client.round_trip(kitchen.Everything(text="after fuzz")) == (
        kitchen.Everything(text="after fuzz")
    )
