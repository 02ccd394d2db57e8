"""Host imports (`hanzo.log`, `hanzo.http_fetch`, `hanzo.kv_get`, `hanzo.kv_set`).

Each import is linked into an instance only when its capability was both requested by the
manifest and allowed by the operator. Imports never let a Python exception escape except
`HostAbort`, which records the reason on the call state first and so ends the call with
a clear `host_error` (or the guest's own trap, or a timeout).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import msgspec
import structlog
import wasmtime

from hanzocloud.ext.abi import IMPORT_MODULE, GuestExports, GuestMemory, pack
from hanzocloud.ext.fetch import HttpFetcher
from hanzocloud.ext.kv import KvStore
from hanzocloud.ext.limits import CAPABILITY_HTTP, CAPABILITY_KV, Limits

log = structlog.get_logger("hanzocloud.ext")

KV_NOT_FOUND = -1
KV_ERROR = -2
KV_OK = 0
KV_BAD_KEY = -1
KV_VALUE_TOO_LARGE = -2
KV_STORE_FAILED = -3

_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()

_P = ParamSpec("_P")
_R = TypeVar("_R")


class HostAbort(Exception):
    """Raised inside a host import to stop the guest; the reason is on the CallState."""


@dataclass(slots=True)
class CallState:
    """Per-instance bookkeeping the host imports share with the call in progress."""

    org: str
    module: str
    deadline: float = 0.0
    log_lines: int = 0
    fault: str | None = None
    trap: wasmtime.Trap | wasmtime.WasmtimeError | None = None
    timed_out: bool = False
    exports: GuestExports | None = None

    def begin(self, timeout_s: float) -> None:
        """Reset the per-call counters at the start of a call."""
        self.deadline = time.monotonic() + timeout_s
        self.log_lines = 0
        self.fault = None
        self.trap = None
        self.timed_out = False

    def abort(self, reason: str) -> HostAbort:
        """Record why the guest is being stopped and return the exception to raise."""
        self.fault = reason
        return HostAbort(reason)

    def expire(self) -> HostAbort:
        """Record that the call's deadline passed inside a host import."""
        self.timed_out = True
        return HostAbort("the call's deadline passed")


def _guarded(state: CallState, name: str, func: Callable[_P, _R]) -> Callable[_P, _R]:
    """`func`, letting no exception but HostAbort out.

    wasmtime-py parks whatever a host import raises in a process-wide global, and the next
    failing instantiation in any thread, for any org, raises it again: a stray exception
    would reach another org. A trap of the guest's own `alloc` (called back from the
    import) is kept on the state, so the call fails as that trap (fuel, timeout, ...).
    """

    @functools.wraps(func)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except HostAbort:
            raise
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            state.trap = exc
            raise HostAbort(f"{name}: the guest trapped") from None
        except Exception as exc:
            log.warning("extension_host_import_failed", module=state.module, org=state.org,
                        host_import=name, error=repr(exc))
            raise state.abort(f"{name}: internal error ({type(exc).__name__})") from None

    return guarded


@dataclass(frozen=True, slots=True)
class HostServices:
    """What the operator lets guests reach: limits, the kv store, outbound HTTP."""

    limits: Limits
    kv: KvStore | None
    fetcher: HttpFetcher | None


def _memory(caller: wasmtime.Caller, state: CallState) -> GuestMemory:
    mem = caller.get("memory")
    if not isinstance(mem, wasmtime.Memory):
        raise state.abort("guest has no exported memory")
    return GuestMemory(mem)


def _read(caller: wasmtime.Caller, state: CallState, name: str, ptr: int, length: int) -> bytes:
    try:
        return _memory(caller, state).read(caller, ptr & 0xFFFFFFFF, length & 0xFFFFFFFF)
    except IndexError as exc:
        raise state.abort(f"{name}: {exc}") from None


def _give(caller: wasmtime.Caller, state: CallState, name: str, data: bytes) -> int:
    """Copy `data` into a fresh guest buffer (the guest frees it) and return it packed."""
    if state.exports is None:
        raise state.abort(f"{name} cannot be called before the module is initialised")
    try:
        ptr, length = state.exports.put(caller, data)
    except IndexError as exc:
        raise state.abort(f"{name}: {exc}") from None
    return pack(ptr, length)


def define_imports(
    linker: wasmtime.Linker,
    state: CallState,
    services: HostServices,
    capabilities: frozenset[str],
) -> None:
    """Define the host imports this instance is entitled to on its linker."""
    limits = services.limits

    def host_log(caller: wasmtime.Caller, ptr: int, length: int) -> None:
        if state.log_lines >= limits.max_log_lines:
            return
        state.log_lines += 1
        length = min(length & 0xFFFFFFFF, limits.max_log_line_bytes)
        text = _read(caller, state, "log", ptr, length).decode("utf-8", errors="replace")
        log.info("extension_log", module=state.module, org=state.org, message=text)

    linker.define_func(IMPORT_MODULE, "log", wasmtime.FuncType([_I32, _I32], []),
                       _guarded(state, "log", host_log), access_caller=True)

    if CAPABILITY_KV in capabilities and services.kv is not None:
        kv = services.kv

        def kv_key(caller: wasmtime.Caller, ptr: int, length: int) -> str | None:
            if not 0 < (length & 0xFFFFFFFF) <= limits.kv_max_key_bytes:
                return None
            try:
                return _read(caller, state, "kv", ptr, length).decode("utf-8")
            except UnicodeDecodeError:
                return None

        def kv_get(caller: wasmtime.Caller, ptr: int, length: int) -> int:
            key = kv_key(caller, ptr, length)
            if key is None:
                return KV_ERROR
            try:
                value = kv.get(state.org, key)
            except Exception as exc:  # a failing store must not take the guest's host down
                log.warning("extension_kv_failed", module=state.module, org=state.org,
                            error=repr(exc))
                return KV_ERROR
            if value is None:
                return KV_NOT_FOUND
            return _give(caller, state, "kv_get", value)

        def kv_set(caller: wasmtime.Caller, kptr: int, klen: int, vptr: int, vlen: int) -> int:
            key = kv_key(caller, kptr, klen)
            if key is None:
                return KV_BAD_KEY
            if (vlen & 0xFFFFFFFF) > limits.kv_max_value_bytes:
                return KV_VALUE_TOO_LARGE
            value = _read(caller, state, "kv_set", vptr, vlen)
            try:
                kv.set(state.org, key, value)
            except Exception as exc:  # see kv_get
                log.warning("extension_kv_failed", module=state.module, org=state.org,
                            error=repr(exc))
                return KV_STORE_FAILED
            return KV_OK

        linker.define_func(IMPORT_MODULE, "kv_get", wasmtime.FuncType([_I32, _I32], [_I64]),
                           _guarded(state, "kv_get", kv_get), access_caller=True)
        linker.define_func(IMPORT_MODULE, "kv_set",
                           wasmtime.FuncType([_I32, _I32, _I32, _I32], [_I32]),
                           _guarded(state, "kv_set", kv_set), access_caller=True)

    if CAPABILITY_HTTP in capabilities and services.fetcher is not None:
        fetcher = services.fetcher

        def http_fetch(caller: wasmtime.Caller, ptr: int, length: int) -> int:
            raw = _read(caller, state, "http_fetch", ptr, length)
            request: Any
            try:
                request = msgspec.json.decode(raw)
            except (msgspec.DecodeError, RecursionError) as exc:
                answer: dict[str, Any] = {"error": f"request is not valid JSON: {exc}"}
            else:
                answer = fetcher.fetch(request, deadline=state.deadline)
                if time.monotonic() >= state.deadline:
                    raise state.expire()
            return _give(caller, state, "http_fetch", msgspec.json.encode(answer))

        linker.define_func(IMPORT_MODULE, "http_fetch", wasmtime.FuncType([_I32, _I32], [_I64]),
                           _guarded(state, "http_fetch", http_fetch), access_caller=True)
