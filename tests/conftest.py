"""Shared fixtures: settings in a temp data dir, a master key, and a running host."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "tests" / "_support"
sys.path.insert(0, str(SUPPORT))

from hanzocloud.config import Settings, load_settings  # noqa: E402
from hanzocloud.host import Host, build_host  # noqa: E402
from hanzocloud.keys import MasterKey  # noqa: E402
from testsubsystems import TEST_NAMES, TEST_REGISTRY  # noqa: E402


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(secrets.token_bytes(32), "test:random")


def make_settings(data_dir: Path, *, known: tuple[str, ...] = TEST_NAMES,
                  **overrides: Any) -> Settings:
    flags: dict[str, Any] = {"data_dir": data_dir, "dev": True, "listen": "127.0.0.1:0",
                             "health_listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
                             "zap_listen": "127.0.0.1:0"}
    flags.update(overrides)
    return load_settings(flags, environ={}, known=known)


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        return make_settings(tmp_path / "data", **overrides)
    return factory


@pytest.fixture
async def test_host(settings_factory: Callable[..., Settings],
                    master: MasterKey) -> AsyncIterator[Host]:
    host = build_host(settings_factory(enable="testgate,alpha,beta"), registry=TEST_REGISTRY,
                      master=master)
    async with host.lifespan():
        yield host


def client_for(app: Any, base: str = "http://test") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_LOCK_PROBE = """
import fcntl, os, struct, sys
def held(path, byte):  # does a process other than this one lock `byte` of `path`?
    fd = os.open(path, os.O_RDONLY)
    try:
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, 0, byte, 1, 0)
        return struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)
db = sys.argv[1]
print(int(held(db + "-shm", 128)), int(held(db, 0x40000002)))
"""


def sqlite_locks_held(db: Path) -> tuple[bool, bool]:
    """Whether this process holds SQLite's shared locks on `db`, as another process sees
    them: the wal-index's "in use" byte (an opener that finds it free resets the
    wal-index) and the main file's SHARED range (held by every WAL-mode connection)."""
    out = subprocess.run([sys.executable, "-c", _LOCK_PROBE, str(db)], capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "1", out[1] == "1"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env.update(extra)
    return env


def hanzocloud_cmd() -> list[str]:
    return [sys.executable, "-m", "hanzocloud"]


class RunningServer:
    """A real server subprocess whose listener URLs were read from its stdout."""

    def __init__(self, proc: subprocess.Popen[str], urls: dict[str, str],
                 stderr_tail: list[str] | None = None) -> None:
        self.proc = proc
        self.urls = urls
        self.stderr_tail = stderr_tail if stderr_tail is not None else []

    def stderr(self) -> str:
        """The last lines the server wrote to stderr (drained continuously)."""
        return "".join(self.stderr_tail)

    @property
    def public(self) -> str:
        return self.urls["public"]


def start_server(args: list[str], *, env: dict[str, str] | None = None,
                 timeout: float = 30.0, cwd: Path | None = None) -> RunningServer:
    """Start a server process and wait for its 'ready' line (stdout is read by a thread)."""
    import queue
    import threading

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or subprocess_env(), cwd=cwd)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def drain() -> None:  # a full stderr pipe would block the server's event loop
        assert proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):  # the pipe closed at teardown
            for line in proc.stderr:
                stderr_tail.append(line)
                del stderr_tail[:-200]

    stderr_tail: list[str] = []
    threading.Thread(target=pump, daemon=True).start()
    threading.Thread(target=drain, daemon=True).start()
    urls: dict[str, str] = {}
    try:
        while True:
            line = lines.get(timeout=timeout)
            if line is None:
                break
            parts = line.split()
            if len(parts) == 3 and parts[0] == "hanzocloud:" and "://" in parts[2]:
                urls[parts[1]] = parts[2]
            if line.startswith("hanzocloud: ready"):
                return RunningServer(proc, urls, stderr_tail)
    except queue.Empty:
        pass
    proc.kill()
    proc.wait(timeout=10)
    raise AssertionError(f"server did not start: {''.join(stderr_tail)[-3000:]}")


@pytest.fixture
def server_factory() -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def factory(args: list[str], **kw: Any) -> RunningServer:
        server = start_server(args, **kw)
        started.append(server)
        return server

    yield factory
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate(timeout=10)
