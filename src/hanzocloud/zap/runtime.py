"""What generated ZAP modules import: sized integer types, MethodSpec and the Channel protocol."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

import msgspec

# Sized integers are plain ints to Python; the bounds are checked when a message is decoded.
Int8 = Annotated[int, msgspec.Meta(ge=-(2**7), le=2**7 - 1)]
Int16 = Annotated[int, msgspec.Meta(ge=-(2**15), le=2**15 - 1)]
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
UInt8 = Annotated[int, msgspec.Meta(ge=0, le=2**8 - 1)]
UInt16 = Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1)]
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
# msgpack cannot carry more than 2**64 - 1 (and msgspec bounds stop at int64), so only ge=0.
UInt64 = Annotated[int, msgspec.Meta(ge=0)]

R = TypeVar("R", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One remotely callable method: wire name, params/result structs, and its invoker."""

    name: str
    params: type[msgspec.Struct]
    result: type[msgspec.Struct]
    # invoke(impl, params) awaits the implementation and wraps its return in `result`.
    invoke: Callable[[Any, Any], Awaitable[msgspec.Struct]]


class Channel(Protocol):
    """Carries one call to a remote service; `ZapChannel` is the real one."""

    async def call(
        self,
        service: str,
        method: str,
        params: msgspec.Struct,
        result: type[R],
        *,
        timeout: float | None = None,
    ) -> R:
        """Send `params` to `service.method` and decode the reply as `result`."""
        ...
