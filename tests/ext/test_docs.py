"""docs/extensions.md shows the guests exactly as they are in examples/ext/."""

from __future__ import annotations

import pytest

from hanzocloud.ext import Limits

from .support import EXAMPLES, REPO

DOC = REPO / "docs" / "extensions.md"


@pytest.mark.parametrize("source", ["echo-wat/echo.wat", "hello-as/assembly/index.ts",
                                    "hello-as/extension.json", "hello-as/package.json"])
def test_listing_matches_the_example(source: str) -> None:
    assert (EXAMPLES / source).read_text() in DOC.read_text(), (
        f"docs/extensions.md is out of date with examples/ext/{source}")


def test_documented_defaults_match_limits() -> None:
    text = DOC.read_text()
    limits = Limits()
    assert f"| `fuel` | {limits.fuel:,} |" in text
    assert f"| `timeout_s` | {limits.timeout_s} |" in text
    assert f"| `max_memory_bytes` | {limits.max_memory_bytes // 2**20} MiB |" in text
