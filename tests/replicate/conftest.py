"""Fixtures for the replicator: sinks (local files and S3 on loopback), stores, helpers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import free_port
from hanzocloud.keys import MasterKey
from hanzocloud.replicate.options import ReplicateOptions
from hanzocloud.replicate.replicator import Replicator
from hanzocloud.replicate.sink import Sink
from hanzocloud.replicate.tenant import Policy
from hanzocloud.storage import TenantStore

FAST = ReplicateOptions(debounce=0.02, interval=0.2, lease_ttl=3.0, idle_close=1.0,
                        close_timeout=5.0, policy=Policy(checkpoint_frames=50,
                                                         checkpoint_seconds=1.0))
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3 API on loopback (moto in server mode), shared by the session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["file", "s3"])
def sink_url(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sink URL: a local folder, or a new bucket on the loopback S3."""
    if request.param == "file":
        return f"file://{tmp_path / 'sink'}"
    endpoint = request.getfixturevalue("s3_endpoint")
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    bucket = f"b{secrets.token_hex(6)}"
    import fsspec

    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/prod"


def sink_env(url: str) -> dict[str, str]:
    """Environment a server subprocess needs to reach this sink."""
    if url.startswith("s3://"):
        return {**S3_ENV, "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]}
    return {}


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(secrets.token_bytes(32), "test:random")


@contextlib.asynccontextmanager
async def replicated(data_dir: Path, url: str | Sink, master: MasterKey, *,
                     owner: str = "replica-a", options: ReplicateOptions = FAST,
                     ) -> AsyncIterator[tuple[TenantStore, Replicator]]:
    """A TenantStore with a running replicator on `url`."""
    store = TenantStore(data_dir, master)
    sink = url if isinstance(url, Sink) else Sink(url)
    replicator = Replicator(sink, master, owner=owner, options=options)
    replicator.attach(store)
    await replicator.start()
    try:
        yield store, replicator
    finally:
        await store.close()
        await replicator.stop()


async def add_notes(store: TenantStore, org: str, bodies: list[str]) -> None:
    """Insert notes, one transaction each (the way a request would)."""
    for body in bodies:
        async with store.session(org, "alpha") as s:
            await s.execute(text("CREATE TABLE IF NOT EXISTS notes (body TEXT NOT NULL)"))
            await s.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": body})
            await s.commit()


async def read_notes(store: TenantStore, org: str) -> list[str]:
    async with store.session(org, "alpha") as s:
        await s.execute(text("CREATE TABLE IF NOT EXISTS notes (body TEXT NOT NULL)"))
        return [r[0] for r in (await s.execute(text("SELECT body FROM notes ORDER BY rowid")))]


async def settled(replicator: Replicator, org: str, service: str = "alpha",
                  timeout: float = 10.0) -> None:
    """Wait until everything written so far is in the sink."""
    replicator.touched(org, service)
    deadline = time.monotonic() + timeout
    await asyncio.sleep(0.05)
    while replicator.lag(org, service) != 0.0:
        assert time.monotonic() < deadline, f"{org}/{service} never caught up"
        await asyncio.sleep(0.05)
    await asyncio.sleep(FAST.debounce * 3)
    while replicator.lag(org, service) != 0.0:
        assert time.monotonic() < deadline, f"{org}/{service} never caught up"
        await asyncio.sleep(0.05)


def rows(path: Path, master: MasterKey, org: str, service: str = "alpha") -> list[str]:
    """Read the notes of a restored file directly (no store, no replicator)."""
    from hanzocloud.keys import unwrap_dek
    from hanzocloud.storage import connect_sqlcipher

    dek = unwrap_dek(master, org, service, path.with_name(path.name + ".dek").read_bytes())
    conn = connect_sqlcipher(path, dek)
    try:
        return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY rowid")]
    finally:
        conn.close()


def all_objects(sink: Sink) -> dict[str, bytes]:
    """Every object under the sink root, by key."""
    root = sink.root.lstrip("/")
    out: dict[str, bytes] = {}
    for path in map(str, sink.fs.find(sink.root)):
        if "/." not in path:  # not a half-written temp file
            out[path[path.index(root) + len(root) + 1:]] = bytes(sink.fs.cat_file(path))
    return out
