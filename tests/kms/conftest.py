"""Fixtures for kms tests: a running cloud with kms enabled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cloud import Cloud, running_cloud

from .support import Kms


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path / "data", ["kms"]) as c:
        yield c


@pytest.fixture
def kms(cloud: Cloud) -> Kms:
    return Kms(cloud)
