"""Bounds on a request's head (line and headers): its size, and how long it may take.

uvicorn's httptools protocol reads a head for as long and as large as the client sends it:
a header of a hundred megabytes is gathered (and parsed, at a cost that grows faster than
its size) on the one event loop every listener shares, and a connection that sends half a
head, or nothing, is kept open for ever. `guarded` gives the servers a protocol that answers
431 once a head outgrows `limit` bytes, and 408 (or, before its first byte, just closes)
once a head has taken `timeout` seconds; both close the connection. A body that stops
arriving for `timeout` seconds closes the connection too (the app sees the client leave).
Body sizes are bounded elsewhere (`hanzocloud.http.BodyLimit`), keep-alive idling by
uvicorn's own timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


def _refusal(status: int, code: str, message: str) -> bytes:
    body = msgspec.json.encode({"error": {"code": code, "message": message}})
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                     b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body])


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size and a time bound on every request head."""

    head_limit = 64 * 1024
    head_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # the bytes arriving now belong to a request head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0  # when the last piece of the body arrived

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._head_open:
            super().data_received(data)
            return
        self._head_bytes += len(data)
        super().data_received(data)  # may complete the head, and start the next one
        if self._head_open and self._head_bytes > self.head_limit:
            self._refuse(_refusal(431, "header_too_large",
                                  f"request line and headers over {self.head_limit} bytes"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a head after keep-alive idling: timed from now
            self._arm()

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm()
        super().on_headers_complete()
        if any(name in (b"content-length", b"transfer-encoding") for name, _ in self.headers):
            self._body_seen = self.loop.time()  # a body may follow: it must keep coming
            self._body_timer = self.loop.call_later(self.head_timeout, self._body_stalled)

    def on_body(self, body: bytes) -> None:
        self._body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done()
        super().on_message_complete()
        self._head_open, self._head_bytes = True, 0  # what follows is the next head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle between requests is uvicorn's keep-alive timeout; a next head that started
        # arriving already (pipelined) is timed from now.
        if self._head_bytes and self._head_timer is None:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        if not self._head_open or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being written: uvicorn's to finish
        if self._head_bytes == 0:  # nothing of a request arrived: just hang up
            self.transport.close()
            return
        self._refuse(_refusal(408, "request_timeout",
                              f"request line and headers not received within "
                              f"{self.head_timeout:g} seconds"))

    def _body_done(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_stalled(self) -> None:
        self._body_timer = None
        idle = self.loop.time() - self._body_seen
        if idle < self.head_timeout:
            self._body_timer = self.loop.call_later(self.head_timeout - idle, self._body_stalled)
        elif not self.transport.is_closing():
            self.transport.close()  # the request's receive() reports the client gone

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse (a bad header value, a bad
        Content-Length): in the JSON every other error has, not plain text."""
        self._refuse(_refusal(400, "bad_request", msg))

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        self._head_open = False
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


def guarded(limit: int, timeout: float) -> type[GuardedHttp]:
    """The protocol class for one server, with its bounds."""
    return type("GuardedHttp", (GuardedHttp,), {"head_limit": limit, "head_timeout": timeout})
