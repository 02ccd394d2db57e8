"""Request heads are bounded in size and time; a client leaving mid-body is no server error.

Against a real server process over raw sockets: what a misbehaving client sends never
reaches the app, and the server goes on serving everyone else.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from conftest import RunningServer, hanzocloud_cmd


def _serve(factory: Callable[..., RunningServer], tmp_path: Path, *extra: str) -> RunningServer:
    return factory([*hanzocloud_cmd(), "--dev", f"--data-dir={tmp_path}", "--enable=iam,gateway",
                    "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
                    "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0",
                    "--log-level=info", *extra])


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head[9:12]), json.loads(body)


def test_an_oversized_head_is_431_and_closed(server_factory: Callable[..., RunningServer],
                                             tmp_path: Path) -> None:
    server = _serve(server_factory, tmp_path, "--header-limit=8192")
    with _connect(server.public) as sock:
        sock.sendall(b"GET /v1/brand HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # 4 MB more of one header, unless the server hangs up first
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, body = _status_and_body(_read_all(sock))
    assert status == 431 and body["error"]["code"] == "header_too_large"  # type: ignore[index]
    # Everyone else is still served; a head just under the bound, and a big body, pass.
    assert httpx.get(f"{server.public}/v1/brand", headers={"X-Fill": "a" * 6000}
                     ).status_code == 200
    r = httpx.post(f"{server.public}/v1/iam/oauth/token", content=b"x=" + b"a" * 500_000,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, r.text  # read whole, and refused for what it says
    assert httpx.get(f"{server.urls['health']}/healthz").status_code == 200


def test_a_slow_head_is_408_and_a_silent_connection_is_closed(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = _serve(server_factory, tmp_path, "--header-timeout=1")
    started = time.monotonic()
    with _connect(server.public) as slow, _connect(server.public) as silent:
        slow.sendall(b"GET /v1/brand HTTP/1.1\r\nHost: x\r\nX-Part")
        status, body = _status_and_body(_read_all(slow))
        assert _read_all(silent) == b""  # closed without a word
    assert status == 408 and body["error"]["code"] == "request_timeout"  # type: ignore[index]
    assert time.monotonic() - started < 9  # well before the sockets' own 10 s timeout
    # A client that keeps its connection between requests is not cut off by the bound.
    with httpx.Client() as client:
        for _ in range(2):
            assert client.get(f"{server.public}/v1/brand").status_code == 200
            time.sleep(1.5)


def test_a_client_leaving_mid_body_is_logged_as_499(server_factory: Callable[..., RunningServer],
                                                   tmp_path: Path) -> None:
    server = _serve(server_factory, tmp_path)
    with _connect(server.public) as sock:
        sock.sendall(b"POST /v1/iam/oauth/token HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 1000\r\n\r\ngrant_type")
        time.sleep(0.3)
    until, logged = time.monotonic() + 10, ""
    while time.monotonic() < until and "client_disconnected" not in logged:
        time.sleep(0.1)
        logged = server.stderr()
    assert "client_disconnected" in logged, logged[-2000:]
    statuses = [json.loads(line).get("status") for line in logged.splitlines()
                if line.startswith("{") and '"route": "/v1/iam/oauth/token"' in line]
    assert statuses == [499], statuses
    assert "unhandled_error" not in logged and "Traceback" not in logged
    assert httpx.get(f"{server.public}/v1/brand").status_code == 200


def test_a_stalled_body_closes_the_connection_and_a_slow_one_does_not(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = _serve(server_factory, tmp_path, "--header-timeout=1")
    head = (b"POST /v1/iam/oauth/token HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n")
    started = time.monotonic()
    with _connect(server.public) as stalled:
        stalled.sendall(head % 1000 + b"grant_type")
        assert _read_all(stalled) == b""  # hung up: nobody is left to answer
    assert time.monotonic() - started < 9
    body = b"grant_type=password&client_id=nope&username=a&password=b"
    with _connect(server.public) as slow:  # never idle for a whole second, though slow
        slow.sendall(head % len(body))
        for i in range(0, len(body), 12):
            time.sleep(0.5)
            slow.sendall(body[i:i + 12])
        status = int(slow.recv(65536)[9:12])
    assert status in (400, 401), status  # read whole, and answered for what it says


def test_an_unparseable_request_is_a_json_400_and_logged_as_json(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    """What the HTTP parser itself refuses gets the JSON every other error has, and the
    server's own warning about it is a JSON log line like the rest."""
    server = _serve(server_factory, tmp_path)
    for head in (b"GET /v1/brand HTTP/1.1\r\nHost: x\r\nX-Request-Id: ab\x01cd\r\n\r\n",
                 b"POST /v1/brand HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                 b"POST /v1/brand HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n"):
        with _connect(server.public) as sock:
            sock.sendall(head)
            raw = _read_all(sock)
        assert b"content-type: application/json" in raw.lower()
        status, body = _status_and_body(raw)
        assert status == 400 and body["error"]["code"] == "bad_request", raw  # type: ignore[index]
    assert httpx.get(f"{server.public}/v1/brand").status_code == 200  # still serving
    time.sleep(0.2)  # let the drain thread read the last lines
    lines = [line for line in server.stderr().splitlines() if line.strip()]
    assert any("Invalid HTTP request" in line for line in lines)
    for line in lines:  # every log line, the library's included (not the --dev notice)
        if not line.startswith("hanzocloud: WARNING: --dev"):
            json.loads(line)
