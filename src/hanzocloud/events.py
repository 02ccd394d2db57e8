"""One in-process event bus. Every event is declared with a one-line docstring first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

Handler = Callable[[dict[str, Any]], Awaitable[None]]
log = structlog.get_logger("hanzocloud.events")


class EventBus:
    """Named events: `declare` once, `on` to subscribe, `emit` to deliver to every handler."""

    def __init__(self) -> None:
        self._docs: dict[str, str] = {}
        self._handlers: dict[str, list[Handler]] = {}

    def declare(self, name: str, doc: str) -> None:
        """Declare an event and say, in one line, when it fires."""
        if name in self._docs and self._docs[name] != doc:
            raise ValueError(f"event '{name}' is already declared differently")
        if not doc.strip():
            raise ValueError(f"event '{name}' needs a one-line docstring")
        self._docs[name] = doc
        self._handlers.setdefault(name, [])

    def on(self, name: str, handler: Handler) -> None:
        """Subscribe to a declared event."""
        if name not in self._docs:
            raise KeyError(f"unknown event '{name}'; declared: {', '.join(sorted(self._docs))}")
        self._handlers[name].append(handler)

    async def emit(self, name: str, payload: dict[str, Any]) -> None:
        """Deliver to every handler; a failing handler is logged and does not stop the others."""
        if name not in self._docs:
            raise KeyError(f"unknown event '{name}'")
        handlers = self._handlers[name]
        if not handlers:
            return
        results = await asyncio.gather(*(h(payload) for h in handlers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("event_handler_failed", event_name=name, error=repr(result))

    @property
    def declared(self) -> dict[str, str]:
        return dict(self._docs)
