"""A loaded module, and one live instance of it for one org, with per-call limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from hanzocloud.ext.abi import GuestExports, unpack
from hanzocloud.ext.errors import ExtensionError, ExtensionFailed, ExtensionTimeout
from hanzocloud.ext.host import CallState, HostAbort, HostServices, define_imports
from hanzocloud.ext.limits import WASM_PAGE, Limits
from hanzocloud.ext.manifest import Manifest

# Where wasmtime-py parks a host import's exception; cleared after every call.
_wasmtime_func: Any = getattr(wasmtime, "_func", None)


@dataclass(frozen=True, slots=True, eq=False)
class LoadedModule:
    """A validated, compiled extension, ready to be called; cheap to share."""

    manifest: Manifest
    directory: Path
    sha256: str
    capabilities: frozenset[str]
    compiled: wasmtime.Module = field(repr=False)

    @property
    def ref(self) -> str:
        """`name@version`."""
        return self.manifest.ref

    @property
    def exports(self) -> tuple[str, ...]:
        """The entry points listed in the manifest."""
        return self.manifest.exports


def _trap_reason(exc: Exception) -> str:
    """The useful sentence out of a wasmtime error (its 'Caused by' line, without backtrace)."""
    text = str(exc).strip()
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1].strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _clear_host_exception() -> None:
    # wasmtime-py keeps a host import's exception in a process-wide global until some later
    # failing call re-raises it, in whatever thread and org that is. Every call records its
    # own failure on its CallState, so nothing ever needs the global: drop it, always.
    if getattr(_wasmtime_func, "LAST_EXCEPTION", None) is not None:
        _wasmtime_func.LAST_EXCEPTION = None


class GuestInstance:
    """One module instantiated for one org: its own store, memory and globals."""

    def __init__(
        self,
        engine: wasmtime.Engine,
        module: LoadedModule,
        *,
        org: str,
        services: HostServices,
        deadline_ticks: int,
    ) -> None:
        self.org = org
        self.module = module
        self.limits: Limits = services.limits
        self._ticks = deadline_ticks
        self.state = CallState(org=org, module=module.ref)
        self.store = wasmtime.Store(engine)
        self.store.set_limits(memory_size=self.limits.max_memory_bytes, instances=1,
                              memories=1, tables=4, table_elements=100_000)
        linker = wasmtime.Linker(engine)
        define_imports(linker, self.state, services, module.capabilities)
        # The start function (global initialisers) runs under the same budget as a call.
        self._arm()
        try:
            instance = linker.instantiate(self.store, module.compiled)
        except Exception as exc:  # wasmtime may re-raise a stale host exception of any type
            failure = self._failure(exc, "", instantiating=True)
            self.store.close()
            raise failure from None
        finally:
            _clear_host_exception()
        self.exports = GuestExports(self.store, instance, module.manifest)
        self.state.exports = self.exports

    def _arm(self) -> None:
        self.store.set_fuel(self.limits.fuel)
        self.store.set_epoch_deadline(self._ticks)
        self.state.begin(self.limits.timeout_s)

    def invoke(self, export: str, payload: bytes) -> bytes:
        """Run one entry point on `payload` and return its raw output; raises ExtensionError."""
        self._arm()
        store, ex, ref = self.store, self.exports, self.module.ref
        entry = ex.entries[export]
        try:
            in_ptr, in_len = ex.put(store, payload)
            out_ptr, out_len = unpack(entry(store, in_ptr, in_len))
            if out_len > self.limits.max_output_bytes:
                raise ExtensionFailed(
                    f"extension {ref} export {export!r}: output of {out_len} bytes exceeds "
                    f"the limit of {self.limits.max_output_bytes} bytes",
                    module=ref, export=export, cause="output_too_large")
            try:
                output = ex.memory.read(store, out_ptr, out_len)
            except IndexError as exc:
                raise ExtensionFailed(
                    f"extension {ref} export {export!r}: returned an invalid output pointer: "
                    f"{exc}", module=ref, export=export, cause="invalid_output") from None
            # Output is freed before input: stack-like allocators get all their memory back.
            ex.dealloc(store, out_ptr, out_len)
            ex.dealloc(store, in_ptr, in_len)
            return output
        except ExtensionError:
            raise
        except IndexError as exc:  # alloc handed back an unusable pointer
            if self._memory_exhausted():
                raise self._oom(export) from None
            raise ExtensionFailed(f"extension {ref} export {export!r}: {exc}",
                                  module=ref, export=export, cause="abi") from None
        except (wasmtime.Trap, wasmtime.WasmtimeError, HostAbort) as exc:
            raise self._failure(exc, export) from None
        finally:
            _clear_host_exception()

    def _memory_exhausted(self) -> bool:
        try:
            size = self.exports.memory.size(self.store)
        except (AttributeError, wasmtime.WasmtimeError):
            return False
        return size + WASM_PAGE > self.limits.max_memory_bytes

    def _oom(self, export: str) -> ExtensionFailed:
        ref = self.module.ref
        return ExtensionFailed(
            f"extension {ref} export {export!r}: out of memory "
            f"(limit {self.limits.max_memory_bytes} bytes)",
            module=ref, export=export, cause="out_of_memory")

    def _failure(self, exc: Exception, export: str, *,
                 instantiating: bool = False) -> ExtensionError:
        """Turn a failed instantiation or call into an ExtensionError naming module and cause."""
        ref, limits, state = self.module.ref, self.limits, self.state
        where = f"extension {ref} " + ("instantiation" if instantiating else f"export {export!r}")
        if state.trap is not None:  # the guest's alloc trapped inside a host import
            exc = state.trap
        code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
        if state.fault is not None:
            return ExtensionFailed(f"{where}: host call failed: {state.fault}",
                                   module=ref, export=export, cause="host_error")
        if code == wasmtime.TrapCode.INTERRUPT or state.timed_out:
            return ExtensionTimeout(f"{where}: timed out after {limits.timeout_s:g}s",
                                    module=ref, export=export, cause="timeout")
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return ExtensionFailed(f"{where}: ran out of fuel (limit {limits.fuel})",
                                   module=ref, export=export, cause="out_of_fuel")
        if not instantiating and self._memory_exhausted():
            return self._oom(export)
        if code == wasmtime.TrapCode.STACK_OVERFLOW:
            return ExtensionFailed(f"{where}: stack overflow", module=ref, export=export,
                                   cause="stack_overflow")
        cause = "instantiate" if instantiating else "trap" if code is not None else "error"
        # Anything but wasmtime's own error may be another call's exception: never show it.
        reason = (_trap_reason(exc) if isinstance(exc, (wasmtime.Trap, wasmtime.WasmtimeError))
                  else "failed")
        return ExtensionFailed(f"{where}: {reason}", module=ref, export=export, cause=cause)

    def close(self) -> None:
        """Free the store and everything in it."""
        self.state.exports = None
        self.store.close()
