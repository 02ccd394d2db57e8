"""Benchmark kms: transit encrypt/decrypt in-process and over HTTP, and secret reads.

Run: .venv/bin/python bench/kms.py [--seconds 1.5]. One process, one event loop: the real
host (iam, kms, gateway) in a temp data dir, served by uvicorn on a free local port, with
an httpx client and a real iam token. Baselines measured in the same run: raw AES-256-GCM
from `cryptography` (what the crypto itself costs) and the in-process Deps client (what
kms adds before HTTP does). Every decrypt and secret read writes an audit row, so those
are write transactions on the org's SQLCipher file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hanzocloud import logging as cloud_logging
from hanzocloud.identity import Identity, current_identity
from hanzocloud.keys import MasterKey

# The test support builds the real host and signs a user in through iam's password grant;
# reusing it keeps this script free of a second copy of that setup.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "_support"))
from cloud import Cloud, running_cloud  # noqa: E402

PAYLOAD = secrets.token_bytes(64)
ORG = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(call: Callable[[], Awaitable[Any]], seconds: float,
                  in_flight: int = 1) -> dict[str, float]:
    """Run `in_flight` workers calling `call` for `seconds`: ops/s and latency percentiles."""
    latencies: list[float] = []
    for _ in range(20):  # warm connections, handles and caches
        await call()
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100)
    return {"rate": len(latencies) / elapsed, "p50": cuts[49] * 1e6, "p99": cuts[98] * 1e6}


async def run(cloud: Cloud, seconds: float) -> None:
    """Set up a key and a secret, then time every mode and print the table and ratios."""
    headers = await cloud.headers(org=ORG, user="bench", roles=["owner"])
    token = current_identity.set(Identity(org=ORG, user="bench"))
    kms: Any = cloud.host.deps.kms.target  # the in-process implementation, called directly
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(cloud.host.public, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1/kms", headers=headers,
                             limits=httpx.Limits(max_connections=16))
    try:
        await http.post("/transit/keys/bench", json={"type": "aes256-gcm"})
        await http.put("/secrets/app/db", json={"value": secrets.token_urlsafe(32)})
        ciphertext = await kms.encrypt("bench", PAYLOAD)
        body = {"plaintext": base64.b64encode(PAYLOAD).decode()}
        aes, nonce = AESGCM(secrets.token_bytes(32)), secrets.token_bytes(12)
        sealed = aes.encrypt(nonce, PAYLOAD, None)

        async def raw_encrypt() -> bytes:
            return aes.encrypt(nonce, PAYLOAD, None)

        async def raw_decrypt() -> bytes:
            return aes.decrypt(nonce, sealed, None)

        async def http_call(method: str, path: str, json: Any = None) -> None:
            response = await http.request(method, path, json=json)
            assert response.status_code == 200, response.text

        modes: list[tuple[str, Callable[[], Awaitable[Any]], int]] = [
            ("raw aes-gcm encrypt", raw_encrypt, 1),
            ("raw aes-gcm decrypt", raw_decrypt, 1),
            ("in-process encrypt", lambda: kms.encrypt("bench", PAYLOAD), 1),
            ("in-process decrypt", lambda: kms.decrypt("bench", ciphertext), 1),
            ("in-process get_secret", lambda: kms.get_secret("kms://hanzo/bench/app/db"), 1),
            ("http encrypt", lambda: http_call("POST", "/transit/encrypt/bench", body), 1),
            ("http decrypt",
             lambda: http_call("POST", "/transit/decrypt/bench", {"ciphertext": ciphertext}), 1),
            ("http secret read", lambda: http_call("GET", "/secrets/app/db"), 1),
            ("http encrypt x16", lambda: http_call("POST", "/transit/encrypt/bench", body), 16),
            ("http secret read x16", lambda: http_call("GET", "/secrets/app/db"), 16),
        ]
        results: dict[str, dict[str, float]] = {}
        print(f"{'mode':<24} {'ops/s':>10} {'p50 us':>10} {'p99 us':>10}")
        for name, call, in_flight in modes:
            r = results[name] = await measure(call, seconds, in_flight)
            print(f"{name:<24} {r['rate']:>10.0f} {r['p50']:>10.1f} {r['p99']:>10.1f}")

        def ratio(a: str, b: str) -> str:
            return f"{results[a]['rate'] / results[b]['rate']:.1f}x"

        print(f"raw aes-gcm / in-process encrypt: "
              f"{ratio('raw aes-gcm encrypt', 'in-process encrypt')}")
        print(f"in-process / http encrypt:        {ratio('in-process encrypt', 'http encrypt')}")
        print(f"in-process / http decrypt:        {ratio('in-process decrypt', 'http decrypt')}")
        print(f"in-process / http secret read:    "
              f"{ratio('in-process get_secret', 'http secret read')}")
        print(f"http encrypt / decrypt (audited): {ratio('http encrypt', 'http decrypt')}")
        read = results["http secret read"]
        print(f"secret read over http: p50 {read['p50'] / 1000:.2f} ms, "
              f"p99 {read['p99'] / 1000:.2f} ms")
    finally:
        current_identity.reset(token)
        await http.aclose()
        server.should_exit = True
        await serving


async def main(seconds: float) -> None:
    cloud_logging.configure("warning")
    # This measures kms, not the gateway's per-user throttle: lift it for this process.
    for route_class in ("READ", "WRITE"):
        os.environ.setdefault(f"CLOUD_GATEWAY_RATE_{route_class}", "1000000:1000000")
    with tempfile.TemporaryDirectory(prefix="kmsbench") as tmp:
        async with running_cloud(Path(tmp) / "data", ["kms"],
                                 master=MasterKey(secrets.token_bytes(32), "bench")) as cloud:
            await run(cloud, seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.5, help="per mode")
    asyncio.run(main(parser.parse_args().seconds))
