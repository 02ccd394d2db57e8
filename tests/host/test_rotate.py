"""Master-key rotation: every tenant stays readable, crashes are safe, reruns finish the job."""

from __future__ import annotations

import base64
import fcntl
import gc
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from conftest import SUPPORT, RunningServer, hanzocloud_cmd, subprocess_env
from hanzocloud.errors import ConfigError
from hanzocloud.keys import MasterKey, wrap_dek
from hanzocloud.rotate import check_master_key, rotate_master
from hanzocloud.storage import GLOBAL_ORG as GLOBAL
from hanzocloud.storage import TenantStore

ORGS = [f"org-{i}" for i in range(12)]


async def populate(data: Path, master: MasterKey, *, hold: bool = True) -> None:
    """Tenants under `master`. hold: this process uses the data dir's keys, as a server does
    (False: leave the data dir to a CLI subprocess, which a held lock would keep out)."""
    if hold:
        check_master_key(data, master)
    store = TenantStore(data, master)
    for org in [*ORGS, GLOBAL]:
        async with store.session(org, "notes") as s:
            await s.execute(text("CREATE TABLE t (v TEXT)"))
            await s.execute(text("INSERT INTO t VALUES (:v)"), {"v": f"value of {org}"})
            await s.commit()
    await store.close()


async def readable_with(data: Path, master: MasterKey, org: str) -> bool:
    store = TenantStore(data, master)
    try:
        async with store.session(org, "notes") as s:
            value = (await s.execute(text("SELECT v FROM t"))).scalar_one()
        return bool(value == f"value of {org}")
    except Exception:
        return False
    finally:
        await store.close()


async def test_rotation_keeps_every_tenant_readable(tmp_path: Path) -> None:
    old, new = MasterKey(os.urandom(32), "old"), MasterKey(os.urandom(32), "new")
    await populate(tmp_path, old)
    report = rotate_master(tmp_path, old, new)
    assert report.rewrapped == len(ORGS) + 1
    for org in [*ORGS, GLOBAL]:
        assert await readable_with(tmp_path, new, org)
        assert not await readable_with(tmp_path, old, org)
    check_master_key(tmp_path, new)
    with pytest.raises(ConfigError, match="does not match this data dir"):
        check_master_key(tmp_path, old)


async def test_crash_mid_rotation_then_rerun(tmp_path: Path) -> None:
    old, new = MasterKey(os.urandom(32), "old"), MasterKey(os.urandom(32), "new")
    await populate(tmp_path, old)

    class Crash(Exception):
        pass

    count = 0

    def crash_after_five(_: Path) -> None:
        nonlocal count
        count += 1
        if count == 5:
            raise Crash

    with pytest.raises(Crash):
        rotate_master(tmp_path, old, new, after_each=crash_after_five)
    for org in [*ORGS, GLOBAL]:
        assert await readable_with(tmp_path, old, org) or await readable_with(tmp_path, new, org)
    with pytest.raises(ConfigError, match="unfinished master-key rotation"):
        check_master_key(tmp_path, old)
    other = MasterKey(os.urandom(32), "other")
    with pytest.raises(ConfigError, match="unfinished rotation"):
        rotate_master(tmp_path, old, other)
    report = rotate_master(tmp_path, old, new)
    assert report.already == 5 and report.total == len(ORGS) + 1
    for org in [*ORGS, GLOBAL]:
        assert await readable_with(tmp_path, new, org)
    assert not (tmp_path / "keys" / "rotation.json").exists()


async def test_cli_rotation_survives_a_hard_kill(tmp_path: Path) -> None:
    old_raw, new_raw = os.urandom(32), os.urandom(32)
    old, new = MasterKey(old_raw, "old"), MasterKey(new_raw, "new")
    await populate(tmp_path, old, hold=False)
    env = subprocess_env(OLD_KEY=base64.b64encode(old_raw).decode(),
                         NEW_KEY=base64.b64encode(new_raw).decode(),
                         CLOUD_FAILPOINT="rotate-master:3")
    args = [*hanzocloud_cmd(), "keys", "rotate-master", "--new-key-ref=env:NEW_KEY",
            "--kms-master-key-ref=env:OLD_KEY", f"--data-dir={tmp_path}"]
    crashed = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert crashed.returncode == 70
    journal = json.loads((tmp_path / "keys" / "rotation.json").read_text())
    assert journal["to"] == new.fingerprint
    for org in [*ORGS, GLOBAL]:
        assert await readable_with(tmp_path, old, org) or await readable_with(tmp_path, new, org)
    serve = subprocess.run([*hanzocloud_cmd(), "--kms-master-key-ref=env:OLD_KEY",
                            f"--data-dir={tmp_path}"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert serve.returncode == 2 and "unfinished master-key rotation" in serve.stderr
    del env["CLOUD_FAILPOINT"]
    # Global flags after the subcommand work the same as before it.
    done = subprocess.run([*hanzocloud_cmd(), "keys", "rotate-master",
                           "--new-key-ref=env:NEW_KEY", f"--data-dir={tmp_path}",
                           "--kms-master-key-ref=env:OLD_KEY"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "already on the new key" in done.stdout
    for org in [*ORGS, GLOBAL]:
        assert await readable_with(tmp_path, new, org)


async def test_iam_survives_master_rotation(tmp_path: Path) -> None:
    """Stored secrets of real subsystems are sealed under file keys, not the master key."""
    from conftest import make_settings
    from hanzocloud.host import build_host
    from hanzocloud.registry import SUBSYSTEM_NAMES

    old, new = MasterKey(os.urandom(32), "old"), MasterKey(os.urandom(32), "new")
    settings = make_settings(tmp_path, known=SUBSYSTEM_NAMES, enable="iam,gateway")
    host = build_host(settings, master=old)
    async with host.lifespan():
        keys = host.deps.iam.target.keys
        await keys.active()
        before = keys.jwks()
    rotate_master(tmp_path, old, new)
    host = build_host(settings, master=new)
    async with host.lifespan():
        keys = host.deps.iam.target.keys
        await keys.active()
        after = keys.jwks()
    assert before["keys"] and [k["kid"] for k in before["keys"]] == [
        k["kid"] for k in after["keys"]]


def key_text(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def rotate_cli(data: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hanzocloud_cmd(), "keys", "rotate-master", "--new-key-ref=env:NEW_KEY",
                           "--kms-master-key-ref=env:OLD_KEY", f"--data-dir={data}"],
                          capture_output=True, text=True, env=env, timeout=60)


def sidecars(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*.dek"))}


def test_a_running_server_keeps_rotation_out_until_it_stops(
        tmp_path: Path, server_factory: Callable[..., RunningServer]) -> None:
    """Before: the rotation ran beside the server, which went on wrapping new tenants under the
    old key, and after a restart with the new key those tenants no longer opened."""
    old_raw, new_raw = os.urandom(32), os.urandom(32)
    env = subprocess_env(OLD_KEY=key_text(old_raw), NEW_KEY=key_text(new_raw))
    data = tmp_path / "data"

    def serve(var: str) -> RunningServer:
        return server_factory([sys.executable, str(SUPPORT / "serve_test_host.py"),
                               f"--data-dir={data}", f"--kms-master-key-ref=env:{var}",
                               "--enable=testgate,alpha", "--listen=127.0.0.1:0",
                               "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
                               "--zap-listen=127.0.0.1:0"], env=env)

    def note(server: RunningServer, org: str, body: str) -> None:
        response = httpx.post(f"{server.public}/v1/alpha/notes", json={"body": body},
                              headers={"X-Test-Identity": f"{org}/alice/editor"}, timeout=30)
        assert response.status_code == 201, response.text

    server = serve("OLD_KEY")
    note(server, "acme", "before")
    before = sidecars(data)
    refused = rotate_cli(data, env)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "a server or tool is using" in refused.stderr and "stop" in refused.stderr
    assert not (data / "keys" / "rotation.json").exists() and sidecars(data) == before
    note(server, "newco", "acknowledged while the rotation was refused")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    done = rotate_cli(data, env)
    assert done.returncode == 0, done.stderr
    server = serve("NEW_KEY")
    for org, body in [("acme", "before"), ("newco", "acknowledged while the rotation was refused")]:
        response = httpx.get(f"{server.public}/v1/alpha/notes",
                             headers={"X-Test-Identity": f"{org}/alice/viewer"}, timeout=30)
        assert response.status_code == 200 and response.json()["items"] == [body], org


STARTS = [
    pytest.param(["--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
                  "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0"], id="serve"),
    pytest.param(["iam", "bootstrap", "--org=acme", "--email=a@acme.test",
                  "--password=correct horse battery"], id="iam-bootstrap"),
    pytest.param(["replicate", "restore", "--org=acme", "--service=alpha"], id="replicate-restore"),
]


@pytest.mark.parametrize("command", STARTS)
def test_nothing_uses_the_data_dir_while_a_rotation_holds_it(tmp_path: Path,
                                                            command: list[str]) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    rotation = os.open(data / "keys" / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(rotation, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running rotation does
        result = subprocess.run(
            [*hanzocloud_cmd(), *command, f"--data-dir={data}", "--kms-master-key-ref=env:KEY",
             f"--replicate-url=file://{tmp_path / 'sink'}"],
            capture_output=True, text=True, env=subprocess_env(KEY=key_text(os.urandom(32))),
            timeout=60)
    finally:
        os.close(rotation)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "master-key rotation is running" in result.stderr
    assert not (data / "keys" / "master.json").exists()


async def test_the_shared_lock_is_held_for_the_life_of_the_process(tmp_path: Path) -> None:
    old_raw, new_raw = os.urandom(32), os.urandom(32)
    await populate(tmp_path, MasterKey(old_raw, "old"))  # a tool that used the data dir
    gc.collect()
    probe = os.open(tmp_path / "keys" / "lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # other users (split mode) share it
    finally:
        os.close(probe)
    refused = rotate_cli(tmp_path, subprocess_env(OLD_KEY=key_text(old_raw),
                                                  NEW_KEY=key_text(new_raw)))
    assert refused.returncode == 2 and "a server or tool is using" in refused.stderr
    assert not (tmp_path / "keys" / "rotation.json").exists()


DAMAGE = [
    pytest.param(lambda org, blob: blob[:5], id="truncated"),
    pytest.param(lambda org, blob: wrap_dek(MasterKey(os.urandom(32), "stray"), org, "notes",
                                            os.urandom(32), blob[:16]), id="another-key"),
    pytest.param(lambda org, blob: blob[:-1] + bytes([blob[-1] ^ 1]), id="flipped-bit"),
]


@pytest.mark.parametrize("damage", DAMAGE)
async def test_a_damaged_sidecar_stops_rotation_before_anything_changes(
        tmp_path: Path, damage: Callable[[str, bytes], bytes]) -> None:
    old, new = MasterKey(os.urandom(32), "old"), MasterKey(os.urandom(32), "new")
    await populate(tmp_path, old)
    for org in ("org-3", "org-7"):
        path = tmp_path / "orgs" / org / "notes.db.dek"
        path.write_bytes(damage(org, path.read_bytes()))
    before = sidecars(tmp_path)
    with pytest.raises(ConfigError) as refused:
        rotate_master(tmp_path, old, new)
    message = str(refused.value)
    assert "orgs/org-3/notes.db.dek" in message and "orgs/org-7/notes.db.dek" in message
    assert "orgs/org-4/" not in message and str(tmp_path / "orgs") not in message
    assert sidecars(tmp_path) == before
    assert not (tmp_path / "keys" / "rotation.json").exists()
    check_master_key(tmp_path, old)  # the old key still starts the server
    assert await readable_with(tmp_path, old, "org-4")


RECORDS = [pytest.param(name, content, id=f"{name.split('.')[0]}-{label}")
           for name in ("master.json", "rotation.json")
           for label, content in [("cut", '{"fingerprint": '), ("list", "[1,2]"), ("empty", ""),
                                  ("number", '{"fingerprint": 5, "from": 1, "to": 2}'),
                                  ("binary", "\udcff")]]


@pytest.mark.parametrize(("name", "content"), RECORDS)
async def test_a_damaged_key_record_is_a_config_error_naming_it(tmp_path: Path, name: str,
                                                                 content: str) -> None:
    old, new = MasterKey(os.urandom(32), "old"), MasterKey(os.urandom(32), "new")
    await populate(tmp_path, old)
    (tmp_path / "keys" / name).write_bytes(content.encode("utf-8", "surrogateescape"))
    for attempt in (lambda: check_master_key(tmp_path, old),
                    lambda: rotate_master(tmp_path, old, new)):
        with pytest.raises(ConfigError, match=f"{tmp_path / 'keys' / name} is damaged"):
            attempt()


@pytest.mark.parametrize("name", ["master.json", "rotation.json"])
@pytest.mark.parametrize("command", [[], ["keys", "rotate-master", "--new-key-ref=env:NEW_KEY"]],
                         ids=["serve", "rotate-master"])
def test_a_damaged_key_record_is_one_line_and_exit_2(tmp_path: Path, name: str,
                                                    command: list[str]) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / name).write_text('{"fingerprint": ')
    result = subprocess.run([*hanzocloud_cmd(), *command, f"--data-dir={tmp_path}",
                             "--kms-master-key-ref=env:OLD_KEY", "--listen=127.0.0.1:0",
                             "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
                             "--zap-listen=127.0.0.1:0"], capture_output=True, text=True,
                            env=subprocess_env(OLD_KEY=key_text(os.urandom(32)),
                                               NEW_KEY=key_text(os.urandom(32))), timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert str(tmp_path / "keys" / name) in result.stderr


async def test_without_a_key_record_only_a_key_that_opens_a_sidecar_is_recorded(
        tmp_path: Path) -> None:
    right, wrong = MasterKey(os.urandom(32), "right"), MasterKey(os.urandom(32), "wrong")
    await populate(tmp_path, right)
    record = tmp_path / "keys" / "master.json"
    record.unlink()
    with pytest.raises(ConfigError, match=r"master.json is missing .* does not open global/"):
        check_master_key(tmp_path, wrong)
    assert not record.exists()
    check_master_key(tmp_path, right)
    assert json.loads(record.read_text()) == {"fingerprint": right.fingerprint}
    with pytest.raises(ConfigError, match="does not match this data dir"):
        check_master_key(tmp_path, wrong)


async def test_cli_rotation_logs_json_on_stderr(tmp_path: Path) -> None:
    old_raw, new_raw = os.urandom(32), os.urandom(32)
    await populate(tmp_path, MasterKey(old_raw, "old"), hold=False)
    done = rotate_cli(tmp_path, subprocess_env(OLD_KEY=key_text(old_raw),
                                               NEW_KEY=key_text(new_raw)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("hanzocloud: rewrapped 13 ")
    events = [json.loads(line) for line in done.stderr.splitlines()]
    rotated = [e for e in events if e["event"] == "master_key_rotated"]
    assert len(rotated) == 1 and rotated[0]["level"] == "info"
    assert rotated[0]["rewrapped"] == len(ORGS) + 1 and "timestamp" in rotated[0]
