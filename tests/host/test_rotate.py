"""Master-key rotation: every tenant stays readable, crashes are safe, reruns finish the job."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import hanzocloud_cmd, subprocess_env
from hanzocloud.errors import ConfigError
from hanzocloud.keys import MasterKey
from hanzocloud.rotate import check_master_key, rotate_master
from hanzocloud.storage import GLOBAL_ORG as GLOBAL
from hanzocloud.storage import TenantStore

ORGS = [f"org-{i}" for i in range(12)]


async def populate(data: Path, master: MasterKey) -> None:
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
    await populate(tmp_path, old)
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
