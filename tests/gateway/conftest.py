"""Fixtures for gateway tests: a running cloud with iam and the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cloud import Cloud, running_cloud


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path / "data", ["iam", "gateway"]) as c:
        yield c
