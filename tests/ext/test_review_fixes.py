"""Failure paths found in review: a host exception crossing orgs, http_fetch past its deadline,
refusals that trapped, guest responses no server can send, uploads that locked an org out."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import structlog
import wasmtime
import wasmtime._func

from hanzocloud.ext import (
    ExtensionFailed,
    ExtensionRuntime,
    ExtensionTimeout,
    Limits,
    LoadedModule,
    MemoryKvStore,
    build_response,
)
from hanzocloud.ext.fetch import HttpFetcher
from hanzocloud.host import Host

from .support import EXAMPLES, GUESTS, GuestBuilder, RuntimeFactory, write_extension

START_TRAP = """(module
  (memory (export "memory") 1)
  (func $start unreachable)
  (start $start)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func (export "handle") (param i32 i32) (result i64) (i64.const 0)))"""

# `alloc` spins once `handle` has started, so the host's copy of the kv value into the guest
# (inside the kv_get import) is where the guest runs out of time or fuel.
SPINNING_ALLOC = """(module
  (import "hanzo" "kv_get" (func $kv_get (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (global $spin (mut i32) (i32.const 0))
  (data (i32.const 16) "k")
  (func (export "alloc") (param i32) (result i32)
    (if (global.get $spin) (then (loop $forever (br $forever))))
    (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func (export "handle") (param i32 i32) (result i64)
    (global.set $spin (i32.const 1))
    (drop (call $kv_get (i32.const 16) (i32.const 1)))
    (i64.const 0)))"""


@pytest.fixture
def http_runtime(make_runtime: RuntimeFactory) -> ExtensionRuntime:
    return make_runtime(allowed_capabilities={"http"},
                        http_allow_hosts=["127.0.0.1", "127.0.0.1:99999"])


@pytest.fixture
def http_module(guest: GuestBuilder, http_runtime: ExtensionRuntime) -> LoadedModule:
    return http_runtime.load(guest("http", exports=["fetch"], capabilities=["http"]))


# -- a host exception never reaches another org ----------------------------------------------


async def test_a_bad_url_does_not_leak_into_another_orgs_instantiation(
    guest: GuestBuilder, http_runtime: ExtensionRuntime, http_module: LoadedModule
) -> None:
    start_trap = http_runtime.load(guest(START_TRAP, exports=["handle"], name="start-trap"))
    out = await http_runtime.call(http_module, "fetch", {"url": "http://[::1/secret"},
                                  org="evil")
    assert "is not valid" in out["body"]["error"]
    with pytest.raises(ExtensionFailed) as info:
        await http_runtime.call(start_trap, "handle", {}, org="victim")
    assert info.value.cause == "instantiate"
    assert "secret" not in info.value.message


async def test_an_unexpected_host_exception_is_a_host_error_and_does_not_linger(
    guest: GuestBuilder, http_runtime: ExtensionRuntime, http_module: LoadedModule,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: HttpFetcher, request: Any, *, deadline: float) -> dict[str, Any]:
        raise ValueError(f"cannot reach {request['url']}")

    monkeypatch.setattr(HttpFetcher, "fetch", broken)
    start_trap = http_runtime.load(guest(START_TRAP, exports=["handle"], name="start-trap"))
    with pytest.raises(ExtensionFailed) as evil:
        await http_runtime.call(http_module, "fetch", {"url": "http://127.0.0.1/secret"},
                                org="evil")
    assert evil.value.cause == "host_error"
    assert "http_fetch: internal error (ValueError)" in evil.value.message
    assert wasmtime._func.LAST_EXCEPTION is None
    with pytest.raises(ExtensionFailed) as victim:
        await http_runtime.call(start_trap, "handle", {}, org="victim")
    assert victim.value.cause == "instantiate"
    assert "secret" not in victim.value.message


async def test_instantiation_survives_a_stale_exception_of_another_call(
    guest: GuestBuilder, runtime: ExtensionRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_trap = runtime.load(guest(START_TRAP, exports=["handle"], name="start-trap"))
    monkeypatch.setattr(wasmtime._func, "LAST_EXCEPTION", KeyError("other org's secret"))
    with pytest.raises(ExtensionFailed) as info:
        await runtime.call(start_trap, "handle", {}, org="victim")
    assert info.value.cause == "instantiate"
    assert "secret" not in info.value.message
    assert wasmtime._func.LAST_EXCEPTION is None


@pytest.mark.parametrize(
    ("limits", "error", "cause"),
    # Fuel enough that the clock runs out first, however fast this machine spins.
    [(Limits(fuel=10**15, timeout_s=0.2), ExtensionTimeout, "timeout"),
     (Limits(fuel=100_000, timeout_s=5.0), ExtensionFailed, "out_of_fuel")],
    ids=["timeout", "fuel"],
)
async def test_a_trap_in_alloc_inside_a_host_import_is_the_guests_own(
    guest: GuestBuilder, make_runtime: RuntimeFactory, limits: Limits,
    error: type[ExtensionFailed], cause: str,
) -> None:
    kv = MemoryKvStore()
    kv.set("acme", "k", b"value")
    runtime = make_runtime(allowed_capabilities={"kv"}, kv=kv, limits=limits)
    module = runtime.load(guest(SPINNING_ALLOC, exports=["handle"], capabilities=["kv"],
                                name="spinner"))
    with pytest.raises(error) as info:
        await runtime.call(module, "handle", {}, org="acme")
    assert info.value.cause == cause
    assert wasmtime._func.LAST_EXCEPTION is None


# -- http_fetch: refusals are answers, and one deadline covers the whole exchange -------------


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [({"url": "http://[::1/x"}, "url 'http://[::1/x' is not valid"),
     ({"url": "http://127.0.0.1/a\x00b"}, "is not valid: Invalid non-printable ASCII"),
     ({"url": "http://127.0.0.1\t/x"}, "is not valid: Invalid non-printable ASCII"),
     ({"url": "http://127.0.0.1:99999/x"}, "is not in the operator's allow-list"),
     ({"url": "http://127.0.0.1:1/", "headers": {"x-name": "caf\u00e9"}},
      "header 'x-name' must be printable ASCII"),
     ({"url": "http://127.0.0.1:1/", "headers": {"x-name": "a\r\nx-smuggled: 1"}},
      "header 'x-name' must be printable ASCII"),
     ({"url": "http://127.0.0.1:1/", "headers": {"bad name": "v"}},
      "header name 'bad name' is not an HTTP token"),
     ({"url": "http://127.0.0.1:1/", "headers": {"Host": "internal.example"}},
      "header 'Host' is set by the host and cannot be sent"),
     ({"url": "http://127.0.0.1:1/", "headers": {"content-length": "0"}},
      "header 'content-length' is set by the host"),
     ({"url": "http://127.0.0.1:1/", "headers": {"Transfer-Encoding": "chunked"}},
      "header 'Transfer-Encoding' is set by the host"),
     ({"url": "http://127.0.0.1:1/", "headers": {"connection": "close"}},
      "header 'connection' is set by the host")],
    ids=["bad-ipv6", "nul", "tab", "port-out-of-range", "non-ascii-value", "crlf-value",
         "bad-name", "host", "content-length", "transfer-encoding", "connection"],
)
async def test_http_fetch_refuses_with_an_answer(
    http_runtime: ExtensionRuntime, http_module: LoadedModule, request_: dict[str, Any],
    fragment: str,
) -> None:
    out = await http_runtime.call(http_module, "fetch", request_, org="acme")
    assert out["status"] == 200  # the guest got the refusal and carried on
    assert set(out["body"]) == {"error"}
    assert fragment in out["body"]["error"]


class TricklingServer:
    """An HTTP server that sends one byte every `interval` seconds: `/headers` trickles its
    header block, anything else sends its headers at once and trickles the body."""

    def __init__(self, interval: float = 0.2, length: int = 50) -> None:
        self.interval = interval
        self.length = length
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            filler = b"x" * self.length
            try:
                if request.split(b" ", 2)[1] == b"/headers":
                    slow = (b"HTTP/1.1 200 OK\r\nX-Slow: " + filler
                            + b"\r\nContent-Length: 0\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.length)
                    slow = filler
                for i in range(len(slow)):
                    if self.stop.wait(self.interval):
                        return
                    conn.sendall(slow[i:i + 1])
            except OSError:  # the client gave up, as it should
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def trickle() -> Iterator[TricklingServer]:
    server = TricklingServer()
    yield server
    server.close()


@pytest.mark.parametrize("path", ["/body", "/headers"])
async def test_http_timeout_covers_the_whole_exchange(
    guest: GuestBuilder, make_runtime: RuntimeFactory, trickle: TricklingServer, path: str
) -> None:
    runtime = make_runtime(allowed_capabilities={"http"}, http_allow_hosts=["127.0.0.1"],
                           limits=Limits(http_timeout_s=0.5, timeout_s=5.0))
    module = runtime.load(guest("http", exports=["fetch"], capabilities=["http"]))
    started = time.monotonic()
    out = await runtime.call(module, "fetch", {"url": trickle.url + path}, org="acme")
    assert out["body"] == {"error": "request timed out after 0.500s"}
    assert time.monotonic() - started < 2.0  # the server would trickle for 10 s or more


@pytest.mark.parametrize("path", ["/body", "/headers"])
async def test_call_deadline_during_http_fetch_is_a_timeout(
    guest: GuestBuilder, make_runtime: RuntimeFactory, trickle: TricklingServer, path: str
) -> None:
    runtime = make_runtime(allowed_capabilities={"http"}, http_allow_hosts=["127.0.0.1"],
                           limits=Limits(http_timeout_s=5.0, timeout_s=0.6))
    module = runtime.load(guest("http", exports=["fetch"], capabilities=["http"]))
    started = time.monotonic()
    with pytest.raises(ExtensionTimeout) as info:
        await runtime.call(module, "fetch", {"url": trickle.url + path}, org="acme")
    assert info.value.cause == "timeout"
    assert "timed out after 0.6s" in info.value.message
    assert time.monotonic() - started < 2.0


# -- guest responses are ones a server can send ------------------------------------------------


def test_accepted_response_headers_are_valid_on_the_wire(runtime: ExtensionRuntime) -> None:
    module = runtime.load(EXAMPLES / "echo-wat")
    response = build_response(module, "handle", {
        "status": 200, "headers": {"x-pad": " v\t", "x-latin": "caf\u00e9",
                                   "x-utf8": "\u2713".encode().decode("latin-1"),
                                   "x-inner": "a\tb c"}})
    raw = dict(response.raw_headers)
    assert (raw[b"x-pad"], raw[b"x-latin"], raw[b"x-utf8"]) == (
        b"v", b"caf\xe9", "\u2713".encode())
    h11.Response(status_code=response.status_code, headers=response.raw_headers)


# -- uploads: validated before they reach the disk, refused when the operator would not load --

ADMIN = {"X-Test-Identity": "acme/alice/admin"}


def upload(manifest: dict[str, Any], wasm: bytes) -> dict[str, Any]:
    return {"manifest": manifest, "wasm": base64.b64encode(wasm).decode()}


def echo_upload(**changes: Any) -> dict[str, Any]:
    manifest = json.loads((EXAMPLES / "echo-wat" / "extension.json").read_text())
    return upload({**manifest, **changes}, (EXAMPLES / "echo-wat" / "echo.wasm").read_bytes())


def host_client(host: Host) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=host.public),
                             base_url="http://test")


@pytest.mark.parametrize(
    "module",
    ["", "x\x00.wasm", "a" * 300 + ".wasm", "../x.wasm", "a/b.wasm", ".hidden.wasm", 7],
    ids=["empty", "nul", "too-long", "parent", "directory", "dotfile", "number"],
)
async def test_install_refuses_a_bad_module_file_name(test_host: Host, module: Any) -> None:
    async with host_client(test_host) as client:
        r = await client.put("/v1/ext/modules", headers=ADMIN, json=echo_upload(module=module))
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_extension"
        assert "module:" in r.json()["error"]["message"]
        listed = await client.get("/v1/ext/modules", headers=ADMIN)
        assert listed.json() == {"items": []}


async def test_install_refuses_a_capability_the_operator_does_not_allow(
    test_host: Host
) -> None:
    kv_wasm = wasmtime.wat2wasm((GUESTS / "kv.wat").read_text())
    manifest = {"name": "notes", "version": "1.0.0", "runtime": "wasm", "module": "kv.wasm",
                "exports": ["put", "get"], "capabilities": ["kv"]}
    async with host_client(test_host) as client:
        r = await client.put("/v1/ext/modules", headers=ADMIN, json=upload(manifest, kv_wasm))
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_extension"
        assert "capability 'kv' is not allowed by the operator" in r.json()["error"]["message"]
        assert (await client.get("/v1/ext/modules", headers=ADMIN)).json() == {"items": []}


async def test_a_module_that_no_longer_loads_does_not_lock_its_org_out(
    test_host: Host, tmp_path: Path
) -> None:
    ext = test_host.deps.extensions
    hook = wasmtime.wat2wasm((GUESTS / "hook.wat").read_text().replace(
        '(export "deny")', '(export "base_before_create")'))
    async with host_client(test_host) as client:
        installed = await client.put("/v1/ext/modules", headers=ADMIN, json=echo_upload())
        assert installed.status_code == 201, installed.text
        body = upload({"name": "limits", "version": "1.0.0", "runtime": "wasm",
                       "module": "hook.wasm", "exports": ["base_before_create", "allow"]}, hook)
        assert (await client.put("/v1/ext/modules", headers=ADMIN, json=body)).status_code == 201
        # As if installed while the operator still allowed `kv` (or from the CLI).
        kv_dir = write_extension(tmp_path / "notes", name="notes",
                                 wasm=wasmtime.wat2wasm((GUESTS / "kv.wat").read_text()),
                                 exports=["put", "get"], capabilities=["kv"])
        ext.store.install("acme", kv_dir)
        ext.invalidate("acme")
        with structlog.testing.capture_logs() as logs:
            assert ext.has_hook("acme", "base_before_create")
        assert [(e["event"], e["module"]) for e in logs] == [("extension_skipped", "notes@1.0.0")]
        assert "capability 'kv' is not allowed by the operator" in logs[0]["error"]
        denied = await ext.run_hooks("acme", "base_before_create", {"record": {"amount": 5}})
        assert [r.action for r in denied] == ["deny"]

        ran = await client.post("/v1/ext/run/echo-wat/handle", headers=ADMIN, json={"a": 1})
        assert ran.status_code == 200 and ran.json()["body"] == {"a": 1}
        broken = await client.post("/v1/ext/run/notes/get", headers=ADMIN, json={})
        assert broken.status_code == 400
        assert "capability 'kv' is not allowed" in broken.json()["error"]["message"]
        listed = (await client.get("/v1/ext/modules", headers=ADMIN)).json()["items"]
        assert [m["name"] for m in listed] == ["echo-wat", "limits", "notes"]
        removed = await client.delete("/v1/ext/modules/notes", headers=ADMIN)
        assert removed.status_code == 204
    assert sorted(m.manifest.name for m in ext.org_modules("acme")) == ["echo-wat", "limits"]
