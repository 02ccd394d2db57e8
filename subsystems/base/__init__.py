"""base: a PocketBase-compatible data API over each org's encrypted SQLite (`base.db`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from hanzocloud.zap.gen.base import BASE_METHODS
from subsystems.base import filter_parse
from subsystems.base.client import LocalBase
from subsystems.base.handlers import Handlers
from subsystems.base.hooks import RecordHooks
from subsystems.base.pberrors import PocketBaseErrors
from subsystems.base.realtime import Broker
from subsystems.base.routes import routes
from subsystems.base.store import BaseStore

WARM_UP_DELAY = 1.0  # seconds after start


def mount(app: Any, deps: Any) -> None:
    """Install base: routes, PocketBase-shaped errors, realtime, and the `base` client."""
    store = BaseStore(deps.tenants)
    broker = Broker(store)
    hooks = RecordHooks(deps.extensions)
    app.routes(routes(Handlers(store, broker, hooks)))
    app.middleware(PocketBaseErrors)
    client = LocalBase(store, deps.tenants, hooks)
    app.provide(client)
    app.zap_service(BASE_METHODS, client)

    async def warm_parser() -> None:
        # Off the boot path: build the filter parser shortly after the listeners are up, so
        # neither the start nor the first filtered request waits for it.
        await asyncio.sleep(WARM_UP_DELAY)
        await asyncio.to_thread(filter_parse.warm_up)

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        delivery = asyncio.create_task(broker.run())
        warming = asyncio.create_task(warm_parser())
        try:
            yield
        finally:
            warming.cancel()
            broker.close()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(delivery, 5)

    app.lifespan(lifespan)
