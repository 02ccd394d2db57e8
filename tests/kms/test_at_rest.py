"""What lands on disk: no secret value in kms.db, its WAL or its key sidecars, whether the
handle is open or closed; not even in the decrypted pages (values are sealed per path);
and a master-key rotation keeps every secret and key readable."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from cloud import Cloud, running_cloud

from hanzocloud.config import load_settings
from hanzocloud.host import build_host
from hanzocloud.identity import Identity, current_identity
from hanzocloud.keys import MasterKey
from hanzocloud.rotate import rotate_master

from .support import Kms, b64

ORG = "acme"


def needles(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, raw[8:24], b64(raw).encode(), value.encode("utf-16-le")]


def files_holding(root: Path, value: str) -> list[str]:
    """Every file under `root` whose bytes contain the value in any common encoding."""
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(n in data for n in needles(value)):
            hits.append(str(path.relative_to(root)))
    return hits


def decrypted_dump(cloud: Cloud) -> bytes:
    """Every cell of every kms table, read through SQLCipher with the real page key."""
    conn = cloud.host.deps.tenants.connect_sync(ORG, "kms")
    try:
        out = bytearray()
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # names from sqlite_master
                for cell in row:
                    out += cell if isinstance(cell, bytes) else str(cell).encode()
        return bytes(out)
    finally:
        conn.close()


async def test_no_secret_value_on_disk(cloud: Cloud, kms: Kms) -> None:
    data_dir = cloud.host.settings.data_dir
    value = "ZEBRA-" + secrets.token_hex(24)
    for suffix in ("", "-v2", "-v3"):
        await kms.ok("PUT", "/secrets/prod/db/password", json={"value": value + suffix})
    assert (await kms.ok("GET", "/secrets/prod/db/password"))["value"] == value + "-v3"
    await kms.ok("POST", "/transit/keys/k", json={"type": "aes256-gcm"})
    await kms.ok("POST", "/transit/encrypt/k", json={"plaintext": b64(value)})

    kms_db = data_dir / "orgs" / ORG / "kms.db"
    assert kms_db.exists() and kms_db.with_name("kms.db.dek").exists()
    # The handle is open: the writes are in the WAL, not yet in the main file.
    assert kms_db.with_name("kms.db-wal").stat().st_size > 0
    assert files_holding(data_dir, value) == []

    # Close the handle (checkpoint into the main file) and look again.
    await cloud.host.deps.tenants.evict(ORG, "kms")
    assert kms_db.with_name("kms.db-wal").stat().st_size == 0
    assert files_holding(data_dir, value) == []
    # Even with the page key, the rows hold only sealed bytes.
    dump = decrypted_dump(cloud)
    assert b"prod/db/password" in dump  # the dump is real: paths are stored in clear
    assert not any(n in dump for n in needles(value))
    # And the value is still there for its owner after reopening.
    assert (await kms.ok("GET", "/secrets/prod/db/password"))["value"] == value + "-v3"


async def test_destroy_removes_the_sealed_bytes(cloud: Cloud, kms: Kms) -> None:
    await kms.ok("PUT", "/secrets/gone", json={"value": "destroy-me"})
    await kms.ok("PUT", "/secrets/gone", json={"value": "keep-me"})

    def sealed_versions() -> dict[int, bool]:
        conn = cloud.host.deps.tenants.connect_sync(ORG, "kms")
        try:
            rows = conn.execute("SELECT version, sealed IS NOT NULL FROM secret_versions "
                                "WHERE path = 'gone'").fetchall()
            return {int(v): bool(has) for v, has in rows}
        finally:
            conn.close()

    assert sealed_versions() == {1: True, 2: True}
    await kms.ok("POST", "/destroy/gone", json={"versions": [1]})
    assert sealed_versions() == {1: False, 2: True}


async def test_master_key_rotation_keeps_secrets_and_keys(tmp_path: Path) -> None:
    old, new = MasterKey(secrets.token_bytes(32), "old"), MasterKey(secrets.token_bytes(32), "new")
    data_dir = tmp_path / "data"
    async with running_cloud(data_dir, ["kms"], master=old) as cloud:
        kms = Kms(cloud)
        await kms.ok("PUT", "/secrets/app/db", json={"value": "survives rotation"})
        await kms.ok("POST", "/transit/keys/enc", json={"type": "aes256-gcm"})
        await kms.ok("POST", "/transit/keys/sig", json={"type": "ml-dsa-65"})
        ct = (await kms.ok("POST", "/transit/encrypt/enc", json={"plaintext": b64("p")}))
        sig = (await kms.ok("POST", "/transit/sign/sig", json={"input": b64("m")}))
    sidecar = data_dir / "orgs" / ORG / "kms.db.dek"
    before = sidecar.read_bytes()
    assert rotate_master(data_dir, old, new).rewrapped >= 1
    assert sidecar.read_bytes() != before  # rewrapped; the page key (and seal root) unchanged
    # Reopen with the new key: kms alone (iam's own keys are iam's business), through its
    # in-process client acting for the org.
    settings = load_settings({"data_dir": data_dir, "dev": True, "enable": "kms"}, environ={})
    host = build_host(settings, master=new)
    async with host.lifespan():
        client: Any = host.deps.kms
        token = current_identity.set(Identity(org=ORG, user="after-rotation"))
        try:
            assert await client.get_secret("kms://hanzo/acme/app/db") == "survives rotation"
            assert await client.decrypt("enc", ct["ciphertext"]) == b"p"
            assert await client.verify("sig", b"m", sig["signature"]) is True
        finally:
            current_identity.reset(token)


async def test_a_sealed_value_moved_to_another_path_does_not_open(cloud: Cloud, kms: Kms) -> None:
    await kms.ok("PUT", "/secrets/a", json={"value": "value-of-a"})
    await kms.ok("PUT", "/secrets/b", json={"value": "value-of-b"})
    await cloud.host.deps.tenants.evict(ORG, "kms")
    conn = cloud.host.deps.tenants.connect_sync(ORG, "kms")
    try:  # tamper with the file directly, as someone holding the page key could
        conn.execute("UPDATE secret_versions SET sealed = (SELECT sealed FROM secret_versions "
                     "WHERE path = 'a') WHERE path = 'b'")
        conn.commit()
    finally:
        conn.close()
    r = await kms.call("GET", "/secrets/b")
    assert r.status_code == 500 and r.json()["error"]["code"] == "kms_seal_broken"
    assert "value-of-a" not in r.text
    assert (await kms.ok("GET", "/secrets/a"))["value"] == "value-of-a"
