"""ZAP over TLS with a self-signed certificate made in the test."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import time
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hanzocloud.errors import SubsystemUnavailable
from hanzocloud.zap import ZapChannel, ZapServer

from .helpers import KEY, EchoService


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_round_trip(tmp_path: Path, kitchen: ModuleType) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = ZapServer(key=KEY, tls=server_ctx)
    server.register("echo", kitchen.ECHO_METHODS, EchoService(kitchen))
    await server.start("127.0.0.1", 0)
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        async with ZapChannel(f"localhost:{server.port}", key=KEY, tls=trusted) as channel:
            client = kitchen.EchoRpcClient(channel)
            assert await client.echo("over tls") == "over tls"
            value = kitchen.Everything(data=b"\x00" * 1000, text="t")
            assert await client.round_trip(value) == value
        # A client that does not trust the certificate never gets to send a request.
        untrusting = ssl.create_default_context()
        async with ZapChannel(f"localhost:{server.port}", key=KEY, tls=untrusting) as channel:
            with pytest.raises(SubsystemUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await kitchen.EchoRpcClient(channel).echo("x")
    finally:
        await server.close()


async def test_a_peer_that_never_starts_tls_is_dropped_in_time(
    tmp_path: Path, kitchen: ModuleType
) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = ZapServer(key=KEY, tls=server_ctx, handshake_timeout=0.3)
    server.register("echo", kitchen.ECHO_METHODS, EchoService(kitchen))
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # plain TCP
        started = time.perf_counter()
        with contextlib.suppress(ConnectionError):  # an abort may reset rather than close
            assert await asyncio.wait_for(reader.read(), 5.0) == b""
        assert time.perf_counter() - started < 1.5  # asyncio's own default is 60 s
        writer.close()
    finally:
        await server.close()
