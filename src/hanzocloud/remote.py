"""ZAP wiring for the host: RPC clients for subsystems that run elsewhere, and the listener.

Deps calls `RemoteClients.factory(name, addr)` for each client whose subsystem is not enabled
here but has a `CLOUD_<NAME>_ZAP_ADDR`; one pooled channel serves every service at an
address. `start_zap` serves this process's subsystems to other processes.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

from hanzocloud.errors import ConfigError
from hanzocloud.keys import MasterKey
from hanzocloud.zap import ZapChannel, ZapServer, service_key


def _rpc_class(name: str) -> type:
    try:
        module = importlib.import_module(f"hanzocloud.zap.gen.{name}")
    except ModuleNotFoundError:
        raise ConfigError(f"CLOUD_{name.upper()}_ZAP_ADDR is set, but '{name}' has no ZAP "
                          f"schema (schemas/{name}.zap) in this build") from None
    cls = getattr(module, f"{name.capitalize()}RpcClient", None)
    if not isinstance(cls, type):
        raise ConfigError(f"schemas/{name}.zap defines no interface {name.capitalize()}")
    return cls


@dataclass
class RemoteClients:
    """Owns the channels to remote subsystems; closed when the host stops."""

    master: MasterKey
    channels: dict[str, ZapChannel] = field(default_factory=dict)

    @property
    def key(self) -> bytes:
        return service_key(master_key=self.master.material, environ=os.environ)

    def factory(self, name: str, addr: str) -> object:
        """The generated RPC client for `name` at `addr` (one channel per address)."""
        cls = _rpc_class(name)
        channel = self.channels.get(addr)
        if channel is None:
            try:
                channel = ZapChannel(addr, key=self.key)
            except ValueError as exc:
                raise ConfigError(f"CLOUD_{name.upper()}_ZAP_ADDR: {exc}") from None
            self.channels[addr] = channel
        return cls(channel, service=name)

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        self.channels.clear()


async def start_zap(services: list[tuple[str, object, object]], master: MasterKey, *,
                    host: str, port: int) -> ZapServer:
    """Start the ZAP listener serving `(service, methods table, implementation)` triples."""
    server = ZapServer(key=service_key(master_key=master.material, environ=os.environ))
    for service, methods, impl in services:
        server.register(service, methods, impl)  # type: ignore[arg-type]
    await server.start(host, port)
    return server
