"""A real server: steady writes, kill -9, data dir deleted, restart on the same sink."""

from __future__ import annotations

import base64
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import SUPPORT, RunningServer, subprocess_env

from .conftest import sink_env

WRITER = {"X-Test-Identity": "acme/alice/editor"}


def key_file(tmp: Path) -> Path:
    path = tmp / "master.key"
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    return path


def server_args(data: Path, key: Path, url: str) -> list[str]:
    return [sys.executable, str(SUPPORT / "serve_test_host.py"), f"--data-dir={data}",
            f"--kms-master-key-ref=file:{key}", f"--replicate-url={url}",
            "--enable=testgate,alpha", "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0"]


def drained(server: RunningServer) -> RunningServer:
    """Keep reading the server's stderr: its request log would otherwise fill the pipe."""
    assert server.proc.stderr is not None
    threading.Thread(target=server.proc.stderr.read, daemon=True).start()
    return server


def write_steadily(base: str, acked: list[tuple[str, float]], stop: threading.Event) -> None:
    """POST notes one after another until stopped or the server dies."""
    with httpx.Client(base_url=base, timeout=5.0) as client:
        for i in range(100_000):
            if stop.is_set():
                return
            try:
                response = client.post("/v1/alpha/notes", json={"body": f"w{i}"},
                                       headers=WRITER)
            except httpx.HTTPError:
                return
            if response.status_code == 201:
                acked.append((f"w{i}", time.monotonic()))
            time.sleep(0.005)


def test_kill_9_then_restart_on_an_empty_data_dir(
        tmp_path: Path, sink_url: str, server_factory: Callable[..., RunningServer]) -> None:
    data, key = tmp_path / "data", key_file(tmp_path)
    env = subprocess_env(**sink_env(sink_url))
    first = drained(server_factory(server_args(data, key, sink_url), env=env))
    acked: list[tuple[str, float]] = []
    stop = threading.Event()
    writer = threading.Thread(target=write_steadily, args=(first.public, acked, stop))
    writer.start()
    time.sleep(3.0)
    scraped = httpx.get(first.urls["health"] + "/metrics").text
    first.proc.kill()  # SIGKILL: no shutdown, no final ship
    killed_at = time.monotonic()
    first.proc.wait(timeout=10)
    stop.set()
    writer.join(timeout=10)
    assert 'hanzocloud_replicate_lag_seconds{org="acme",service="alpha"}' in scraped
    assert 'hanzocloud_replicate_shipped_bytes_total{kind="wal"}' in scraped

    shutil.rmtree(data)
    second = drained(server_factory(server_args(data, key, sink_url), env=env))
    response = httpx.get(second.public + "/v1/alpha/notes", headers=WRITER, timeout=30)
    assert response.status_code == 200, response.text
    present = response.json()["items"]
    durable = [body for body, at in acked if at < killed_at - 1.0]
    assert len(durable) > 20, "the writer made too little progress to judge"
    missing = [body for body in durable if body not in present]
    assert not missing, f"{len(missing)} acknowledged write(s) lost, first {missing[:5]}"
    assert present == sorted(present, key=lambda b: int(b[1:]))  # a prefix, in order
    response = httpx.post(second.public + "/v1/alpha/notes", json={"body": "after"},
                          headers=WRITER)
    assert response.status_code == 201
