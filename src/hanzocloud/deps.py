"""Deps: the typed, frozen registry every `mount` receives (SPEC §3).

Each client resolves once, at startup, to one of three things: the in-process implementation
that the subsystem's own `mount` provides, a ZAP RPC client (when `CLOUD_<NAME>_ZAP_ADDR` is
set), or a fail-closed stub whose every call raises `SubsystemUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from hanzocloud.brand import Brand
from hanzocloud.config import Settings
from hanzocloud.errors import SubsystemUnavailable
from hanzocloud.events import EventBus
from hanzocloud.extensions import Extensions
from hanzocloud.keys import MasterKey
from hanzocloud.registry import ALWAYS_REMOTE, CLIENT_NAMES
from hanzocloud.storage import TenantStore

Mode = Literal["local", "remote", "disabled"]
RemoteFactory = Callable[[str, str], object]


class DisabledClient:
    """Fail-closed stand-in: every method raises SubsystemUnavailable naming the subsystem."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("__"):
            raise AttributeError(method)
        name = self._name

        async def unavailable(*_: Any, **__: Any) -> Any:
            raise SubsystemUnavailable(name)

        return unavailable

    def __repr__(self) -> str:
        return f"DisabledClient({self._name!r})"


class ClientRef:
    """A client slot in Deps; attribute access goes straight to the resolved implementation."""

    __slots__ = ("name", "mode", "_target")

    def __init__(self, name: str, mode: Mode, target: object) -> None:
        self.name = name
        self.mode: Mode = mode
        self._target = target

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target, attr)

    def _provide(self, impl: object) -> None:
        if self.mode != "local":
            raise RuntimeError(f"client '{self.name}' is {self.mode}, not provided in-process")
        if not isinstance(self._target, DisabledClient):
            raise RuntimeError(f"client '{self.name}' was already provided")
        self._target = impl

    @property
    def target(self) -> object:
        return self._target

    def __repr__(self) -> str:
        return f"ClientRef({self.name!r}, {self.mode})"


@dataclass(frozen=True, slots=True)
class Deps:
    """Configuration, logger, storage, events and one client per subsystem; built once."""

    settings: Settings
    brand: Brand
    log: Any
    tenants: TenantStore
    events: EventBus
    master: MasterKey
    extensions: Extensions
    iam: ClientRef
    kms: ClientRef
    base: ClientRef
    commerce: ClientRef
    ai: ClientRef
    ml: ClientRef
    auto: ClientRef
    mesh: ClientRef
    payments: ClientRef
    vault: ClientRef

    @property
    def issuer(self) -> str:
        """The token issuer: `--iam-issuer` or this process's own public URL."""
        return self.settings.iam_issuer or f"http://{self.settings.domain}"

    def client(self, name: str) -> ClientRef:
        """The client slot by name (for host wiring and health reporting)."""
        ref = getattr(self, name)
        assert isinstance(ref, ClientRef)
        return ref

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key derived from the master key for one named purpose.

        It changes when the master key rotates: use it for credentials and short-lived
        tokens, never to seal stored data (use `tenants.file_key` for that).
        """
        return self.master.derive(f"hanzocloud/v1/{purpose}".encode())


def resolve_clients(
    settings: Settings,
    *,
    local: frozenset[str],
    remote_factory: RemoteFactory | None,
) -> dict[str, ClientRef]:
    """Decide each client's mode: local if enabled here, remote if addressed, else disabled."""
    refs: dict[str, ClientRef] = {}
    addrs: Mapping[str, str] = settings.zap_addrs
    for name in CLIENT_NAMES:
        if name in local and name not in ALWAYS_REMOTE:
            refs[name] = ClientRef(name, "local", DisabledClient(name))
        elif name in addrs and remote_factory is not None:
            refs[name] = ClientRef(name, "remote", remote_factory(name, addrs[name]))
        else:
            refs[name] = ClientRef(name, "disabled", DisabledClient(name))
    return refs


def build_deps(
    settings: Settings,
    brand: Brand,
    tenants: TenantStore,
    master: MasterKey,
    events: EventBus,
    extensions: Extensions,
    *,
    local: frozenset[str],
    remote_factory: RemoteFactory | None = None,
) -> Deps:
    """Build the one Deps of this process."""
    refs = resolve_clients(settings, local=local, remote_factory=remote_factory)
    return Deps(
        settings=settings,
        brand=brand,
        log=structlog.get_logger("hanzocloud"),
        tenants=tenants,
        events=events,
        master=master,
        extensions=extensions,
        **refs,
    )
