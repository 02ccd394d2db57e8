"""hanzocloud: one process that hosts a whole white-label cloud."""

from __future__ import annotations

__version__ = "0.1.0"
