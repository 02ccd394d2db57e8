"""Run every listener of one host on one event loop, and drain cleanly on SIGTERM.

Public HTTP, health/metrics and admin are uvicorn servers sharing the loop (and the ZAP
listener joins them when there are services to serve). On SIGTERM or SIGINT each stops
accepting, in-flight requests finish (bounded by `--shutdown-timeout`), subsystems stop in
reverse order, tenant handles close, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import structlog
import uvicorn

from hanzocloud.config import Address
from hanzocloud.host import Host
from hanzocloud.httpguard import guarded

log = structlog.get_logger("hanzocloud.server")


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to the host (one handler for all)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(addr: Address) -> socket.socket:
    """Bind a listening TCP socket (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((addr.host, addr.port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {addr}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def _url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"


def _uvicorn(app: Any, host: Host) -> _Server:
    settings = host.settings
    config = uvicorn.Config(
        app, lifespan="off", access_log=False, log_config=None, server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout) or 1,
        # Forwarding headers count only from the operator's own proxies (and then name the
        # client: rate limits, login throttles, realtime caps and logs see it, not the proxy).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies), date_header=True,
        http=guarded(settings.header_limit, settings.header_timeout),
    )
    return _Server(config)


async def serve(host: Host, *, announce: Callable[[str], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status (0 after a clean drain)."""
    say = announce or (lambda line: print(line, flush=True))
    s = host.settings
    listeners = [("public", host.public, s.listen), ("health", host.health, s.health_listen),
                 ("admin", host.admin, s.admin_listen)]
    sockets = [(name, app, bind(addr)) for name, app, addr in listeners]
    zap = None
    if host.zap_services:
        from hanzocloud.remote import start_zap

        zap = await start_zap(host.zap_services, host.deps.master, host=s.zap_listen.host,
                              port=s.zap_listen.port)
    loop = asyncio.get_running_loop()
    servers = [(_uvicorn(app, host), sock) for _, app, sock in sockets]
    health_server = servers[1][0]  # kept up while the others drain, so /readyz says so
    drain_until = math.inf  # when the drain's time is up (set by the first signal)

    def on_signal(signum: int) -> None:
        nonlocal drain_until
        log.info("signal_received", signal=signal.Signals(signum).name)
        host.state.draining = True
        drain_until = min(drain_until, loop.time() + s.shutdown_timeout)
        for server, _ in servers:
            if server is not health_server:
                server.should_exit = True
        if zap is not None:  # as the HTTP listeners: no new calls, running ones finish
            zap.stop_accepting()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    async with host.lifespan():
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in servers]
        while not all(server.started for server, _ in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        for name, _, sock in sockets:
            say(f"hanzocloud: {name:<7} {_url(sock)}")
        if zap is not None:
            say(f"hanzocloud: zap     zap://{_url_of(s.zap_listen.host, zap.port)}")
        # Everything built so far (modules, routes, subsystems) lives as long as the process:
        # move it out of the collector's sight, so full collections stay short under load.
        gc.freeze()
        say(f"hanzocloud: ready (brand {host.deps.brand.name}, subsystems: "
            f"{', '.join(p.name for p in host.points) or 'none'})")
        traffic = [t for t, (server, _) in zip(tasks, servers, strict=True)
                   if server is not health_server]
        results = await asyncio.gather(*traffic, return_exceptions=True)
        health_server.should_exit = True
        results += await asyncio.gather(*(set(tasks) - set(traffic)), return_exceptions=True)
        if zap is not None:  # what still runs there has the rest of the drain's time
            await zap.drain(min(drain_until - loop.time(), s.shutdown_timeout))
            await zap.close()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures:
        log.error("listener_failed", error=repr(failure))
    sys.stdout.flush()
    return 1 if failures else 0
