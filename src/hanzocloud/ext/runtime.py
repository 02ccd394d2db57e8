"""ExtensionRuntime: loads modules, pools instances per (org, module), runs calls off-loop."""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import wasmtime

from hanzocloud.errors import ConfigError, InvalidArgument, PayloadTooLarge
from hanzocloud.ext.abi import check_module
from hanzocloud.ext.errors import ExtensionFailed, ExtensionNotFound, InvalidExtension
from hanzocloud.ext.fetch import HttpFetcher
from hanzocloud.ext.host import HostServices
from hanzocloud.ext.instance import GuestInstance, LoadedModule
from hanzocloud.ext.kv import KvStore, MemoryKvStore
from hanzocloud.ext.limits import KNOWN_CAPABILITIES, Limits
from hanzocloud.ext.manifest import Manifest, load_manifest
from hanzocloud.ext.workers import WorkerPool

SUPPORTED_RUNTIMES = frozenset({"wasm"})
ORG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_MODULE_BYTES = 64 * 1024 * 1024
WASM_MAGIC = b"\x00asm"

_PoolKey = tuple[str, str, str, frozenset[str]]
DEFAULT_LIMITS = Limits()


class ExtensionRuntime:
    """Runs extension modules under per-call fuel, memory and wall-clock limits."""

    def __init__(
        self,
        *,
        limits: Limits = DEFAULT_LIMITS,
        allowed_runtimes: Iterable[str] = ("wasm",),
        allowed_capabilities: Iterable[str] = frozenset(),
        http_allow_hosts: Iterable[str] = (),
        kv: KvStore | None = None,
        workers: int | None = None,
        tick_s: float = 0.01,
        max_compiled_modules: int = 256,
    ) -> None:
        self.limits = limits
        self.allowed_runtimes = tuple(allowed_runtimes)
        self.allowed_capabilities = frozenset(allowed_capabilities)
        unsupported = sorted(set(self.allowed_runtimes) - SUPPORTED_RUNTIMES)
        if unsupported:
            raise ConfigError(f"extension runtime {unsupported[0]!r} is not supported "
                              f"(supported: {', '.join(sorted(SUPPORTED_RUNTIMES))})")
        unknown = sorted(self.allowed_capabilities - KNOWN_CAPABILITIES)
        if unknown:
            raise ConfigError(f"unknown extension capability {unknown[0]!r} "
                              f"(known: {', '.join(sorted(KNOWN_CAPABILITIES))})")
        if tick_s <= 0:
            raise ConfigError("extension epoch tick must be positive")
        self.kv: KvStore = kv if kv is not None else MemoryKvStore()
        fetcher = (HttpFetcher(http_allow_hosts, limits)
                   if "http" in self.allowed_capabilities else None)
        self._services = HostServices(limits=limits, kv=self.kv, fetcher=fetcher)
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        self._engine = wasmtime.Engine(config)
        self._tick_s = tick_s
        self._deadline_ticks = math.ceil(limits.timeout_s / tick_s) + 1
        # Compiled modules by wasm digest, least recently loaded evicted first.
        self._compiled: OrderedDict[str, wasmtime.Module] = OrderedDict()
        self._max_compiled = max(1, max_compiled_modules)
        self._pool: OrderedDict[_PoolKey, list[GuestInstance]] = OrderedDict()
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._stop_ticker = threading.Event()
        self._workers = WorkerPool(workers or min(32, (os.cpu_count() or 1) + 4),
                                   name="hanzocloud-ext")
        # One ticker per engine drives every store's wall-clock deadline.
        self._ticker = threading.Thread(target=self._tick, name="hanzocloud-ext-epoch",
                                        daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop_ticker.wait(self._tick_s):
            self._engine.increment_epoch()

    # -- loading -----------------------------------------------------------------------

    def load(self, directory: Path) -> LoadedModule:
        """Validate and compile the extension in `directory`; raise InvalidExtension."""
        self._check_open()
        directory = Path(directory)
        manifest = load_manifest(directory)
        ref = manifest.ref
        self.check_policy(manifest)
        path = directory / manifest.module
        try:
            size = path.stat().st_size
            if size > MAX_MODULE_BYTES:
                raise InvalidExtension(f"extension {ref}: {path} is {size} bytes, over the "
                                       f"{MAX_MODULE_BYTES}-byte limit", module=ref, cause="module")
            wasm = path.read_bytes()
        except OSError as exc:
            raise InvalidExtension(f"extension {ref}: cannot read {path} ({exc.strerror})",
                                   module=ref, cause="module") from None
        if not wasm.startswith(WASM_MAGIC):
            raise InvalidExtension(f"extension {ref}: {path} is not a WebAssembly binary",
                                   module=ref, cause="module")
        digest = hashlib.sha256(wasm).hexdigest()
        compiled = self._compile(ref, digest, wasm)
        check_module(compiled, manifest)
        return LoadedModule(manifest=manifest, directory=directory, sha256=digest,
                            capabilities=frozenset(manifest.capabilities), compiled=compiled)

    def check_policy(self, manifest: Manifest) -> None:
        """Raise InvalidExtension unless the operator allows the runtime and capabilities."""
        ref = manifest.ref
        if manifest.runtime not in self.allowed_runtimes:
            raise InvalidExtension(
                f"extension {ref}: runtime {manifest.runtime!r} is not allowed here "
                f"(allowed: {', '.join(self.allowed_runtimes) or 'none'})",
                module=ref, cause="runtime")
        denied = sorted(set(manifest.capabilities) - self.allowed_capabilities)
        if denied:
            raise InvalidExtension(
                f"extension {ref}: capability {denied[0]!r} is not allowed by the operator "
                f"(allowed: {', '.join(sorted(self.allowed_capabilities)) or 'none'})",
                module=ref, cause="capability")

    def _compile(self, ref: str, digest: str, wasm: bytes) -> wasmtime.Module:
        with self._lock:
            cached = self._compiled.get(digest)
            if cached is not None:
                self._compiled.move_to_end(digest)
                return cached
        try:
            compiled = wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            reason = str(exc).strip().splitlines()[0]
            raise InvalidExtension(f"extension {ref}: module does not compile: {reason}",
                                   module=ref, cause="module") from None
        with self._lock:
            compiled = self._compiled.setdefault(digest, compiled)
            self._compiled.move_to_end(digest)
            while len(self._compiled) > self._max_compiled:
                self._compiled.popitem(last=False)
            return compiled

    # -- calling -----------------------------------------------------------------------

    async def call(self, module: LoadedModule, export: str, envelope: dict[str, Any], *,
                   org: str) -> dict[str, Any]:
        """Run `export` on `envelope` for `org` in a worker thread; return the output object."""
        payload = self._encode(module, export, envelope, org)
        return await self._workers.submit(self._run, module, export, payload, org)

    def call_sync(self, module: LoadedModule, export: str, envelope: dict[str, Any], *,
                  org: str) -> dict[str, Any]:
        """Run a call on the current thread (blocking); async code should use `call`."""
        return self._run(module, export, self._encode(module, export, envelope, org), org)

    def _encode(self, module: LoadedModule, export: str, envelope: dict[str, Any],
                org: str) -> bytes:
        self._check_open()
        if not ORG_RE.fullmatch(org):
            raise InvalidArgument(f"invalid org slug {org!r}")
        if export not in module.manifest.exports:
            raise ExtensionNotFound(f"extension {module.ref} has no export {export!r} "
                                    f"(exports: {', '.join(module.exports)})")
        try:
            payload = msgspec.json.encode(envelope)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidArgument(f"envelope for {module.ref} is not JSON: {exc}") from None
        if len(payload) > self.limits.max_input_bytes:
            raise PayloadTooLarge(f"input of {len(payload)} bytes for {module.ref} exceeds "
                                  f"the limit of {self.limits.max_input_bytes} bytes")
        return payload

    def _run(self, module: LoadedModule, export: str, payload: bytes,
             org: str) -> dict[str, Any]:
        key: _PoolKey = (org, module.ref, module.sha256, module.capabilities)
        instance = self._acquire(key, module, org)
        try:
            raw = instance.invoke(export, payload)
            result = _decode_output(module.ref, export, raw)
        except BaseException:
            instance.close()  # never reuse an instance after a failed call
            raise
        self._release(key, instance)
        return result

    def _acquire(self, key: _PoolKey, module: LoadedModule, org: str) -> GuestInstance:
        with self._lock:
            idle = self._pool.get(key)
            if idle:
                self._idle -= 1
                instance = idle.pop()
                if instance.org == org:  # the key includes the org; this is a second lock
                    return instance
                instance.close()
        return GuestInstance(self._engine, module, org=org, services=self._services,
                             deadline_ticks=self._deadline_ticks)

    def _release(self, key: _PoolKey, instance: GuestInstance) -> None:
        evicted: list[GuestInstance] = []
        with self._lock:
            idle = self._pool.setdefault(key, [])
            self._pool.move_to_end(key)
            if self._closed.is_set() or len(idle) >= self.limits.max_idle_instances_per_module:
                evicted.append(instance)
            else:
                idle.append(instance)
                self._idle += 1
            while self._idle > self.limits.max_idle_instances:
                oldest_key, oldest = next(iter(self._pool.items()))
                if oldest:
                    evicted.append(oldest.pop(0))
                    self._idle -= 1
                if not oldest:
                    del self._pool[oldest_key]
        for item in evicted:
            item.close()

    def idle_instances(self, org: str | None = None) -> int:
        """How many pooled instances are idle (for `org`, or overall)."""
        with self._lock:
            return sum(len(v) for k, v in self._pool.items() if org is None or k[0] == org)

    # -- lifecycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise RuntimeError("the extension runtime is closed")

    def close(self) -> None:
        """Stop the ticker and workers and free every pooled instance; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        # Calls still running keep their deadline: the ticker stops only after the workers.
        self._workers.shutdown()
        self._stop_ticker.set()
        self._ticker.join()
        with self._lock:
            pooled = [i for idle in self._pool.values() for i in idle]
            self._pool.clear()
            self._idle = 0
        for instance in pooled:
            instance.close()
        if self._services.fetcher is not None:
            self._services.fetcher.close()

    def __enter__(self) -> ExtensionRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode_output(ref: str, export: str, raw: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ExtensionFailed(f"extension {ref} export {export!r}: output is not valid "
                              f"UTF-8 JSON ({exc})", module=ref, export=export,
                              cause="invalid_output") from None
    if not isinstance(value, dict):
        raise ExtensionFailed(f"extension {ref} export {export!r}: output must be a JSON "
                              f"object, got {type(value).__name__}", module=ref, export=export,
                              cause="invalid_output")
    return value

