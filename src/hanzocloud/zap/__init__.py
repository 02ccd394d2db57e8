"""ZAP: `.zap` schemas, the zapc code generator, and the RPC that carries typed calls.

The host needs four names: `ZapServer` (serve registered services), `ZapChannel` (call a
remote address; wrap it in a generated `<Name>RpcClient`), and `derive_service_key` /
`service_key` (the shared credential). See docs/zap.md.
"""

from __future__ import annotations

from hanzocloud.zap.channel import ZapChannel, parse_addr
from hanzocloud.zap.rpc import ZapServer
from hanzocloud.zap.runtime import Channel, MethodSpec
from hanzocloud.zap.schema import ZapSyntaxError
from hanzocloud.zap.wire import DEFAULT_MAX_FRAME, TOKEN_ENV, derive_service_key, service_key

__all__ = [
    "DEFAULT_MAX_FRAME",
    "TOKEN_ENV",
    "Channel",
    "MethodSpec",
    "ZapChannel",
    "ZapServer",
    "ZapSyntaxError",
    "derive_service_key",
    "parse_addr",
    "service_key",
]
