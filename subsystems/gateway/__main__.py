from hanzocloud.cli import run_alone

run_alone("gateway")
