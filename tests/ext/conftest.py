"""Fixtures for the extension runtime tests: guest builders and runtimes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from hanzocloud.ext import ExtensionRuntime

from .support import GUESTS, GuestBuilder, RuntimeFactory, write_extension


@pytest.fixture
def guest(tmp_path: Path) -> GuestBuilder:
    """Build an extension directory from tests/ext/guests/<file>.wat (or inline WAT text)."""

    def build(source: str, *, exports: Sequence[str], capabilities: Sequence[str] = (),
              name: str | None = None, version: str = "1.0.0") -> Path:
        text = (GUESTS / f"{source}.wat").read_text() if "(module" not in source else source
        ext_name = name or (source if "(module" not in source else "inline")
        return write_extension(tmp_path / f"{ext_name}-{version}", name=ext_name,
                               wasm=wasmtime.wat2wasm(text), exports=exports,
                               capabilities=capabilities, version=version)

    return build


@pytest.fixture
def make_runtime() -> Iterator[RuntimeFactory]:
    """Create runtimes that are closed when the test ends."""
    made: list[ExtensionRuntime] = []

    def factory(**kwargs: Any) -> ExtensionRuntime:
        runtime = ExtensionRuntime(**kwargs)
        made.append(runtime)
        return runtime

    yield factory
    for runtime in made:
        runtime.close()


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> ExtensionRuntime:
    """A runtime with default limits and no capabilities."""
    return make_runtime()


