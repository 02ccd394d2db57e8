"""A gateway whose iam runs in another process: credentials are verified over ZAP."""

from __future__ import annotations

import base64
import secrets
import subprocess
from pathlib import Path

import httpx

from conftest import free_port, hanzocloud_cmd, start_server, subprocess_env
from hanzocloud.config import load_settings
from hanzocloud.host import build_host
from hanzocloud.keys import MasterKey

PASSWORD = "remote iam password"


async def test_jwts_and_api_keys_verified_over_zap(tmp_path: Path) -> None:
    material = secrets.token_bytes(32)
    key_file = tmp_path / "master.key"
    key_file.write_text(base64.b64encode(material).decode())
    key_file.chmod(0o600)
    data, port, zap_port = tmp_path / "iam", free_port(), free_port()
    env = subprocess_env(CLOUD_IAM_ARGON2_MEMORY_KIB="8192", CLOUD_IAM_ARGON2_TIME_COST="1")
    common = [f"--data-dir={data}", f"--kms-master-key-ref=file:{key_file}"]
    boot = subprocess.run([*hanzocloud_cmd(), "iam", "bootstrap", "--org", "acme", "--email",
                           "o@acme.test", "--password", PASSWORD, "--json", *common],
                          capture_output=True, text=True, env=env, timeout=60)
    assert boot.returncode == 0, boot.stderr
    client_id = boot.stdout.strip().splitlines()[-1].split('"client_id": "')[1].split('"')[0]
    server = start_server([*hanzocloud_cmd(), *common, "--enable=iam,gateway",
                           f"--listen=127.0.0.1:{port}", f"--zap-listen=127.0.0.1:{zap_port}",
                           "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0"],
                          env=env)
    try:
        token = httpx.post(f"{server.public}/v1/iam/oauth/token", data={
            "grant_type": "password", "client_id": client_id, "username": "o@acme.test",
            "password": PASSWORD}).json()["access_token"]
        settings = load_settings({"data_dir": tmp_path / "edge", "enable": "gateway",
                                  "kms_master_key_ref": f"file:{key_file}"},
                                 environ={"CLOUD_IAM_ZAP_ADDR": f"127.0.0.1:{zap_port}"})
        host = build_host(settings, master=MasterKey(material, "test"))
        assert host.deps.iam.mode == "remote"
        async with host.lifespan(), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=host.public), base_url="http://edge") as edge:
            # the API key can only be made at iam (the edge has no iam routes)
            made = httpx.post(f"{server.public}/v1/iam/keys", json={"name": "ci",
                                                                    "roles": ["viewer"]},
                              headers={"Authorization": f"Bearer {token}"})
            assert made.status_code == 201, made.text
            for credential in (token, made.json()["key"]):
                who = await edge.get("/v1/gateway/whoami",
                                     headers={"Authorization": f"Bearer {credential}"})
                assert who.status_code == 200, who.text
                assert who.json()["org"] == "acme"
            bad = await edge.get("/v1/gateway/whoami", headers={"Authorization": "Bearer a.b.c"})
            assert bad.status_code == 401
            status = (await edge.get("/v1/gateway/whoami")).status_code
            assert status == 401
    finally:
        server.proc.terminate()
        server.proc.communicate(timeout=20)
