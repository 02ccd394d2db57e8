"""The real process: listeners, health, metrics, and a clean drain on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import SUPPORT, RunningServer, hanzocloud_cmd


def test_server_answers_health_ready_metrics(server_factory: Callable[..., RunningServer],
                                             tmp_path: Path) -> None:
    server = server_factory([*hanzocloud_cmd(), "--dev", f"--data-dir={tmp_path}",
                             "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
                             "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0"])
    health = server.urls["health"]
    assert httpx.get(f"{health}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{health}/readyz").status_code == 200
    assert httpx.get(f"{server.public}/v1/brand").json()["name"] == "hanzo"
    text = httpx.get(f"{health}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "hanzocloud_requests" in families
    assert "hanzocloud_tenant_handles_open" in families
    samples = [s for s in families["hanzocloud_requests"].samples
               if s.labels.get("route") == "/v1/brand"]
    assert samples and samples[0].labels["status"] == "200"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    assert (tmp_path / "dev-master.key").stat().st_mode & 0o777 == 0o600



def test_request_logs_carry_the_request_id_and_no_credential(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = server_factory([*hanzocloud_cmd(), "--dev", f"--data-dir={tmp_path}",
                             "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
                             "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0",
                             "--log-level=info"])
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtbWFya2VyIn0.c2lnbmF0dXJlLW1hcmtlcg"
    given = httpx.get(f"{server.public}/v1/brand", headers={"X-Request-Id": "rid-given-1"})
    made = httpx.get(f"{server.public}/v1/base/api/health",
                     headers={"Authorization": f"Bearer {token}"})
    assert given.status_code == 200 and made.status_code == 401
    wanted = {"rid-given-1": 200, made.headers["x-request-id"]: 401}
    seen: dict[str, int] = {}
    until = time.monotonic() + 10
    while time.monotonic() < until and seen != wanted:
        seen = {}
        for line in server.stderr().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "request" and event.get("request_id") in wanted:
                    seen[event["request_id"]] = event["status"]
        time.sleep(0.05)
    assert seen == wanted
    logged = server.stderr()
    assert "c2lnbmF0dXJlLW1hcmtlcg" not in logged and token[:20] not in logged

def test_sigterm_drains_in_flight_request(server_factory: Callable[..., RunningServer],
                                          tmp_path: Path) -> None:
    server = server_factory([sys.executable, str(SUPPORT / "serve_test_host.py"), "--dev",
                             f"--data-dir={tmp_path}", "--enable=testgate,alpha",
                             "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
                             "--admin-listen=127.0.0.1:0"])
    result: dict[str, object] = {}

    def slow_call() -> None:
        try:
            r = httpx.get(f"{server.public}/v1/alpha/slow?seconds=2", timeout=30)
            result["status"], result["body"] = r.status_code, r.json()
        except Exception as exc:  # noqa: BLE001
            result["error"] = repr(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(f"{server.urls['health']}/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    caller.join(timeout=30)
    assert result.get("status") == 200, result
    assert result["body"] == {"slept": True}
    assert server.proc.wait(timeout=30) == 0
    time.sleep(0.2)  # let the drain thread read the last lines
    assert "Traceback" not in server.stderr()
    assert "signal_received" in server.stderr()


def test_defaults_alone_start_the_server(server_factory: Callable[..., RunningServer],
                                         tmp_path: Path) -> None:
    """No --data-dir, no ports given: the embedded defaults (./data) work, as `make run` needs."""
    import subprocess

    from conftest import subprocess_env

    demo = subprocess.run([*hanzocloud_cmd(), "iam", "demo", "--dev"], cwd=tmp_path,
                          capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert demo.returncode == 0, demo.stderr
    server = server_factory([*hanzocloud_cmd(), "--dev", "--listen=127.0.0.1:0",
                             "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
                             "--zap-listen=127.0.0.1:0"], cwd=tmp_path)
    assert httpx.get(f"{server.public}/v1/brand").status_code == 200
    assert (tmp_path / "data" / "dev-master.key").exists()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0


@pytest.mark.parametrize("merged", [False, True], ids=["two-streams", "one-stream"])
def test_dev_mode_names_its_listeners_and_warns_of_its_key_once(tmp_path: Path,
                                                                merged: bool) -> None:
    """What `make run` prints: each listener's address and the dev-key warning, on stdout
    and on stderr; once when both are the same file (a terminal, `2>&1`)."""
    import subprocess

    from conftest import subprocess_env

    proc = subprocess.Popen(
        [*hanzocloud_cmd(), "--dev", f"--data-dir={tmp_path}", "--listen=127.0.0.1:0",
         "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
         "--zap-listen=127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True, env=subprocess_env())
    assert proc.stdout is not None
    printed = []
    for line in proc.stdout:  # ends early if the process dies
        printed.append(line)
        if line.startswith("hanzocloud: ready"):
            break
    proc.send_signal(signal.SIGTERM)
    rest, errors = proc.communicate(timeout=30)
    assert proc.returncode == 0, errors
    stdout = "".join(printed) + rest
    warning = f"--dev is on. The master key is a development key stored in clear at {tmp_path}"
    assert stdout.count(warning) == 1, stdout
    assert errors is None if merged else errors.count(warning) == 1
    for name, scheme in (("public", "http"), ("health", "http"), ("admin", "http"),
                         ("zap", "zap")):
        assert re.search(rf"^hanzocloud: {name} +{scheme}://127\.0\.0\.1:\d+$", stdout, re.M)
