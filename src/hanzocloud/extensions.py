"""The host side of the extension runtime (SPEC §8): module routes, org uploads and hooks.

One `Extensions` per process, on `deps.extensions`. Operators mount modules as routes
(`app.module("POST /v1/x", "wasm", dir)` or `routes.toml` in `--ext-dir`); each org uploads
its own modules (`/v1/ext/modules`, `hanzocloud ext`), runs them at `/v1/ext/run/{name}/{export}`,
and any of its modules exporting a hook name (`base_before_create`, `gateway_policy`, …) is
called by the subsystem that fires that hook, for that org only.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import structlog

from hanzocloud.config import Settings, read_toml
from hanzocloud.errors import ConfigError
from hanzocloud.ext import (
    ExtensionRuntime,
    HookResult,
    InvalidExtension,
    LoadedModule,
    ModuleStore,
    module_endpoint,
    run_hook,
)
from hanzocloud.ext.limits import KNOWN_CAPABILITIES
from hanzocloud.routing import PolicyRoute, route
from hanzocloud.storage import TenantStore

log = structlog.get_logger("hanzocloud.extensions")
ROUTES_FILE = "routes.toml"
RECHECK_SECONDS = 1.0
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


class TenantKv:
    """The `kv_get`/`kv_set` store of extensions: a table in the org's own encrypted `ext.db`."""

    def __init__(self, tenants: TenantStore) -> None:
        self.tenants = tenants
        self._lock = threading.Lock()  # guest calls arrive on worker threads

    def _conn(self, org: str) -> Any:
        conn = self.tenants.connect_sync(org, "ext")
        conn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        return conn

    def get(self, org: str, key: str) -> bytes | None:
        with self._lock:
            conn = self._conn(org)
            try:
                row = conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
            finally:
                conn.close()
        return None if row is None else bytes(row[0])

    def set(self, org: str, key: str, value: bytes) -> None:
        with self._lock:
            conn = self._conn(org)
            try:
                conn.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (key, value))
                conn.commit()
            finally:
                conn.close()


def parse_spec(spec: str) -> tuple[str, str]:
    """`"POST /v1/x"` → ("POST", "/v1/x")."""
    method, _, path = spec.strip().partition(" ")
    method = method.upper()
    if method not in _METHODS or not path.startswith("/"):
        raise ConfigError(f"extension route '{spec}' must look like 'POST /v1/path'")
    return method, path.strip()


class Extensions:
    """The process's extension runtime, org module store and loaded-module cache."""

    def __init__(self, settings: Settings, tenants: TenantStore) -> None:
        caps = frozenset(c.strip() for c in settings.ext_capabilities.split(",") if c.strip())
        unknown = sorted(caps - KNOWN_CAPABILITIES)
        if unknown:  # a config error belongs at startup, even though the runtime is lazy
            raise ConfigError(f"--ext-capabilities: unknown capability {unknown[0]!r} "
                              f"(known: {', '.join(sorted(KNOWN_CAPABILITIES))})")
        self._caps = caps
        self._hosts = [h.strip() for h in settings.ext_http_allow.split(",") if h.strip()]
        self._tenants = tenants
        self._runtime: ExtensionRuntime | None = None
        self.store = ModuleStore(settings.data_dir)
        self.ext_dir = settings.ext_dir
        self._org_cache: dict[str, tuple[tuple[int, ...], list[LoadedModule]]] = {}
        self._checked: dict[str, float] = {}

    @property
    def runtime(self) -> ExtensionRuntime:
        """The wasm runtime, started on first use: its epoch ticker and worker threads cost
        wake-ups every few milliseconds, which a process without extensions should not pay."""
        if self._runtime is None:
            self._runtime = ExtensionRuntime(allowed_capabilities=self._caps,
                                             http_allow_hosts=self._hosts,
                                             kv=TenantKv(self._tenants))
        return self._runtime

    def invalidate(self, org: str) -> None:
        """Forget the cached module list of `org` (after an install or removal)."""
        self._org_cache.pop(org, None)
        self._checked.pop(org, None)

    def load_dir(self, directory: Path) -> LoadedModule:
        """Load (and compile, cached by digest) the module in `directory`."""
        return self.runtime.load(directory)

    def route(self, spec: str, runtime: str, directory: Path | str, *, export: str | None = None,
              policy: str = "authenticated") -> PolicyRoute:
        """A route serving one export of a module: the engine behind `app.module(...)`."""
        if runtime not in self.runtime.allowed_runtimes:
            raise ConfigError(f"extension route '{spec}': runtime '{runtime}' is not allowed "
                              f"(allowed: {', '.join(sorted(self.runtime.allowed_runtimes))})")
        method, path = parse_spec(spec)
        module = self.load_dir(Path(directory))
        chosen = export or module.exports[0]
        endpoint = module_endpoint(self.runtime, module, chosen)
        return route(path, endpoint, methods=[method], policy=policy,
                     summary=f"extension {module.ref}:{chosen}")

    def operator_routes(self) -> list[PolicyRoute]:
        """Routes declared in `--ext-dir/routes.toml` (`[[route]]`: route, module, export)."""
        if self.ext_dir is None:
            return []
        file = self.ext_dir / ROUTES_FILE
        data = read_toml(file, option="--ext-dir")
        routes = []
        for entry in data.get("route", []):
            try:
                spec, module = str(entry["route"]), str(entry["module"])
            except (KeyError, TypeError):
                raise ConfigError(f"{file}: each [[route]] needs 'route' and 'module'") from None
            method, path = parse_spec(spec)
            if not path.startswith("/v1/ext/"):
                raise ConfigError(f"{file}: operator route {path} must live under /v1/ext/")
            routes.append(self.route(spec, str(entry.get("runtime", "wasm")),
                                     self.ext_dir / module, export=entry.get("export"),
                                     policy=str(entry.get("policy", "authenticated"))))
        return routes

    def _stamp(self, org: str) -> tuple[int, ...]:
        root = self.store.data_dir / "orgs" / org / "ext"
        try:
            stamps = [root.stat().st_mtime_ns]
            stamps += [p.stat().st_mtime_ns for p in sorted(root.iterdir()) if p.is_dir()]
        except FileNotFoundError:
            return ()
        return tuple(stamps)

    def org_modules(self, org: str) -> list[LoadedModule]:
        """The latest version of each module the org installed (cached until it changes).

        The folder is re-checked at most once per `RECHECK_SECONDS` per org, so the hot path
        (a hook lookup on every request) costs a dict lookup; uploads through this process
        invalidate at once, and `hanzocloud ext` from another process shows within a second.
        """
        cached = self._org_cache.get(org)
        now = time.monotonic()
        if cached is not None and now - self._checked.get(org, 0.0) < RECHECK_SECONDS:
            return cached[1]
        self._checked[org] = now
        stamp = self._stamp(org)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        # `list` sorts each name's versions in order, so the highest one wins.
        latest = {item.manifest.name: item for item in self.store.list(org)}
        modules: list[LoadedModule] = []
        for item in latest.values():
            try:
                modules.append(self.load_dir(item.directory))
            except InvalidExtension as exc:
                # One module that no longer loads (the operator narrowed its policy, say)
                # must not fail every request of its org, module management included.
                log.warning("extension_skipped", org=org, module=item.ref, error=exc.message)
        self._org_cache[org] = (stamp, modules)
        return modules

    def org_module(self, org: str, name: str) -> LoadedModule:
        """One of the org's modules by name, latest version."""
        return self.load_dir(self.store.get(org, name).directory)

    async def run_hooks(self, org: str, hook: str, payload: dict[str, Any]) -> list[HookResult]:
        """Run every module of `org` exporting `hook`, in name order, stopping at a deny."""
        results: list[HookResult] = []
        for module in sorted(self.org_modules(org), key=lambda m: m.manifest.name):
            if hook not in module.exports:
                continue
            result = await run_hook(self.runtime, module, hook, payload, org=org)
            results.append(result)
            if not result.allowed:
                break
            if result.record is not None:
                payload = {**payload, "record": result.record}
        return results

    def has_hook(self, org: str, hook: str) -> bool:
        """Whether any module of `org` exports `hook` (cheap: uses the cache)."""
        return any(hook in m.exports for m in self.org_modules(org))

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
