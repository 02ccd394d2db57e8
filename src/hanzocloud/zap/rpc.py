"""The ZAP RPC server: authenticates peers, multiplexes requests, enforces deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Mapping
from typing import Any

import msgspec
import structlog

from hanzocloud.errors import (
    CloudError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ShuttingDown,
    Unauthenticated,
)
from hanzocloud.identity import current_identity, current_request_id
from hanzocloud.zap.runtime import MethodSpec
from hanzocloud.zap.wire import (
    DEFAULT_MAX_FRAME,
    MAGIC,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    Challenge,
    ErrorBody,
    FrameTooLarge,
    Hello,
    Kind,
    RequestBody,
    Welcome,
    encode_frame,
    error_body,
    new_nonce,
    proof,
    proof_matches,
    read_frame,
)

log = structlog.get_logger("hanzocloud.zap")
_HANDSHAKE_MAX = 4096  # a hello is ~100 bytes; never buffer more from an unauthenticated peer
_encoder = msgspec.msgpack.Encoder()


class _Refused(Exception):
    """The peer broke the protocol; tell it why (as `error`) and hang up."""

    def __init__(self, error: CloudError) -> None:
        super().__init__(error.message)
        self.error = error


class _Peer:
    """One authenticated connection and the requests running for it."""

    def __init__(self, writer: asyncio.StreamWriter, max_in_flight: int) -> None:
        self.writer = writer
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.slots = asyncio.Semaphore(max_in_flight)

    async def send(self, request_id: int, kind: Kind, body: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(encode_frame(request_id, kind, body))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()


def _error_reply(error: CloudError) -> bytes:
    """`error` as a reply body; details the wire cannot carry are dropped so the code arrives."""
    try:
        return _encoder.encode(error_body(error))
    except Exception as exc:  # details with huge ints or non-text keys; never log them
        log.error("zap.unencodable_error", code=error.code, error=type(exc).__name__)
    try:
        return _encoder.encode(ErrorBody(error.code, error.message, {}, error.status))
    except Exception:  # the message itself cannot be encoded (a lone surrogate, say)
        return _encoder.encode(error_body(CloudError("internal error")))


def _finished(peer: _Peer, request_id: int, task: asyncio.Task[None]) -> None:
    if peer.tasks.get(request_id) is task:
        del peer.tasks[request_id]
    peer.slots.release()


class ZapServer:
    """Serves registered services over ZAP; `start(host, port)`, then `close()`."""

    def __init__(
        self,
        *,
        key: bytes,
        max_frame: int = DEFAULT_MAX_FRAME,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 5.0,
        max_in_flight: int = 1024,
    ) -> None:
        if not key:
            raise ValueError("ZapServer needs a non-empty service key")
        self._key = key
        self._max_frame = max_frame
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._max_in_flight = max_in_flight
        self._services: dict[str, tuple[Mapping[str, MethodSpec], Any]] = {}
        self._decoders: dict[type[msgspec.Struct], msgspec.msgpack.Decoder[Any]] = {}
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], _Peer] = {}  # each one's task and peer
        self._draining = False

    def register(self, service: str, methods: Mapping[str, MethodSpec], impl: object) -> None:
        """Serve `impl` as `service` using a generated `<NAME>_METHODS` table."""
        if service in self._services:
            raise ValueError(f"ZAP service {service!r} is already registered")
        self._services[service] = (methods, impl)
        for spec in methods.values():
            self._decoders.setdefault(spec.params, msgspec.msgpack.Decoder(spec.params))

    @property
    def port(self) -> int:
        """The bound TCP port (useful after `start(host, 0)`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("ZapServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str = "0.0.0.0", port: int = 9653) -> None:
        """Listen on host:port (port 0 picks a free one; see `port`)."""
        self._server = await asyncio.start_server(
            self._serve,
            host or None,
            port,
            ssl=self._tls,
            # A peer that never finishes TLS is dropped as soon as one that never says hello.
            ssl_handshake_timeout=self._handshake_timeout if self._tls else None,
            limit=2**16,
        )

    def stop_accepting(self) -> None:
        """Stop listening; a request arriving on an open connection from now on is answered
        503 `shutting_down` (the caller retries elsewhere). Running requests go on."""
        self._draining = True
        if self._server is not None:
            self._server.close()

    async def drain(self, timeout: float) -> None:
        """`stop_accepting`, then wait up to `timeout` seconds for the running requests."""
        self.stop_accepting()
        running = {task for peer in self._connections.values() for task in peer.tasks.values()}
        if running and timeout > 0:
            await asyncio.wait(running, timeout=timeout)

    async def close(self) -> None:
        """Stop listening, cancel every running request, close every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ZapServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = self._connections[task] = _Peer(writer, self._max_in_flight)
        address = writer.get_extra_info("peername")
        try:
            await self._handshake(reader, writer)
            await self._read_requests(reader, peer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the peer went away
        except FrameTooLarge as exc:
            log.warning("zap.frame_too_large", peer=str(address), size=exc.length)
            await self._hang_up(writer, PayloadTooLarge(str(exc)))
        except _Refused as exc:
            log.warning("zap.peer_refused", peer=str(address), reason=exc.error.message)
            await self._hang_up(writer, exc.error)
        except TimeoutError:
            log.warning("zap.handshake_timeout", peer=str(address))
            await self._hang_up(writer, Unauthenticated("no ZAP handshake in time"))
        except asyncio.CancelledError:
            # close() cancels us; ending normally keeps asyncio's stream callback quiet.
            pass
        finally:
            for running in peer.tasks.values():
                running.cancel()
            writer.close()
            self._connections.pop(task, None)

    async def _hang_up(self, writer: asyncio.StreamWriter, error: CloudError) -> None:
        writer.write(encode_frame(0, Kind.ERROR, _error_reply(error)))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), 1.0)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonce = new_nonce()
        writer.write(
            encode_frame(
                0, Kind.HANDSHAKE, _encoder.encode(Challenge(MAGIC, PROTOCOL_VERSION, nonce))
            )
        )
        async with asyncio.timeout(self._handshake_timeout):
            _, kind, body = await read_frame(reader, _HANDSHAKE_MAX)
        if kind != Kind.HANDSHAKE:
            raise _Refused(Unauthenticated("the first ZAP frame must be a handshake"))
        try:
            hello = msgspec.msgpack.decode(body, type=Hello)
        except (msgspec.DecodeError, RecursionError):
            raise _Refused(Unauthenticated("malformed ZAP handshake")) from None
        if hello.magic != MAGIC:
            raise _Refused(Unauthenticated("not a ZAP peer (bad magic)"))
        if hello.version != PROTOCOL_VERSION:
            raise _Refused(
                Unauthenticated(
                    f"unsupported ZAP protocol version {hello.version}",
                    details={"supported": PROTOCOL_VERSION},
                )
            )
        if len(hello.nonce) != NONCE_SIZE:
            raise _Refused(Unauthenticated(f"the client nonce must be {NONCE_SIZE} bytes"))
        expected = proof(self._key, b"client", nonce, hello.nonce)
        if not proof_matches(expected, hello.proof):
            raise _Refused(Unauthenticated("wrong ZAP service credential"))
        welcome = Welcome(MAGIC, PROTOCOL_VERSION, proof(self._key, b"server", nonce, hello.nonce))
        writer.write(encode_frame(0, Kind.HANDSHAKE, _encoder.encode(welcome)))
        await writer.drain()

    async def _read_requests(self, reader: asyncio.StreamReader, peer: _Peer) -> None:
        while True:
            request_id, kind, body = await read_frame(reader, self._max_frame)
            if kind == Kind.CANCEL:
                running = peer.tasks.get(request_id)
                if running is not None:
                    running.cancel()
                continue
            if kind != Kind.REQUEST:
                raise _Refused(InvalidArgument(f"unexpected ZAP frame kind {kind}"))
            if request_id in peer.tasks:
                error = InvalidArgument(f"request id {request_id} is already in flight")
                await peer.send(request_id, Kind.ERROR, _error_reply(error))
                continue
            if self._draining:
                leaving = ShuttingDown("this process is shutting down; retry", retry_after=1)
                await peer.send(request_id, Kind.ERROR, _error_reply(leaving))
                continue
            # Waiting here stops reading, so a flooding peer is slowed by TCP itself.
            await peer.slots.acquire()
            running = asyncio.create_task(self._handle(peer, request_id, body))
            peer.tasks[request_id] = running
            running.add_done_callback(functools.partial(_finished, peer, request_id))

    async def _handle(self, peer: _Peer, request_id: int, body: bytes) -> None:
        try:
            kind, reply = Kind.RESPONSE, await self._dispatch(body)
        except CloudError as exc:
            kind, reply = Kind.ERROR, _error_reply(exc)
        if len(reply) > self._max_frame:
            too_big = PayloadTooLarge(f"reply of {len(reply)} bytes exceeds the frame limit")
            kind, reply = Kind.ERROR, _error_reply(too_big)
        await peer.send(request_id, kind, reply)

    async def _dispatch(self, body: bytes) -> bytes:
        try:
            request = msgspec.msgpack.decode(body, type=RequestBody)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise InvalidArgument(f"malformed ZAP request: {exc}") from None
        where = f"{request.service}.{request.method}"
        entry = self._services.get(request.service)
        spec = entry[0].get(request.method) if entry else None
        if entry is None or spec is None:
            raise NotFound(f"no ZAP method {where} here", details={"method": where})
        try:
            params = self._decoders[spec.params].decode(request.params)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise InvalidArgument(f"bad params for {where}: {exc}") from None
        identity = request.identity.to_identity()
        current_identity.set(identity)  # this task runs in its own context copy
        current_request_id.set(identity.request_id)
        seconds = request.timeout_ms / 1000 if request.timeout_ms > 0 else None
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                result = await spec.invoke(entry[1], params)
        except TimeoutError:
            if not deadline.expired():
                raise CloudError("internal error") from None
            raise DeadlineExceeded(
                f"{where} did not finish within {request.timeout_ms} ms",
                details={"enforced_by": "server", "timeout_ms": request.timeout_ms},
            ) from None
        except CloudError:
            raise
        except Exception:
            log.exception("zap.method_failed", method=where, request_id=identity.request_id)
            raise CloudError("internal error") from None
        if not isinstance(result, spec.result):
            log.error("zap.bad_result", method=where, got=type(result).__name__)
            raise CloudError("internal error")
        try:
            return _encoder.encode(result)
        except Exception as exc:  # e.g. an object() or an int past 64 bits in a field
            # Only the type: the result may hold tenant data, and so may the exception's text.
            log.error("zap.unencodable_reply", method=where, error=type(exc).__name__)
            raise CloudError("internal error") from None
