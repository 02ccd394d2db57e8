"""The ZAP RPC client: pooled, multiplexed connections with deadlines and reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
from typing import Any, TypeVar

import msgspec

from hanzocloud.errors import CloudError, DeadlineExceeded, PayloadTooLarge, SubsystemUnavailable
from hanzocloud.identity import current_identity
from hanzocloud.zap.wire import (
    DEFAULT_MAX_FRAME,
    MAGIC,
    PROTOCOL_VERSION,
    Challenge,
    ErrorBody,
    FrameTooLarge,
    Hello,
    IdentityBody,
    Kind,
    RequestBody,
    Welcome,
    encode_frame,
    error_from_body,
    new_nonce,
    proof,
    proof_matches,
    read_frame,
)

R = TypeVar("R", bound=msgspec.Struct)
# How long past its own deadline the client waits, so the server's DeadlineExceeded wins.
DEADLINE_GRACE = 0.1
_encoder = msgspec.msgpack.Encoder()


@functools.lru_cache(maxsize=1024)
def _decoder(kind: type[Any]) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(kind)


def parse_addr(addr: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` -> (host, port); raises ValueError otherwise."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad ZAP address {addr!r}: expected host:port, e.g. 127.0.0.1:9653")
    return (host.strip("[]") or default_host), int(port)


class _Link:
    """One authenticated connection and the calls waiting on it, by request id."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, addr: str,
        max_frame: int,
    ) -> None:
        self.writer = writer
        self.addr = addr
        self.pending: dict[int, tuple[asyncio.Future[tuple[int, bytes]], str]] = {}
        self.closed = False
        self._last_id = 0
        self._max_frame = max_frame
        self._reason = "the connection was closed"
        self._reader = asyncio.create_task(self._read(reader))

    def start(self, service: str, body: bytes) -> tuple[int, asyncio.Future[tuple[int, bytes]]]:
        """Send one request; the future gets (kind, body) of its reply."""
        if self.closed:
            message = f"lost the ZAP connection to {self.addr}: {self._reason}"
            raise SubsystemUnavailable(service, message, details={"addr": self.addr})
        request_id = self._last_id
        while True:
            request_id = request_id % 0xFFFFFFFF + 1  # 0 is reserved for the connection
            if request_id not in self.pending:
                break
        self._last_id = request_id
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = (future, service)
        self.writer.write(encode_frame(request_id, Kind.REQUEST, body))
        return request_id, future

    def cancel(self, request_id: int) -> None:
        """Tell the server to stop working on `request_id` (best effort, no reply)."""
        if not self.closed and not self.writer.is_closing():
            self.writer.write(encode_frame(request_id, Kind.CANCEL, b""))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, kind, body = await read_frame(reader, self._max_frame)
                if request_id == 0 and kind == Kind.ERROR:
                    self._reason = "the server closed it: " + _decode_error(body).message
                    continue
                if kind not in (Kind.RESPONSE, Kind.ERROR):
                    self._reason = f"the server sent an unexpected frame kind {kind}"
                    break
                waiting = self.pending.get(request_id)
                if waiting is not None and not waiting[0].done():
                    waiting[0].set_result((kind, body))
        except FrameTooLarge as exc:
            self._reason = f"the server sent a {exc.length}-byte frame, over the limit"
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Close and fail every waiting call with SubsystemUnavailable."""
        if self.closed:
            return
        self.closed = True
        self.writer.close()
        if self._reader is not asyncio.current_task():
            self._reader.cancel()
        for future, service in self.pending.values():
            if not future.done():
                message = f"lost the ZAP connection to {self.addr}: {self._reason}"
                future.set_exception(
                    SubsystemUnavailable(service, message, details={"addr": self.addr})
                )


def _decode_error(body: bytes) -> CloudError:
    try:
        return error_from_body(msgspec.msgpack.decode(body, type=ErrorBody))
    except (msgspec.DecodeError, RecursionError):
        return CloudError("malformed ZAP error reply")


class _Slot:
    """One pooled connection: its link, or how long to wait before dialling again."""

    def __init__(self) -> None:
        self.link: _Link | None = None
        self.dialing: asyncio.Task[_Link] | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""


class ZapChannel:
    """Calls services at one ZAP address; generated `<Name>RpcClient`s wrap it."""

    def __init__(
        self,
        addr: str,
        *,
        key: bytes,
        pool_size: int = 2,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = 5.0,
        default_timeout: float = 30.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
    ) -> None:
        if not key:
            raise ValueError("ZapChannel needs a non-empty service key")
        self.addr = addr
        self._host, self._port = parse_addr(addr)
        self._key = key
        self._tls = tls
        self._server_hostname = server_hostname or (self._host if tls else None)
        self._connect_timeout = connect_timeout
        self._default_timeout = default_timeout
        self._max_frame = max_frame
        self._backoff = (backoff_initial, backoff_max)
        self._slots = [_Slot() for _ in range(max(1, pool_size))]
        self._turn = 0
        self._closed = False

    async def call(
        self,
        service: str,
        method: str,
        params: msgspec.Struct,
        result: type[R],
        *,
        timeout: float | None = None,
    ) -> R:
        """Call `service.method` with the current identity; raises the remote CloudError."""
        loop = asyncio.get_running_loop()
        seconds = self._default_timeout if timeout is None else timeout
        deadline = loop.time() + seconds
        where = f"{service}.{method}"
        link = await self._link(service, deadline)
        left_ms = int((deadline - loop.time()) * 1000)
        if left_ms <= 0:
            raise DeadlineExceeded(f"{where}: deadline passed before the call was sent")
        identity = IdentityBody.of(current_identity.get())
        raw = msgspec.Raw(_encoder.encode(params))
        body = _encoder.encode(RequestBody(service, method, left_ms, identity, raw))
        if len(body) > self._max_frame:
            raise PayloadTooLarge(f"{where}: request of {len(body)} bytes exceeds the frame limit")
        request_id, future = link.start(service, body)
        try:
            async with asyncio.timeout_at(deadline + DEADLINE_GRACE):
                kind, reply = await future
        except TimeoutError:
            link.cancel(request_id)
            raise DeadlineExceeded(
                f"{where}: no reply within {seconds:g} s", details={"enforced_by": "client"}
            ) from None
        except asyncio.CancelledError:
            link.cancel(request_id)
            raise
        finally:
            link.pending.pop(request_id, None)
        if kind == Kind.ERROR:
            raise _decode_error(reply)
        try:
            decoded: R = _decoder(result).decode(reply)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise CloudError(f"{where}: malformed reply: {exc}") from None
        return decoded

    async def _link(self, service: str, deadline: float) -> _Link:
        if self._closed:
            raise SubsystemUnavailable(service, f"the ZAP channel to {self.addr} is closed")
        slot = self._slots[self._turn % len(self._slots)]
        self._turn += 1
        if slot.link is not None and not slot.link.closed:
            return slot.link
        loop = asyncio.get_running_loop()
        if slot.dialing is None:
            if loop.time() < slot.retry_at:
                raise SubsystemUnavailable(
                    service,
                    f"{self.addr} is unreachable ({slot.last_error}); "
                    f"retrying in {slot.retry_at - loop.time():.2f} s",
                    details={"addr": self.addr},
                )
            slot.dialing = asyncio.create_task(self._dial(slot))
            # Every waiter may have given up; retrieve the error so it is not reported as lost.
            slot.dialing.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            async with asyncio.timeout_at(deadline):
                # shield: one caller giving up must not abort the dial the others wait on
                return await asyncio.shield(slot.dialing)
        except TimeoutError:
            raise DeadlineExceeded(f"{service}: deadline passed while connecting") from None
        except CloudError as exc:
            raise SubsystemUnavailable(service, exc.message, details=exc.details) from None

    async def _dial(self, slot: _Slot) -> _Link:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                link = await self._open()
        except (OSError, TimeoutError, CloudError, ssl.SSLError) as exc:
            slot.failures += 1
            initial, ceiling = self._backoff
            wait = min(ceiling, initial * 2 ** (slot.failures - 1)) * random.uniform(0.5, 1.0)
            slot.retry_at = loop.time() + wait
            slot.last_error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise CloudError(
                f"cannot reach ZAP server {self.addr}: {slot.last_error}",
                details={"addr": self.addr},
            ) from None
        finally:
            slot.dialing = None
        slot.failures = 0
        slot.link = link
        return link

    async def _open(self) -> _Link:
        reader, writer = await asyncio.open_connection(
            self._host, self._port, ssl=self._tls, server_hostname=self._server_hostname,
            limit=2**16,
        )
        try:
            _, kind, body = await read_frame(reader, 4096)
            if kind == Kind.ERROR:
                raise _decode_error(body)
            challenge = msgspec.msgpack.decode(body, type=Challenge)
            if challenge.magic != MAGIC or challenge.version != PROTOCOL_VERSION:
                raise CloudError(f"{self.addr} is not a ZAP v{PROTOCOL_VERSION} server")
            nonce = new_nonce()
            mine = proof(self._key, b"client", challenge.nonce, nonce)
            hello = Hello(MAGIC, PROTOCOL_VERSION, nonce, mine)
            writer.write(encode_frame(0, Kind.HANDSHAKE, _encoder.encode(hello)))
            _, kind, body = await read_frame(reader, 4096)
            if kind == Kind.ERROR:
                raise CloudError(f"handshake refused: {_decode_error(body).message}")
            welcome = msgspec.msgpack.decode(body, type=Welcome)
            expected = proof(self._key, b"server", challenge.nonce, nonce)
            if not proof_matches(expected, welcome.proof):
                raise CloudError("the server does not hold the ZAP service key")
        except (msgspec.DecodeError, RecursionError, asyncio.IncompleteReadError,
                FrameTooLarge) as exc:
            writer.close()
            raise CloudError(f"bad ZAP handshake from {self.addr}: {exc}") from None
        except BaseException:
            writer.close()
            raise
        return _Link(reader, writer, addr=self.addr, max_frame=self._max_frame)

    async def close(self) -> None:
        """Close every connection; waiting calls fail with SubsystemUnavailable."""
        self._closed = True
        for slot in self._slots:
            if slot.dialing is not None:
                slot.dialing.cancel()
                with contextlib.suppress(BaseException):
                    await slot.dialing
            if slot.link is not None:
                slot.link.close()
                slot.link = None

    async def __aenter__(self) -> ZapChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
