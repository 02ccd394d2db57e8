"""Boot time: exec → first 200 on /healthz, all subsystems vs one, against importing the stack.

The baseline is `python -c "import …"` of every module outside this project that the booting
server loads (stdlib and third-party, submodules included, read from `-X importtime`), so
the ratio is what the project's own code and start-up work add on top of its stack. The
import of just the top-level dependency packages is printed for reference.

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
from typing import Any

# The packages of pyproject.toml's runtime dependencies, as the product imports them.
STACK = ["starlette.applications", "uvicorn", "uvloop", "sqlalchemy.ext.asyncio", "aiosqlite",
         "sqlcipher3", "msgspec", "structlog", "pydantic", "jwt",
         "cryptography.hazmat.primitives.ciphers.aead", "httpx", "prometheus_client", "argon2",
         "multipart", "wasmtime", "lark", "fsspec", "pyrage"]
OURS = ("hanzocloud", "subsystems", "__main__")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_import(names: list[str]) -> float:
    """Import each module in the server's order; a name whose import fails there (an optional
    dependency that is absent, a Windows-only module) is attempted here too."""
    script = ("import importlib\n"
              f"for name in {names!r}:\n"
              "    try:\n        importlib.import_module(name)\n"
              "    except Exception:\n        pass\n")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True)
    return time.perf_counter() - started


def loaded_stack(enable: str) -> list[str]:
    """Every module not of this project that a booting server imports (stdlib and
    third-party, submodules included): the dependency stack as the product really loads it."""
    data = tempfile.mkdtemp(prefix="boot-stack-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_")}
    with tempfile.TemporaryFile("w+") as trace:  # a pipe could fill up and stall the server
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "hanzocloud", "--dev",
             f"--data-dir={data}", f"--enable={enable}", "--listen=127.0.0.1:0",
             f"--health-listen=127.0.0.1:{port}", "--admin-listen=127.0.0.1:0",
             "--zap-listen=127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=trace, env=env)
        try:
            wait_healthy(proc, port)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        trace.seek(0)
        err = trace.read()
    names = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package" and name.split(".")[0] not in OURS:
                names.append(name)
    return list(dict.fromkeys(names))


def wait_healthy(proc: subprocess.Popen[Any], port: int) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}") from None
            time.sleep(0.005)


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
        wait_healthy(proc, port)
        elapsed = time.perf_counter() - started
        time.sleep(0.5)
        return elapsed, rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from hanzocloud.registry import SUBSYSTEMS

    one = SUBSYSTEMS[0].name if SUBSYSTEMS else ""
    packages = statistics.median(time_import(STACK) for _ in range(args.runs))
    print(f"python -c 'import <the dependency packages>'          {packages * 1000:8.1f} ms "
          "(for reference)")
    for label, enable in (("all subsystems", "all"), (f"one subsystem ({one or 'none'})", one)):
        stack = loaded_stack(enable)
        data = tempfile.mkdtemp(prefix="boot-")
        first = time_boot(enable, data)  # a fresh data dir: keys and databases are created
        baselines, runs = [], []
        for _ in range(args.runs):  # interleaved, so drift on the machine hits both alike
            baselines.append(time_import(stack))
            runs.append(time_boot(enable, data))
        baseline = statistics.median(baselines)
        print(f"python -c 'import <every module the server loads>'    {baseline * 1000:8.1f} ms "
              f"({len(stack)} modules; the baseline for {label})")
        boot = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        print(f"{label:<28} restart {boot * 1000:7.1f} ms = {boot / baseline:4.2f}x baseline "
              f"(target <= 1.3x)  first boot {first[0] * 1000:7.1f} ms "
              f"= {first[0] / baseline:4.2f}x  idle RSS {rss / 1024:6.1f} MiB")


if __name__ == "__main__":
    main()
