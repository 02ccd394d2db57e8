"""Run base alone: `python -m subsystems.base [flags]`."""

from hanzocloud.cli import run_alone

run_alone("base")
