"""Test-only subsystems: they exercise the host's mount contract without any real subsystem."""

from __future__ import annotations

from hanzocloud.registry import Subsystem

TEST_REGISTRY = (
    Subsystem("testgate", "testsubsystems.testgate", edge=True),
    Subsystem("alpha", "testsubsystems.alpha"),
    Subsystem("beta", "testsubsystems.beta"),
    Subsystem("gamma", "testsubsystems.gamma"),
)
TEST_NAMES = tuple(s.name for s in TEST_REGISTRY)
