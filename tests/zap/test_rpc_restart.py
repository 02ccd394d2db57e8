"""A ZAP server process dies mid-call: callers get SubsystemUnavailable fast, then recover."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from hanzocloud.errors import SubsystemUnavailable
from hanzocloud.zap import ZapChannel

from .helpers import KEY, free_port

SERVER = """
import asyncio, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import helpers, zaptest_kitchen
from hanzocloud.zap import ZapServer

async def main():
    server = ZapServer(key=helpers.KEY)
    server.register("echo", zaptest_kitchen.ECHO_METHODS, helpers.EchoService(zaptest_kitchen))
    await server.start("127.0.0.1", int(sys.argv[3]))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def spawn(gen_dir: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(gen_dir), str(Path(__file__).parent), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def port() -> int:
    return free_port()


async def test_killed_server_fails_calls_fast_and_recovers(
    kitchen: ModuleType, gen_dir: Path, port: int
) -> None:
    proc = spawn(gen_dir, port)
    channel = ZapChannel(f"127.0.0.1:{port}", key=KEY, pool_size=2, backoff_max=0.3)
    client = kitchen.EchoRpcClient(channel)
    try:
        assert await client.echo("before") == "before"
        calls = [asyncio.create_task(client.sleep(20_000, timeout=10)) for _ in range(4)]
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        proc.kill()
        proc.wait()
        for call in calls:
            with pytest.raises(SubsystemUnavailable) as info:
                await call
            assert info.value.subsystem == "echo"
        assert time.perf_counter() - started < 2.0  # promptly, far inside the 10 s deadline
        with pytest.raises(SubsystemUnavailable):
            await client.echo("while down")

        proc = await asyncio.to_thread(spawn, gen_dir, port)
        deadline = time.perf_counter() + 10
        while True:
            try:
                assert await client.echo("after") == "after"
                break
            except SubsystemUnavailable:
                assert time.perf_counter() < deadline, "never reconnected"
                await asyncio.sleep(0.05)
        results = await asyncio.gather(*(client.echo(str(i)) for i in range(20)))
        assert results == [str(i) for i in range(20)]
    finally:
        await channel.close()
        proc.kill()
        proc.wait()
