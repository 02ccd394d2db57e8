"""Benchmark one trivial method: direct call, ZAP RPC, and HTTP+JSON (Starlette + uvicorn).

Run: .venv/bin/python bench/zap.py [--seconds 2]. Server and client share one event loop in
every mode, so the figures compare protocol overhead, not process layouts.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hanzocloud.zap import ZapChannel, ZapServer
from hanzocloud.zap.codegen import generate
from hanzocloud.zap.parser import parse

SCHEMA = "interface Bench\n  echo (text Text) -> (text Text)\n"
KEY = b"bench-key"


class BenchImpl:
    """The method under test: returns its argument."""

    async def echo(self, text: str) -> str:
        return text


def load_generated() -> Any:
    """Compile the bench schema with zapc into a temp dir and import it."""
    out = Path(tempfile.mkdtemp(prefix="zapbench"))
    source = generate(parse(SCHEMA, path="bench.zap"), SCHEMA, schema_rel="bench/bench.zap")
    (out / "zapbench_gen.py").write_text(source)
    sys.path.insert(0, str(out))
    return importlib.import_module("zapbench_gen")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(
    call: Callable[[], Awaitable[Any]], in_flight: int, seconds: float
) -> dict[str, float]:
    """Run `in_flight` workers calling `call` for `seconds`; calls/s and latency percentiles."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    for _ in range(50):  # warm up connections and caches
        await call()
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100)
    return {"rate": len(latencies) / elapsed, "p50": cuts[49] * 1e6, "p99": cuts[98] * 1e6}


async def main(seconds: float) -> None:
    gen = load_generated()
    impl = BenchImpl()

    server = ZapServer(key=KEY)
    server.register("bench", gen.BENCH_METHODS, impl)
    await server.start("127.0.0.1", 0)
    channel = ZapChannel(f"127.0.0.1:{server.port}", key=KEY, pool_size=1)
    rpc = gen.BenchRpcClient(channel)

    async def http_echo(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"text": await impl.echo(body["text"])})

    port = free_port()
    app = Starlette(routes=[Route("/v1/bench/echo", http_echo, methods=["POST"])])
    http_server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(http_server.serve())
    while not http_server.started:
        await asyncio.sleep(0.01)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits)

    async def via_http() -> str:
        response = await http.post("/v1/bench/echo", json={"text": "hello"})
        return str(response.json()["text"])

    modes: dict[str, Callable[[], Awaitable[Any]]] = {
        "in-process": lambda: impl.echo("hello"),
        "zap": lambda: rpc.echo("hello"),
        "http+json": via_http,
    }
    results: dict[tuple[str, int], dict[str, float]] = {}
    print(f"{'mode':<11} {'in flight':>9} {'calls/s':>10} {'p50 us':>9} {'p99 us':>9}")
    try:
        for in_flight in (1, 64):
            for name, call in modes.items():
                r = await measure(call, in_flight, seconds)
                results[(name, in_flight)] = r
                figures = f"{r['rate']:>10.0f} {r['p50']:>9.1f} {r['p99']:>9.1f}"
                print(f"{name:<11} {in_flight:>9} {figures}")
        for in_flight in (1, 64):
            ratio = results[("zap", in_flight)]["rate"] / results[("http+json", in_flight)]["rate"]
            print(f"zap / http+json throughput at {in_flight} in flight: {ratio:.1f}x")
    finally:
        await http.aclose()
        await channel.close()
        await server.close()
        http_server.should_exit = True
        await serving


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per mode and concurrency")
    asyncio.run(main(parser.parse_args().seconds))
