"""kms running alone (`python -m subsystems.kms`): the same mount serves HTTP and, over ZAP,
the Deps client another process would use."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import RunningServer, subprocess_env
from hanzocloud.identity import Identity, current_identity
from hanzocloud.zap import ZapChannel
from hanzocloud.zap.gen.kms import KmsRpcClient

TOKEN = "kms-alone-test-token"


async def test_kms_alone_serves_http_and_zap(server_factory: Callable[..., RunningServer],
                                             tmp_path: Path) -> None:
    server = server_factory(
        [sys.executable, "-m", "subsystems.kms", "--dev", f"--data-dir={tmp_path}",
         "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
         "--zap-listen=127.0.0.1:0"], env=subprocess_env(CLOUD_ZAP_TOKEN=TOKEN))
    async with httpx.AsyncClient(base_url=server.public) as http:
        r = await http.get("/v1/kms/secrets")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        paths = (await http.get("/v1/openapi.json")).json()["paths"]
        assert "/v1/kms/transit/encrypt/{name}" in paths

    channel = ZapChannel(server.urls["zap"].removeprefix("zap://"), key=TOKEN.encode())
    kms = KmsRpcClient(channel)
    token = current_identity.set(Identity(org="acme", user="remote-svc"))
    try:
        assert await kms.put_secret("kms://hanzo/acme/remote/cfg", "over-the-wire") == 1
        assert await kms.get_secret("kms://hanzo/acme/remote/cfg") == "over-the-wire"
    finally:
        current_identity.reset(token)
        await channel.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    assert (tmp_path / "orgs" / "acme" / "kms.db").exists()
