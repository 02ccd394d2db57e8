"""base benchmark: authenticated record reads through the whole stack, against a bare ceiling.

    .venv/bin/python bench/base.py [--tenants 100] [--connections 32] [--seconds 5] [--rounds 3]

Setup: 100 orgs are created through iam's service layer in a data dir; then a real server
process (`hanzocloud --enable=iam,base,gateway`, uvicorn on a free port) serves them. Each org
gets a real access token (password grant), a collection `items` and 60 records (one batch).

Measured, each for a fixed time at N keep-alive connections from one client process, in
`--rounds` rounds (the median of the rounds' ratios is printed last):
  ceiling   a bare Starlette JSON endpoint (uvicorn, separate process, same settings)
  get       GET /v1/base/api/collections/items/records/{id} — random tenant, random record
  list      GET …/records?filter=score>=10&sort=-score&perPage=30 — random tenant
  stack     GET /v1/base/api/health with the same tokens: the host, gateway and JWT check
            without any database work (how much of the gap is the stack, how much is SQL)
Every request through the stack is authenticated (the gateway verifies the JWT), reaches a
SQLCipher-encrypted tenant database, and applies the collection's API rules.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench password 12345"
ENV = {**os.environ, "CLOUD_IAM_ARGON2_TIME_COST": "1", "CLOUD_IAM_ARGON2_MEMORY_KIB": "8192"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_bare(port: int) -> None:
    """The ceiling: one JSON route on Starlette under uvicorn, nothing else."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    record = {"collectionId": "c" * 15, "collectionName": "items", "id": "a" * 15,
              "created": "2026-01-01 00:00:00.000Z", "updated": "2026-01-01 00:00:00.000Z",
              "name": "item", "score": 1}

    async def item(_: Any) -> JSONResponse:
        return JSONResponse(record)

    app = Starlette(routes=[Route("/item", item)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({proc.returncode})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


async def bootstrap(data_dir: Path, tenants: int) -> dict[str, str]:
    """Create the orgs with iam's service layer; returns org -> first-party client id."""
    from hanzocloud import logging as cloud_logging
    from hanzocloud.config import load_settings
    from hanzocloud.host import build_host

    cloud_logging.configure("warning")

    settings = load_settings({"data_dir": data_dir, "dev": True, "enable": "iam"}, environ={})
    host = build_host(settings)
    apps = {}
    async with host.lifespan():
        iam = host.deps.iam.target
        for i in range(tenants):
            org = f"bench{i:03d}"
            made = await iam.bootstrap(org, email=f"owner@{org}.test", password=PASSWORD)
            apps[org] = made["client_id"]
    return apps


async def prepare(public: str, apps: dict[str, str]) -> list[dict[str, Any]]:
    """Token, collection and 60 records per org; returns what the load phases need."""
    tenants = []
    async with httpx.AsyncClient(base_url=public, timeout=60) as http:
        for org, client_id in apps.items():
            r = await http.post("/v1/iam/oauth/token", data={
                "grant_type": "password", "client_id": client_id,
                "username": f"owner@{org}.test", "password": PASSWORD})
            r.raise_for_status()
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = await http.post("/v1/base/api/collections", headers=auth, json={
                "name": "items", "listRule": "", "viewRule": "@request.auth.id != ''",
                "fields": [{"name": "name", "type": "text"}, {"name": "score", "type": "number"}]})
            r.raise_for_status()
            ids = []
            for chunk in range(2):
                reqs = [{"method": "POST", "url": "/api/collections/items/records",
                         "body": {"name": f"item {n}", "score": n}}
                        for n in range(chunk * 30, chunk * 30 + 30)]
                r = await http.post("/v1/base/api/batch", headers=auth, json={"requests": reqs})
                r.raise_for_status()
                ids += [x["body"]["id"] for x in r.json()]
            tenants.append({"auth": auth["Authorization"], "ids": ids})
    return tenants


def request_bytes(path: str, auth: str | None) -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if auth:
        head += f"Authorization: {auth}\r\n"
    return (head + "\r\n").encode()


async def one_connection(port: int, requests: list[bytes], until: float,
                         latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            payload = random.choice(requests)
            started = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def load(port: int, requests: list[bytes], connections: int,
               seconds: float) -> dict[str, float]:
    """Run keep-alive connections for `seconds` (after a 1 s warm-up)."""
    await asyncio.gather(*(one_connection(port, requests, time.perf_counter() + 1.0, [], [])
                           for _ in range(connections)))
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(one_connection(port, requests, started + seconds, latencies, errors)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {"rps": len(latencies) / elapsed, "p99_ms": p99 * 1000, "errors": len(errors),
            "n": len(latencies)}


def report(name: str, result: dict[str, float], ceiling: float | None = None) -> None:
    ratio = f"  {result['rps'] / ceiling:5.2f}x ceiling" if ceiling else ""
    print(f"{name:<9} {result['rps']:9.0f} req/s   p99 {result['p99_ms']:7.2f} ms   "
          f"({int(result['n'])} requests, {int(result['errors'])} errors){ratio}", flush=True)


async def main(args: argparse.Namespace) -> None:
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(bare_port)])
    data_dir = Path(tempfile.mkdtemp(prefix="base-bench-"))
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("CLOUD_IAM_ARGON2")})
    started = time.monotonic()
    apps = await bootstrap(data_dir, args.tenants)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hanzocloud", "--enable=iam,base,gateway", "--dev",
         f"--data-dir={data_dir}", f"--listen=127.0.0.1:{port}",
         "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0",
         "--log-level=warning"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        public = f"http://127.0.0.1:{port}"
        wait_http(public + "/v1/brand", server)
        wait_http(f"http://127.0.0.1:{bare_port}/item", bare)
        tenants = await prepare(public, apps)
        print(f"setup: {args.tenants} tenants x 60 records in {time.monotonic() - started:.1f} s;"
              f" {args.connections} connections, {args.seconds:.0f} s per phase", flush=True)
        gets = [request_bytes(f"/v1/base/api/collections/items/records/{rid}", t["auth"])
                for t in tenants for rid in t["ids"]]
        lists = [request_bytes("/v1/base/api/collections/items/records?perPage=30&sort=-score"
                               "&filter=score%3E%3D10", t["auth"]) for t in tenants]
        health = [request_bytes("/v1/base/api/health", t["auth"]) for t in tenants]
        phases = [("ceiling", bare_port, [request_bytes("/item", None)]),
                  ("stack", port, health), ("get", port, gets), ("list 30", port, lists)]
        ratios: dict[str, list[float]] = {name: [] for name, _, _ in phases[1:]}
        for round_ in range(1, args.rounds + 1):
            # The phases alternate round by round, so a machine whose speed drifts during the
            # run weighs on the ceiling and on the stack alike.
            if args.rounds > 1:
                print(f"round {round_}", flush=True)
            ceiling: dict[str, float] = {}
            for name, target, requests in phases:
                result = await load(target, requests, args.connections, args.seconds)
                if name == "ceiling":
                    ceiling = result
                else:
                    ratios[name].append(result["rps"] / ceiling["rps"])
                report(name, result, ceiling["rps"] if name != "ceiling" else None)
        if args.rounds > 1:
            print("median of the rounds' ratios: " + ", ".join(
                f"{name} {statistics.median(r):.2f}x" for name, r in ratios.items()), flush=True)
    finally:
        for proc in (server, bare):
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(parser.parse_args()))
    print(json.dumps({"done": True}))
