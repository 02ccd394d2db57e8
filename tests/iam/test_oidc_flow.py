"""Against a real server process: authlib completes authorization_code + PKCE through the
sign-in page, PyJWT's PyJWKClient verifies the token via discovery → JWKS, key rotation
keeps old tokens valid, and a gateway elsewhere verifies against the issuer's JWKS."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from authlib.common.security import generate_token
from cloud import Cloud

from conftest import RunningServer, free_port, hanzocloud_cmd, start_server, subprocess_env
from hanzocloud.config import load_settings
from hanzocloud.host import build_host
from hanzocloud.keys import MasterKey

with warnings.catch_warnings():  # authlib announces its next httpx integration on import
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import OAuth2Client

PASSWORD = "a long demo password"
ENV = {"CLOUD_IAM_KEY_RELOAD": "0.2", "CLOUD_IAM_ARGON2_MEMORY_KIB": "8192",
       "CLOUD_IAM_ARGON2_TIME_COST": "1"}


def flags(data: Path, port: int | None = None) -> list[str]:
    out = ["--dev", f"--data-dir={data}"]
    if port is not None:
        out += [f"--listen=127.0.0.1:{port}", f"--iam-issuer=http://127.0.0.1:{port}",
                "--health-listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0",
                "--zap-listen=127.0.0.1:0", "--enable=iam,gateway"]
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("oidc") / "data"
    env = subprocess_env(**ENV)
    # global flags after the subcommand, as an operator would type them
    boot = subprocess.run([*hanzocloud_cmd(), "iam", "bootstrap", "--org", "acme", "--email",
                           "owner@acme.test", "--password", PASSWORD, "--json", *flags(data)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert boot.returncode == 0, boot.stderr
    made = json.loads(boot.stdout.strip().splitlines()[-1])
    assert set(made) == {"org", "user_id", "client_id"}
    port = free_port()
    proc: RunningServer = start_server([*hanzocloud_cmd(), *flags(data, port)], env=env)
    try:
        yield {"url": proc.public, "data": data, "env": env, **made}
    finally:
        proc.proc.terminate()
        proc.proc.communicate(timeout=20)


def discovery(server: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = httpx.get(f"{server['url']}/.well-known/openid-configuration").json()
    assert meta["issuer"] == server["url"]
    return meta


def sign_in(server: dict[str, Any], authorize_url: str, *, password: str = PASSWORD
            ) -> httpx.Response:
    """What a browser does: load the sign-in page, then post the form with its cookie."""
    with httpx.Client(base_url=server["url"]) as browser:
        page = browser.get(authorize_url)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "Hanzo Cloud" in page.text  # brand-themed
        fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">',
                                 page.text))
        fields = {k: v.replace("&amp;", "&") for k, v in fields.items()}
        assert fields["csrf_token"]
        fields.update(email="owner@acme.test", password=password)
        return browser.post("/v1/iam/oauth/authorize", data=fields, follow_redirects=False)


def test_authlib_authorization_code_with_pkce_and_pyjwkclient(server: dict[str, Any]) -> None:
    meta = discovery(server)
    redirect = f"http://127.0.0.1:{free_port()}/callback"  # loopback: any port (RFC 8252)
    client = OAuth2Client(client_id=server["client_id"], redirect_uri=redirect,
                          scope="openid profile email", code_challenge_method="S256",
                          token_endpoint_auth_method="none")
    verifier = generate_token(64)
    url, state = client.create_authorization_url(meta["authorization_endpoint"],
                                                 code_verifier=verifier, nonce="n-123")
    answer = sign_in(server, url)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith(redirect) and f"state={state}" in location
    token = client.fetch_token(meta["token_endpoint"], authorization_response=location,
                               code_verifier=verifier)
    assert token["token_type"] == "Bearer" and token["refresh_token"]
    jwks = jwt.PyJWKClient(meta["jwks_uri"])
    key = jwks.get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(token["access_token"], key.key, algorithms=["RS256"],
                        audience=server["url"], issuer=server["url"])
    assert claims["owner"] == "acme" and claims["sub"] == server["user_id"]
    id_claims = jwt.decode(token["id_token"], jwks.get_signing_key_from_jwt(token["id_token"]).key,
                           algorithms=["RS256"], audience=server["client_id"],
                           issuer=server["url"])
    assert id_claims["nonce"] == "n-123"
    info = httpx.get(meta["userinfo_endpoint"],
                     headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 200 and info.json()["email"] == "owner@acme.test"
    refreshed = client.refresh_token(meta["token_endpoint"])
    assert refreshed["access_token"] != token["access_token"]


def test_wrong_password_on_the_page_redirects_nowhere(server: dict[str, Any]) -> None:
    meta = discovery(server)
    client = OAuth2Client(client_id=server["client_id"],
                          redirect_uri="http://127.0.0.1/callback", scope="openid",
                          code_challenge_method="S256")
    url, _ = client.create_authorization_url(meta["authorization_endpoint"],
                                             code_verifier=generate_token(64))
    answer = sign_in(server, url, password="not the password")
    assert answer.status_code == 401 and "Invalid email or password." in answer.text
    assert "location" not in answer.headers


def password_token(server: dict[str, Any]) -> str:
    r = httpx.post(f"{server['url']}/v1/iam/oauth/token", data={
        "grant_type": "password", "client_id": server["client_id"],
        "username": "owner@acme.test", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def test_a_gateway_elsewhere_verifies_against_the_issuer_jwks(
        server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_GATEWAY_JWKS_MIN_REFETCH", "0")
    settings = load_settings({"data_dir": tmp_path / "edge", "dev": True, "enable": "gateway",
                              "iam_issuer": server["url"]}, environ={})
    host = build_host(settings, master=MasterKey(b"\x05" * 32, "t"))
    old = password_token(server)
    async with host.lifespan():
        edge = Cloud(host, httpx.AsyncClient(transport=httpx.ASGITransport(app=host.public),
                                             base_url="http://edge.test"))
        async with edge.client:
            who = await edge.client.get("/v1/gateway/whoami",
                                        headers={"Authorization": f"Bearer {old}"})
            assert who.status_code == 200, who.text
            assert who.json()["org"] == "acme" and who.json()["user"] == server["user_id"]
            # rotate with the CLI while the server runs; global flags before the subcommand
            rotate = subprocess.run([*hanzocloud_cmd(), *flags(server["data"]), "iam",
                                     "rotate-keys"], capture_output=True, text=True,
                                    env=server["env"], timeout=60)
            assert rotate.returncode == 0, rotate.stderr
            new_kid = rotate.stdout.split("new signing key ")[1].split()[0]
            for _ in range(50):  # the server re-reads its keys every 0.2 s here
                new = password_token(server)
                if jwt.get_unverified_header(new)["kid"] == new_kid:
                    break
                await asyncio.sleep(0.1)
            assert jwt.get_unverified_header(new)["kid"] == new_kid
            for token in (new, old):  # unknown kid → refetch; the retired key is still there
                r = await edge.client.get("/v1/gateway/whoami",
                                          headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200, r.text
            key = await edge.client.get("/v1/gateway/whoami",
                                        headers={"Authorization": "Bearer hk-acme_abc"})
            assert key.status_code == 503
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host.admin),
                                         base_url="http://admin.test") as admin:
                status = await admin.get("/v1/gateway/status",
                                         headers={"Authorization": f"Bearer {old}"})
            assert status.status_code == 403  # a valid token, but not a platform admin
