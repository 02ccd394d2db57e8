"""Behind a reverse proxy: forwarding headers name the client only when the proxy is trusted.

A real server process; the test plays the proxy (it connects from 127.0.0.1) and sets
`X-Forwarded-For` as one would. Anonymous requests are rate limited per client address, so
the buckets show which address the server believed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import RunningServer, hanzocloud_cmd, subprocess_env
from hanzocloud.config import parse_proxies
from hanzocloud.errors import ConfigError
from hanzocloud.http import client_source

# Two anonymous requests per client address, then 429 (the bucket refills only after hours).
TIGHT = subprocess_env(CLOUD_GATEWAY_RATE_ANON="0.0001:2")


def _serve(factory: Callable[..., RunningServer], tmp_path: Path, *extra: str) -> RunningServer:
    return factory([*hanzocloud_cmd(), "--dev", f"--data-dir={tmp_path}", "--enable=iam,gateway",
                    "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
                    "--admin-listen=127.0.0.1:0", "--zap-listen=127.0.0.1:0",
                    "--log-level=info", *extra], env=TIGHT)


def _status(client: httpx.Client, forwarded: str | None = None, proto: str | None = None) -> int:
    headers = {}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    if proto is not None:
        headers["X-Forwarded-Proto"] = proto
    return client.get("/v1/brand", headers=headers).status_code


def _logged_clients(server: RunningServer) -> list[str | None]:
    deadline = time.monotonic() + 5
    while True:
        clients = []
        for line in server.stderr().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "request" and event.get("route") == "/v1/brand":
                clients.append(event.get("client"))
        if clients or time.monotonic() > deadline:
            return clients
        time.sleep(0.05)


def test_a_trusted_proxy_names_the_client(server_factory: Callable[..., RunningServer],
                                          tmp_path: Path) -> None:
    server = _serve(server_factory, tmp_path, "--trusted-proxies=127.0.0.1, 10.0.0.0/8")
    with httpx.Client(base_url=server.public, timeout=10) as client:
        assert [_status(client, "203.0.113.7") for _ in range(3)] == [200, 200, 429]
        # Another client behind the same proxy has a bucket of its own.
        assert _status(client, "203.0.113.8") == 200
        # Entries the client wrote itself sit left of what the proxies appended: the address
        # is the right-most one no trusted proxy owns, so a forged entry gains nothing.
        assert _status(client, "198.51.100.1, 203.0.113.7") == 429
        assert _status(client, "203.0.113.7, 10.1.2.3") == 429  # through a second, inner proxy
        # The proxy's own address is not throttled on their behalf.
        assert _status(client) == 200
        # An IPv6 client is budgeted by the /64 it holds, not per address.
        assert [_status(client, f"2001:db8:0:7::{n}") for n in (1, 2, 3)] == [200, 200, 429]
        assert _status(client, "2001:db8:0:8::1") == 200
    logged = _logged_clients(server)
    assert "203.0.113.8" in logged and "127.0.0.1" in logged


def test_an_untrusted_peer_cannot_choose_its_address(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = _serve(server_factory, tmp_path)  # the default: no proxy is trusted
    with httpx.Client(base_url=server.public, timeout=10) as client:
        assert [_status(client, "203.0.113.7") for _ in range(2)] == [200, 200]
        assert _status(client, "203.0.113.8") == 429  # still 127.0.0.1's bucket
        assert _status(client, "203.0.113.9", proto="https") == 429
    assert set(_logged_clients(server)) == {"127.0.0.1"}


def test_a_proxy_not_in_the_list_is_not_trusted(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = _serve(server_factory, tmp_path, "--trusted-proxies=10.0.0.0/8,::1")
    with httpx.Client(base_url=server.public, timeout=10) as client:
        assert [_status(client, f"203.0.113.{n}") for n in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(("client", "source"), [
    (("203.0.113.7", 5000), "203.0.113.7"),
    (("2001:db8:0:7:aaaa::1", 5000), "2001:db8:0:7::/64"),
    (("::ffff:203.0.113.7", 5000), "203.0.113.7"),
    (("/run/proxy.sock", 0), "/run/proxy.sock"),
    (("x" * 500, 0), "x" * 100),
    (None, "unknown"),
])
def test_the_client_source_of_a_request(client: tuple[str, int] | None, source: str) -> None:
    assert client_source({"type": "http", "client": client}) == source


def test_proxy_lists_are_normalised() -> None:
    assert parse_proxies("") == ()
    assert parse_proxies(" 127.0.0.1 , 10.9.8.7/8,fd00::1/8,10.0.0.0/8") == (
        "127.0.0.1/32", "10.0.0.0/8", "fd00::/8")


@pytest.mark.parametrize("text", ["banana", "10.0.0.0/33", "*", "10.0.0.1:80", "example.com"])
def test_a_bad_proxy_entry_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--trusted-proxies: .* is not an IP address"):
        parse_proxies(f"127.0.0.1,{text}")


def test_the_list_comes_from_flags_env_or_toml(tmp_path: Path) -> None:
    from hanzocloud.config import load_settings

    config = tmp_path / "cloud.toml"
    config.write_text('trusted_proxies = ["10.0.0.0/8", "fd00::/8"]\n')
    data = {"dev": True, "data_dir": str(tmp_path / "data")}
    assert load_settings(data, environ={}, config_file=config).trusted_proxies == (
        "10.0.0.0/8", "fd00::/8")
    assert load_settings(data, environ={"CLOUD_TRUSTED_PROXIES": "192.168.0.1"},
                         config_file=config).trusted_proxies == ("192.168.0.1/32",)
    assert load_settings({**data, "trusted_proxies": ""}, environ={},
                         config_file=config).trusted_proxies == ()
    assert load_settings(data, environ={}).trusted_proxies == ()
