"""Fixtures: the test schema compiled to a module, and a loopback server running Echo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hanzocloud.zap import ZapChannel, ZapServer

from .helpers import KEY, EchoService, compile_test_schema


@pytest.fixture(scope="session")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zapgen")


@pytest.fixture(scope="session")
def kitchen(gen_dir: Path) -> ModuleType:
    return compile_test_schema("kitchen", gen_dir)


@pytest.fixture
async def echo_server(kitchen: ModuleType) -> AsyncIterator[tuple[ZapServer, EchoService]]:
    impl = EchoService(kitchen)
    server = ZapServer(key=KEY, max_frame=1 << 20)
    server.register("echo", kitchen.ECHO_METHODS, impl)
    await server.start("127.0.0.1", 0)
    yield server, impl
    await server.close()


@pytest.fixture
async def echo_client(
    kitchen: ModuleType, echo_server: tuple[ZapServer, EchoService]
) -> AsyncIterator[Any]:
    channel = ZapChannel(f"127.0.0.1:{echo_server[0].port}", key=KEY, pool_size=1)
    yield kitchen.EchoRpcClient(channel)
    await channel.close()
