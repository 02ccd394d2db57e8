"""Helpers shared by the ZAP tests: compile a test schema, the Echo service, free ports."""

from __future__ import annotations

import asyncio
import importlib
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from hanzocloud.errors import ERRORS_BY_CODE, CloudError
from hanzocloud.identity import current_identity
from hanzocloud.zap.codegen import generate
from hanzocloud.zap.parser import parse_file

REPO = Path(__file__).resolve().parents[2]
TEST_SCHEMAS = REPO / "schemas" / "_test"
KEY = b"k" * 32


def compile_test_schema(name: str, out_dir: Path) -> ModuleType:
    """Generate schemas/_test/<name>.zap into out_dir as zaptest_<name> and import it."""
    path = TEST_SCHEMAS / f"{name}.zap"
    text = generate(parse_file(path), path.read_text(), schema_rel=f"schemas/_test/{name}.zap")
    (out_dir / f"zaptest_{name}.py").write_text(text)
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    return importlib.import_module(f"zaptest_{name}")


class EchoService:
    """The test implementation of `interface Echo`; records what the server side saw."""

    def __init__(self, kitchen: ModuleType) -> None:
        self.k = kitchen
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def echo(self, text: str) -> str:
        return text

    async def round_trip(self, value: Any) -> Any:
        return value

    async def whoami(self) -> Any:
        who = current_identity.get()
        return self.k.WhoamiResult(
            who.org, who.user, who.email, list(who.roles), who.is_admin, who.request_id
        )

    async def fail(self, code: str, message: str) -> None:
        if code == "boom":
            raise ValueError("secret internals")  # must not reach the client
        cls = ERRORS_BY_CODE.get(code)
        if cls is None:
            raise type("Odd", (CloudError,), {"code": code, "status": 418})(message)
        if code == "subsystem_unavailable":
            raise cls("kms", message)  # type: ignore[call-arg]
        raise cls(message, details={"why": "test"})

    async def sleep(self, ms: int) -> bool:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.started.set()
        try:
            await asyncio.sleep(ms / 1000)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.in_flight -= 1
        return True

    async def blob(self, size: int) -> bytes:
        return b"x" * size


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
