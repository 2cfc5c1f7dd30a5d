"""A real asyncua server in a subprocess on a free 127.0.0.1 port, and certificates for it.

The server is a separate process so a test can kill it (SIGKILL, as a power cut would) and
start it again on the same port. If it cannot start, the test fails: there is nothing to skip,
the server is pure Python and part of the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shopfloor.edge.model import Reading
from tests.services import free_port

CLIENT_URI = "urn:shopfloor:edge:opcua-client"  # what the connector's client calls itself


@dataclass
class ServerProcess:
    """``python -m shopfloor.edge.connectors.opcua.simserver`` with start / kill / restart."""

    args: list[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/shopfloor/sim"

    def start(self, timeout_s: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "shopfloor.edge.connectors.opcua.simserver"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("READY"):
                    return
                if not line and self.proc.poll() is not None:
                    break
        self.stop()
        raise RuntimeError(f"OPC UA test server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()


@contextlib.contextmanager
def running_server(*args: str) -> Iterator[ServerProcess]:
    srv = ServerProcess(list(args))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """10 devices x 10 variables changing every 0.5 s, plus the Setpoints object."""
    with running_server("--devices", "10", "--per-device", "10", "--period", "0.5") as srv:
        yield srv


class Collector:
    """A sink that keeps every reading."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.changed = asyncio.Event()

    async def __call__(self, reading: Reading) -> None:
        self.readings.append(reading)
        self.changed.set()

    async def wait_for(self, predicate: object, timeout_s: float) -> bool:
        """Wait (bounded) until ``predicate()`` is true; True if it became true."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout_s
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return True


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def make_cert(folder: Path, name: str, uri: str) -> CertPair:
    """A self-signed RSA-2048 application instance certificate with ``uri`` as its URI SAN."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName(socket.gethostname())]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pair = CertPair(folder / f"{name}.der", folder / f"{name}.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    os.chmod(pair.key, 0o600)
    return pair


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
