"""Meta-test: every subsystem in the registry honours the mount contract (STYLE §9)."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_port, subprocess_env
from hanzocloud.registry import SUBSYSTEMS, Subsystem

IDS = [s.name for s in SUBSYSTEMS]


@pytest.mark.parametrize("sub", SUBSYSTEMS, ids=IDS)
def test_mount_signature_and_layout(sub: Subsystem) -> None:
    module = importlib.import_module(sub.package)
    params = list(inspect.signature(module.mount).parameters)
    assert params == ["app", "deps"], f"{sub.name}.mount takes {params}"
    folder = Path(module.__file__).parent
    assert (folder / "__main__.py").exists(), f"{sub.name} cannot run alone"
    assert sub.package == f"subsystems.{sub.name}"


@pytest.mark.parametrize("sub", SUBSYSTEMS, ids=IDS)
def test_each_subsystem_has_tests_and_docs(sub: Subsystem) -> None:
    tests = ROOT / "tests" / sub.name
    assert tests.is_dir() and list(tests.glob("test_*.py")), f"no tests/{sub.name}/test_*.py"
    assert (ROOT / "docs" / f"{sub.name}.md").exists(), f"no docs/{sub.name}.md"


@pytest.mark.parametrize("sub", SUBSYSTEMS, ids=IDS)
def test_routes_stay_under_one_prefix(sub: Subsystem, tmp_path: Path) -> None:
    from conftest import make_settings
    from hanzocloud.host import build_host
    from hanzocloud.keys import MasterKey

    names = tuple(s.name for s in SUBSYSTEMS)
    host = build_host(make_settings(tmp_path, known=names, enable=sub.name),
                      master=MasterKey(b"\x02" * 32, "t"))
    own = [e for e in host.table if e.subsystem == sub.name]
    for entry in own:
        assert (entry.path.startswith(f"/v1/{sub.name}") or entry.path.startswith("/.well-known/")
                ), f"{sub.name} claims {entry.path} outside /v1/{sub.name}"


def test_docs_exist_for_the_host() -> None:
    for page in ("architecture.md", "zap.md"):
        assert (ROOT / "docs" / page).exists()


@pytest.mark.skipif(not SUBSYSTEMS, reason="no subsystem in the registry yet")
def test_python_dash_m_runs_a_subsystem_alone(tmp_path: Path) -> None:
    import signal

    from conftest import start_server

    sub = SUBSYSTEMS[0]
    port = free_port()
    server = start_server([sys.executable, "-m", sub.package, "--dev", f"--data-dir={tmp_path}",
                           f"--listen=127.0.0.1:{port}", "--health-listen=127.0.0.1:0",
                           "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0"],
                          env=subprocess_env())
    try:
        import httpx

        doc = httpx.get(f"{server.public}/v1/openapi.json").json()
        tags = {t["name"] for t in doc["tags"]}
        assert sub.name in tags
        others = {s.name for s in SUBSYSTEMS if not s.edge and s.name != sub.name}
        assert not tags & others
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
