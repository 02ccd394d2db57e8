"""The subsystem list: the architecture diagram of hanzocloud, in mount order.

Each entry maps a name to the package whose `mount(app, deps)` installs it. Nothing is
discovered: a subsystem exists when it is listed here, and it is imported only if enabled.
Shutdown runs in the reverse of this order.
"""

from __future__ import annotations

from typing import NamedTuple


class Subsystem(NamedTuple):
    name: str
    package: str
    edge: bool = False  # an edge subsystem is also enabled when another runs alone


SUBSYSTEMS: tuple[Subsystem, ...] = (
    Subsystem("iam", "subsystems.iam"),
    Subsystem("kms", "subsystems.kms"),
    Subsystem("base", "subsystems.base"),
    Subsystem("gateway", "subsystems.gateway", edge=True),
)

SUBSYSTEM_NAMES: tuple[str, ...] = tuple(s.name for s in SUBSYSTEMS)

# Clients every Deps carries, whether or not the subsystem exists in this build yet.
CLIENT_NAMES: tuple[str, ...] = (
    "iam", "kms", "base", "commerce", "ai", "ml", "auto", "mesh", "payments", "vault",
)
# Never in-process (PCI scope): reached over ZAP or not at all.
ALWAYS_REMOTE: frozenset[str] = frozenset({"payments", "vault"})
