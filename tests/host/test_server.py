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

def _in_flight(call: Callable[[], dict[str, object]]) -> tuple[threading.Thread,
                                                                 dict[str, object]]:
    """Start `call` (a request that stays in flight) in a thread and give it half a second
    to reach the server; what it returns, or the error it raised, lands in the dict."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result.update(call())
        except Exception as exc:  # noqa: BLE001
            result["error"] = repr(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    return thread, result


def _answer(response: httpx.Response) -> dict[str, object]:
    return {"status": response.status_code, "body": response.json(),
            "headers": response.headers}


def test_sigterm_drains_in_flight_request(server_factory: Callable[..., RunningServer],
                                          tmp_path: Path) -> None:
    server = server_factory([sys.executable, str(SUPPORT / "serve_test_host.py"), "--dev",
                             f"--data-dir={tmp_path}", "--enable=testgate,alpha",
                             "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
                             "--admin-listen=127.0.0.1:0"])
    caller, result = _in_flight(
        lambda: _answer(httpx.get(f"{server.public}/v1/alpha/slow?seconds=2", timeout=30)))
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


def test_a_request_outliving_the_drain_is_answered_503_in_json(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    """SIGTERM with --shutdown-timeout=1: a request still running when the time is up is
    cut short with a JSON 503 (retry), not uvicorn's plain-text 500, and the process
    exits 0 with JSON log lines only."""
    server = server_factory([sys.executable, str(SUPPORT / "serve_test_host.py"), "--dev",
                             f"--data-dir={tmp_path}", "--enable=testgate,alpha",
                             "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
                             "--admin-listen=127.0.0.1:0", "--shutdown-timeout=1"])
    caller, result = _in_flight(
        lambda: _answer(httpx.get(f"{server.public}/v1/alpha/slow?seconds=20", timeout=30)))
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    caller.join(timeout=30)
    assert server.proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 10
    assert result.get("status") == 503, result
    assert result["body"]["error"]["code"] == "shutting_down"  # type: ignore[index]
    assert result["headers"]["retry-after"] == "1"  # type: ignore[index]
    assert result["headers"]["x-request-id"]  # type: ignore[index]
    time.sleep(0.2)  # let the drain thread read the last lines
    lines = [line for line in server.stderr().splitlines() if line.strip()]
    assert any(json.loads(line)["event"] == "request_cut_by_shutdown" for line in lines)
    assert all(json.loads(line) for line in lines)


def test_sigterm_closes_the_zap_listener_and_ends_streams_cleanly(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    """While a realtime stream holds the drain open, SIGTERM has already closed the ZAP
    listener as well as the public one; when the drain's time is up the stream is ended as
    a whole response, and nothing is logged as an error."""
    import socket

    server = server_factory([*hanzocloud_cmd(), "--dev", f"--data-dir={tmp_path}",
                             "--enable=all", "--listen=127.0.0.1:0",
                             "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
                             "--zap-listen=127.0.0.1:0", "--shutdown-timeout=2"])
    zap_port = int(server.urls["zap"].rsplit(":", 1)[1])
    socket.create_connection(("127.0.0.1", zap_port), timeout=5).close()  # listening
    def listen() -> dict[str, object]:
        with httpx.stream("GET", f"{server.public}/v1/base/api/realtime", timeout=30) as r:
            return {"events": [line for line in r.iter_lines() if line]}

    listener, result = _in_flight(listen)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.proc.poll() is None  # still draining: the stream holds it
    for port in (zap_port, int(server.public.rsplit(":", 1)[1])):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    assert server.proc.wait(timeout=30) == 0
    listener.join(timeout=30)
    assert "error" not in result, result
    assert "event:PB_CONNECT" in result["events"]  # type: ignore[operator]
    time.sleep(0.2)  # let the drain thread read the last lines
    logged = [json.loads(line) for line in server.stderr().splitlines()
              if line.startswith("{")]
    assert any(entry["event"] == "request_cut_by_shutdown" for entry in logged)
    errors = [entry["event"] for entry in logged if entry["level"] == "error"]
    assert all("graceful shutdown exceeded" in event for event in errors), errors  # uvicorn's


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

    brand = []
    if merged:  # and the ready line names the brand served, a custom one here
        (tmp_path / "acme.toml").write_text(
            'name = "acmecloud"\ndisplay_name = "Acme Cloud"\ndomain = "acme.test"\n'
            'default_issuer = "https://acme.test"\n[colors]\nprimary = "#000000"\n'
            'accent = "#ffffff"\nbackground = "#ffffff"\n')
        brand = [f"--brand-file={tmp_path / 'acme.toml'}"]
    proc = subprocess.Popen(
        [*hanzocloud_cmd(), "--dev", f"--data-dir={tmp_path}", "--listen=127.0.0.1:0",
         "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
         "--zap-listen=127.0.0.1:0", *brand],
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
    assert f"hanzocloud: ready (brand {'acmecloud' if merged else 'hanzo'}," in stdout
