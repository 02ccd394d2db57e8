"""Boot time: exec → first 200 on /healthz, all subsystems vs one, against importing the stack.

Run: .venv/bin/python bench/boot.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Every runtime dependency in pyproject.toml, imported the way the product imports it.
STACK = ("starlette.applications, uvicorn, uvloop, sqlalchemy.ext.asyncio, aiosqlite, sqlcipher3, "
         "msgspec, structlog, pydantic, jwt, cryptography.hazmat.primitives.ciphers.aead, httpx, "
         "prometheus_client, argon2, multipart, wasmtime, lark, fsspec, pyrage")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_import() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {STACK}"], check=True)
    return time.perf_counter() - started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def time_boot(enable: str, data: str) -> tuple[float, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_")}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hanzocloud", "--dev", f"--data-dir={data}", f"--enable={enable}",
         "--listen=127.0.0.1:0", f"--health-listen=127.0.0.1:{port}",
         "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(f"server exited with {proc.returncode}") from None
                time.sleep(0.005)
        elapsed = time.perf_counter() - started
        time.sleep(0.5)
        return elapsed, rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from hanzocloud.registry import SUBSYSTEMS

    one = SUBSYSTEMS[0].name if SUBSYSTEMS else ""
    baseline = statistics.median(time_import() for _ in range(args.runs))
    print(f"baseline: python -c 'import <stack>'   {baseline * 1000:8.1f} ms")
    for label, enable in (("all subsystems", "all"), (f"one subsystem ({one or 'none'})", one)):
        data = tempfile.mkdtemp(prefix="boot-")
        first = time_boot(enable, data)  # a fresh data dir: keys and databases are created
        runs = [time_boot(enable, data) for _ in range(args.runs)]
        boot = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        print(f"{label:<28} restart {boot * 1000:7.1f} ms = {boot / baseline:4.2f}x baseline "
              f"(target <= 1.3x)  first boot {first[0] * 1000:7.1f} ms "
              f"= {first[0] / baseline:4.2f}x  idle RSS {rss / 1024:6.1f} MiB")


if __name__ == "__main__":
    main()
