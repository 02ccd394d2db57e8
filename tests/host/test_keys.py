"""Key unwrap failures: the client learns only that the org's data cannot be opened, the
operator's log gets the org, service, sidecar and reason."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import SUPPORT, RunningServer
from hanzocloud.keys import KeyUnwrapError, MasterKey, unwrap_dek, wrap_dek


def stray_wrap(org: str) -> bytes:
    """A well-formed sidecar wrapped under some other master key."""
    return wrap_dek(MasterKey(os.urandom(32), "stray"), org, "alpha", os.urandom(32),
                    os.urandom(16))


# (org, damaged sidecar bytes for that org, what the operator's reason says)
DAMAGED: list[tuple[str, Callable[[str], bytes], str]] = [
    ("short", lambda org: b"\x00" * 5, "bad length (5 bytes"),
    ("stray", stray_wrap, "does not open with master key"),
]


@pytest.mark.parametrize(("org", "damage", "reason"), DAMAGED, ids=["truncated", "another-key"])
def test_the_message_names_no_key_and_the_reason_is_kept(
        org: str, damage: Callable[[str], bytes], reason: str) -> None:
    master = MasterKey(os.urandom(32), "test")
    with pytest.raises(KeyUnwrapError) as failed:
        unwrap_dek(master, org, "alpha", damage(org))
    assert failed.value.message == "this org's data cannot be opened right now"
    assert str(failed.value) == failed.value.message
    assert reason in failed.value.reason


def warnings_in(server: RunningServer, event: str) -> list[dict[str, object]]:
    found = []
    for line in server.stderr().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                found.append(entry)
    return found


def test_a_damaged_sidecar_is_logged_and_the_client_sees_no_fingerprint(
        tmp_path: Path, server_factory: Callable[..., RunningServer]) -> None:
    raw = os.urandom(32)
    key_file = tmp_path / "master.key"
    key_file.write_text(base64.b64encode(raw).decode())
    fingerprint = MasterKey(raw, "test").fingerprint
    data = tmp_path / "data"
    server = server_factory([sys.executable, str(SUPPORT / "serve_test_host.py"),
                             f"--data-dir={data}", f"--kms-master-key-ref=file:{key_file}",
                             "--enable=testgate,alpha", "--listen=127.0.0.1:0",
                             "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
                             "--zap-listen=127.0.0.1:0"])
    for org, damage, reason in DAMAGED:
        sidecar = data / "orgs" / org / "alpha.db.dek"
        sidecar.parent.mkdir(parents=True)
        sidecar.write_bytes(damage(org))
        response = httpx.get(f"{server.public}/v1/alpha/notes",
                             headers={"X-Test-Identity": f"{org}/alice/viewer"}, timeout=30)
        assert response.status_code == 500, org
        error = response.json()["error"]
        assert error["code"] == "key_unwrap_failed"
        assert error["message"] == "this org's data cannot be opened right now"
        assert fingerprint not in response.text
        deadline = time.monotonic() + 10
        logged = [w for w in warnings_in(server, "key_unwrap_failed") if w.get("org") == org]
        while not logged and time.monotonic() < deadline:
            time.sleep(0.05)
            logged = [w for w in warnings_in(server, "key_unwrap_failed") if w.get("org") == org]
        assert logged, server.stderr()
        entry = logged[0]
        assert entry["level"] == "warning" and entry["service"] == "alpha"
        assert entry["sidecar"] == str(sidecar) and reason in str(entry["reason"])
        assert entry.get("request_id")
    assert base64.b64encode(raw).decode() not in server.stderr()
