"""Run kms alone: `python -m subsystems.kms [flags]`."""

from hanzocloud.cli import run_alone

run_alone("kms")
