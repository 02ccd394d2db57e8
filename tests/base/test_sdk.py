"""The official PocketBase JS SDK (npm `pocketbase`), run with node against a real server.

`js/sdk_test.mjs` creates collections, does CRUD, lists with filter, sort and expand, runs
batches, checks error shapes, and holds a realtime subscription that must see create, update
and delete events, while a second org sees none of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import RunningServer, subprocess_env

JS = Path(__file__).resolve().parent / "js"
PASSWORD = "sdk test password 1234"


def ensure_node_modules() -> None:
    """Install the SDK from the lockfile the first time (node_modules is not committed)."""
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed"
    if not (JS / "node_modules" / "pocketbase").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True,
                       timeout=300, capture_output=True)


def bootstrap_org(data_dir: Path, org: str) -> dict[str, str]:
    """Create an org with its owner and first-party app through `hanzocloud iam bootstrap`."""
    out = subprocess.run(
        [sys.executable, "-m", "hanzocloud", "iam", "bootstrap", f"--org={org}",
         f"--email=owner@{org}.test", f"--password={PASSWORD}", "--json", "--dev",
         f"--data-dir={data_dir}"],
        env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def sdk_token(public_url: str, org: dict[str, str], user: str = "owner") -> str:
    """A real access token for a user of the org (the password grant of its first-party
    app): by default its owner."""
    r = httpx.post(f"{public_url}/v1/iam/oauth/token", data={
        "grant_type": "password", "client_id": org["client_id"],
        "username": f"{user}@{org['org']}.test", "password": PASSWORD, "scope": "openid"})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def member_token(public_url: str, org: dict[str, str], owner: str) -> str:
    """A token for a new member of the org (role viewer: rules apply to it)."""
    r = httpx.post(f"{public_url}/v1/iam/users", headers={"Authorization": f"Bearer {owner}"},
                   json={"email": f"member@{org['org']}.test", "password": PASSWORD})
    assert r.status_code == 201, r.text
    return sdk_token(public_url, org, "member")


def test_pocketbase_js_sdk(server_factory: Callable[..., RunningServer],
                           tmp_path: Path) -> None:
    ensure_node_modules()
    data_dir = tmp_path / "data"
    acme, beta = bootstrap_org(data_dir, "acme"), bootstrap_org(data_dir, "beta")
    server = server_factory(
        [sys.executable, "-m", "hanzocloud", "--enable=iam,base,gateway", "--dev",
         f"--data-dir={data_dir}", "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
         "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0"])
    owner = sdk_token(server.public, acme)
    env = {**subprocess_env(), "BASE_URL": f"{server.public}/v1/base", "TOKEN": owner,
           "MEMBER_TOKEN": member_token(server.public, acme, owner),
           "OTHER_TOKEN": sdk_token(server.public, beta)}
    run = subprocess.run(["node", "sdk_test.mjs"], cwd=JS, env=env, capture_output=True,
                         text=True, timeout=120)
    steps = [json.loads(line)["step"] for line in run.stdout.splitlines()
             if line.startswith("{")]
    assert run.returncode == 0, run.stdout + run.stderr
    assert steps == ["collections", "subscribed", "crud", "list", "errors", "batch",
                     "realtime", "realtime options", "isolation", "done"]
