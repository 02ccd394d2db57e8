"""The guest ABI: required exports, host imports, pointer packing and guest memory access.

A guest exports `memory`, `alloc(len i32) -> i32`, `dealloc(ptr i32, len i32)` and one
`<export>(ptr i32, len i32) -> i64` per entry point; the i64 packs the output's pointer
(high 32 bits) and length (low 32 bits). Host imports live in the `hanzo` module.

Calls into the guest go through `wasmtime_func_call_unchecked` when the bindings expose
it: the types were checked once at load, and the checked public `Func.__call__` costs
about ten times more per call. `FAST_PATH = False` falls back to the public API.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

import wasmtime

from hanzocloud.ext.errors import InvalidExtension
from hanzocloud.ext.limits import CAPABILITY_HTTP, CAPABILITY_KV
from hanzocloud.ext.manifest import Manifest

IMPORT_MODULE = "hanzo"


# name -> (params, results, capability that unlocks it; None = always linked)
HOST_IMPORTS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "log": (("i32", "i32"), (), None),
    "http_fetch": (("i32", "i32"), ("i64",), CAPABILITY_HTTP),
    "kv_get": (("i32", "i32"), ("i64",), CAPABILITY_KV),
    "kv_set": (("i32", "i32", "i32", "i32"), ("i32",), CAPABILITY_KV),
}

_ABI_EXPORTS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alloc": (("i32",), ("i32",)),
    "dealloc": (("i32", "i32"), ()),
}
_ENTRY_SIGNATURE = (("i32", "i32"), ("i64",))

try:  # the unchecked call path; absent bindings simply mean the portable path
    from wasmtime import _ffi

    _CALL_UNCHECKED: Any = _ffi.wasmtime_func_call_unchecked
    _MEMORY_DATA: Any = _ffi.wasmtime_memory_data
    _MEMORY_SIZE: Any = _ffi.wasmtime_memory_data_size
    _RAW_VAL: Any = _ffi.wasmtime_val_raw_t
    _TRAP_PTR: Any = ctypes.POINTER(_ffi.wasm_trap_t)
    FAST_PATH = True
except (ImportError, AttributeError):  # pragma: no cover - depends on the wasmtime build
    FAST_PATH = False

Storelike = wasmtime.Store | wasmtime.Caller


def pack(ptr: int, length: int) -> int:
    """Pack a pointer and length into the (signed) i64 an entry point returns."""
    value = ((ptr & 0xFFFFFFFF) << 32) | (length & 0xFFFFFFFF)
    return value - (1 << 64) if value >= 1 << 63 else value


def unpack(value: int) -> tuple[int, int]:
    """Split an entry point's i64 result into (pointer, length)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value >> 32, value & 0xFFFFFFFF


def _sig(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)


def _fmt(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = sig
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def check_module(module: wasmtime.Module, manifest: Manifest) -> None:
    """Check a compiled module against the ABI and its manifest; raise InvalidExtension."""
    ref = manifest.ref
    exports = {e.name: e.type for e in module.exports}
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise InvalidExtension(f"extension {ref}: must export a memory named 'memory'",
                               module=ref, cause="abi")
    if memory.is_64:
        raise InvalidExtension(f"extension {ref}: 'memory' must be a 32-bit memory",
                               module=ref, cause="abi")
    wanted = dict(_ABI_EXPORTS)
    wanted.update({name: _ENTRY_SIGNATURE for name in manifest.exports})
    for name, sig in wanted.items():
        ty = exports.get(name)
        if not isinstance(ty, wasmtime.FuncType):
            raise InvalidExtension(
                f"extension {ref}: must export a function {name!r} {_fmt(sig)}",
                module=ref, export=name, cause="abi")
        if _sig(ty) != sig:
            raise InvalidExtension(
                f"extension {ref}: export {name!r} has type {_fmt(_sig(ty))}, "
                f"the ABI needs {_fmt(sig)}",
                module=ref, export=name, cause="abi")
    for imp in module.imports:
        where = f"{imp.module}.{imp.name}"
        spec = HOST_IMPORTS.get(imp.name or "") if imp.module == IMPORT_MODULE else None
        if spec is None:
            known = ", ".join(f"{IMPORT_MODULE}.{n}" for n in HOST_IMPORTS)
            raise InvalidExtension(
                f"extension {ref}: imports {where}, which the host does not provide "
                f"(available: {known})", module=ref, cause="abi")
        params, results, capability = spec
        if not isinstance(imp.type, wasmtime.FuncType) or _sig(imp.type) != (params, results):
            raise InvalidExtension(
                f"extension {ref}: import {where} must have type {_fmt((params, results))}",
                module=ref, cause="abi")
        if capability is not None and capability not in manifest.capabilities:
            raise InvalidExtension(
                f"extension {ref}: imports {where} but extension.json does not request "
                f"the {capability!r} capability", module=ref, cause="capability")


class GuestFunc:
    """One guest function, bound once; calling it costs one FFI call on the fast path."""

    __slots__ = ("_func", "_ref", "_array", "_slots", "_result")

    def __init__(self, func: wasmtime.Func, nparams: int, result: str | None) -> None:
        self._func = func
        self._result = result
        self._slots = max(nparams, 1)
        if FAST_PATH:
            self._ref = ctypes.byref(func._func)
            self._array = _RAW_VAL * self._slots

    def __call__(self, where: Storelike, *args: int) -> int:
        """Call the function in `where` (the store, or the caller inside a host import)."""
        if not FAST_PATH:
            value = self._func(where, *args)
            return int(value) if value is not None else 0
        buf = self._array()
        for i, arg in enumerate(args):
            buf[i].i32 = arg
        trap = _TRAP_PTR()
        error = _CALL_UNCHECKED(where._context(), self._ref, buf, self._slots,
                                ctypes.byref(trap))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        if trap:
            raise wasmtime.Trap._from_ptr(trap)
        if self._result == "i64":
            return int(buf[0].i64)
        if self._result == "i32":
            return int(buf[0].i32)
        return 0


class GuestMemory:
    """Bounds-checked reads and writes of a guest's linear memory."""

    __slots__ = ("_memory", "_ref")

    def __init__(self, memory: wasmtime.Memory) -> None:
        self._memory = memory
        if FAST_PATH:
            self._ref = ctypes.byref(memory._memory)

    def size(self, where: Storelike) -> int:
        """Current size of the memory in bytes."""
        if not FAST_PATH:
            return int(self._memory.data_len(where))
        return int(_MEMORY_SIZE(where._context(), self._ref))

    def in_bounds(self, where: Storelike, ptr: int, length: int) -> bool:
        """Whether [ptr, ptr+length) lies inside the memory."""
        return ptr >= 0 and length >= 0 and ptr + length <= self.size(where)

    def read(self, where: Storelike, ptr: int, length: int) -> bytes:
        """Copy `length` bytes out of the guest; IndexError when out of bounds."""
        if not self.in_bounds(where, ptr, length):
            raise IndexError(f"range [{ptr}, {ptr + length}) is outside guest memory")
        if length == 0:
            return b""
        if not FAST_PATH:
            return bytes(self._memory.read(where, ptr, ptr + length))
        base = ctypes.addressof(_MEMORY_DATA(where._context(), self._ref).contents)
        return ctypes.string_at(base + ptr, length)

    def write(self, where: Storelike, ptr: int, data: bytes) -> None:
        """Copy `data` into the guest at `ptr`; IndexError when out of bounds."""
        if not self.in_bounds(where, ptr, len(data)):
            raise IndexError(f"range [{ptr}, {ptr + len(data)}) is outside guest memory")
        if not data:
            return
        if not FAST_PATH:
            self._memory.write(where, data, ptr)
            return
        base = ctypes.addressof(_MEMORY_DATA(where._context(), self._ref).contents)
        ctypes.memmove(base + ptr, data, len(data))


class GuestExports:
    """The ABI exports of one instance: memory, alloc, dealloc and the entry points."""

    __slots__ = ("memory", "alloc", "dealloc", "entries")

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance,
                 manifest: Manifest) -> None:
        exports = instance.exports(store)

        def func(name: str) -> wasmtime.Func:
            item = exports[name]
            assert isinstance(item, wasmtime.Func)  # checked by check_module at load
            return item

        memory = exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = GuestMemory(memory)
        self.alloc = GuestFunc(func("alloc"), 1, "i32")
        self.dealloc = GuestFunc(func("dealloc"), 2, None)
        self.entries = {name: GuestFunc(func(name), 2, "i64") for name in manifest.exports}

    def put(self, where: Storelike, data: bytes) -> tuple[int, int]:
        """Allocate a guest buffer and copy `data` into it; returns (ptr, len)."""
        ptr = self.alloc(where, len(data)) & 0xFFFFFFFF
        if not self.memory.in_bounds(where, ptr, len(data)) or (ptr == 0 and data):
            raise IndexError(f"alloc({len(data)}) returned an unusable pointer {ptr}")
        self.memory.write(where, ptr, data)
        return ptr, len(data)
