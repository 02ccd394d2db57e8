"""Extension runtime benchmark: a wasm route against the same logic in Python, and per-call cost.

    .venv/bin/python bench/ext.py [--requests 3000] [--concurrency 16] [--iterations 20000]
                                  [--repeats 5] [--skip-http]

Part 1 serves two routes from one uvicorn process on a free port (started as a child
process, so client and server do not share a GIL): `/wasm/{item}` runs the echo-wat example,
`/native/{item}` builds the same envelope and answers the same JSON in Python. The client
sends a bounded number of requests to each and prints requests per second.

Part 2 measures `ExtensionRuntime` in-process on a trivial export (returns a constant):
the synchronous core (`call_sync`), the async API awaited one call at a time, and the
async API with many calls in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import wasmtime

ROOT = Path(__file__).resolve().parents[1]
ECHO = ROOT / "examples" / "ext" / "echo-wat"

TRIVIAL_WAT = """
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\\"status\\":200}")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func (export "handle") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 14))))
"""


def build_app() -> Any:
    """The benchmark app: a wasm route and its Python twin, behind a fixed identity."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send

    from hanzocloud.ext import ExtensionRuntime, build_envelope, build_response, module_endpoint
    from hanzocloud.identity import Identity, current_identity

    runtime = ExtensionRuntime()
    echo = runtime.load(ECHO)

    async def native(request: Request) -> Response:
        envelope = await build_envelope(request, current_identity.get(),
                                        max_body_bytes=runtime.limits.max_input_bytes)
        output = {"status": 200,
                  "headers": {"content-type": "application/json", "x-echo": "wat"},
                  "body": envelope}
        return build_response(echo, "handle", output)

    class Gateway:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            token = current_identity.set(Identity(org="bench", user="u-1",
                                                  email="bench@example.test"))
            try:
                await self.app(scope, receive, send)
            finally:
                current_identity.reset(token)

    app = Starlette(routes=[
        Route("/wasm/{item}", module_endpoint(runtime, echo, "handle"), methods=["POST"]),
        Route("/native/{item}", native, methods=["POST"]),
    ])
    app.add_middleware(Gateway)
    return app


def serve(port: int) -> None:
    """Child process: run uvicorn with the benchmark app."""
    import uvicorn

    uvicorn.run(build_app(), host="127.0.0.1", port=port, log_level="error", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def hammer(url: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    """Send `requests` POSTs with `concurrency` in flight; return req/s and latencies."""
    latencies: list[float] = []
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            for n in remaining:
                started = time.perf_counter()
                response = await client.post(f"{url}/{n}?q={n}", json={"n": n})
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or response.json()["body"] != {"n": n}:
                    raise RuntimeError(f"bad answer from {url}: {response.status_code}")

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    return requests / elapsed, latencies


def http_bench(requests: int, concurrency: int) -> None:
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port,),
                                                          daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(f"{base}/native/0", json={"n": 0}, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("benchmark server did not start") from None
                time.sleep(0.1)
        print(f"HTTP: {requests} requests per route, {concurrency} in flight, "
              f"uvicorn in a child process")
        for route in ("wasm", "native"):  # warm both, then measure
            asyncio.run(hammer(f"{base}/{route}", min(200, requests), concurrency))
        results = {}
        for route in ("wasm", "native"):
            rate, latencies = asyncio.run(hammer(f"{base}/{route}", requests, concurrency))
            results[route] = rate
            p50 = statistics.median(latencies) * 1e3
            p99 = sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1e3
            print(f"  {route:<7} {rate:8.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
        print(f"  wasm/native throughput: {results['wasm'] / results['native']:.2f}")
    finally:
        server.terminate()
        server.join(timeout=10)


def inprocess_bench(iterations: int, repeats: int) -> None:
    from hanzocloud.ext import ExtensionRuntime

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "trivial.wasm").write_bytes(wasmtime.wat2wasm(TRIVIAL_WAT))
        (directory / "extension.json").write_text(
            '{"name":"trivial","version":"1.0.0","runtime":"wasm",'
            '"module":"trivial.wasm","exports":["handle"]}')
        runtime = ExtensionRuntime()
        try:
            module = runtime.load(directory)
            envelope: dict[str, Any] = {"method": "GET", "path": "/x"}

            def core() -> float:
                started = time.perf_counter()
                for _ in range(iterations):
                    runtime.call_sync(module, "handle", envelope, org="bench")
                return (time.perf_counter() - started) / iterations * 1e6

            async def sequential() -> float:
                n = max(iterations // 4, 1000)
                started = time.perf_counter()
                for _ in range(n):
                    await runtime.call(module, "handle", envelope, org="bench")
                return (time.perf_counter() - started) / n * 1e6

            async def concurrent() -> float:
                batch = 64
                rounds = max(iterations // 2 // batch, 16)
                started = time.perf_counter()
                for _ in range(rounds):
                    await asyncio.gather(*[runtime.call(module, "handle", envelope, org="bench")
                                           for _ in range(batch)])
                return (time.perf_counter() - started) / (rounds * batch) * 1e6

            try:
                import uvloop

                run_async: Any = uvloop.run
                loop_name = "uvloop"
            except ImportError:
                run_async, loop_name = asyncio.run, "asyncio"
            core()  # warm the pool and the caches
            measures = [
                ("call_sync: limits, copy in, guest call, copy out, JSON", core),
                (f"await call, one at a time ({loop_name})", lambda: run_async(sequential())),
                (f"await call, 64 in flight ({loop_name}, amortised)",
                 lambda: run_async(concurrent())),
            ]
            rows = [(label, sorted(measure() for _ in range(repeats)))
                    for label, measure in measures]
        finally:
            runtime.close()
    print(f"In-process per-call cost of a trivial export, median of {repeats} runs "
          f"(min-max); target < 50 us:")
    for label, values in rows:
        print(f"  {label:<58} {statistics.median(values):7.1f} us  "
              f"({values[0]:.1f}-{values[-1]:.1f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_http:
        http_bench(args.requests, args.concurrency)
    inprocess_bench(args.iterations, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
