"""HTTPS and MQTTS certificates, HSTS and the hardening headers, Secure cookies.

A real uvicorn server answers over TLS in a thread; the MQTTS test starts the embedded broker
and reads the certificate it presents.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.api.server import tls_options
from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput
from shopfloor.security.tls import (
    RENEW_BEFORE,
    VALID_FOR,
    fingerprint,
    make_self_signed,
    secure_cookie,
    server_certificate,
)
from tests.services import free_port

HSTS = "max-age=31536000; includeSubDomains"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def write_pair(folder: Path, hosts: list[str]) -> tuple[Path, Path, x509.Certificate]:
    """A certificate and key as an operator would provide them."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = make_self_signed(hosts, dt.datetime.now(dt.UTC))
    cert_file, key_file = folder / "provided.crt", folder / "provided.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, cert


# ---- certificates ---------------------------------------------------------------------------


def test_self_signed_made_once_then_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, http_host="10.1.2.3", https=True)
    first = server_certificate(settings, NOW)
    assert first.generated
    assert first.self_signed
    assert first.cert_file == tmp_path / "tls" / "server.crt"
    assert first.key_file.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(first.cert_file.read_bytes())
    assert fingerprint(cert) == first.fingerprint
    assert len(first.fingerprint.split(":")) == 32
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= VALID_FOR
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert {"localhost", socket.gethostname()} <= names
    assert ips == {"127.0.0.1", "10.1.2.3"}

    again = server_certificate(settings, NOW + dt.timedelta(days=100))
    assert not again.generated
    assert again.fingerprint == first.fingerprint
    assert again.cert_file.read_bytes() == first.cert_file.read_bytes()


def test_self_signed_renewed_near_expiry_and_when_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, https=True)
    first = server_certificate(settings, NOW)
    late = NOW + VALID_FOR - RENEW_BEFORE + dt.timedelta(hours=1)
    renewed = server_certificate(settings, late)
    assert renewed.generated
    assert renewed.fingerprint != first.fingerprint
    assert "expires on" in caplog.text
    # A key that no longer matches (or garbage) is replaced, not served.
    (tmp_path / "tls" / "server.key").write_bytes(b"not a key")
    fixed = server_certificate(settings, late)
    assert fixed.generated
    assert fixed.fingerprint != renewed.fingerprint


def test_provided_certificate_is_used(tmp_path: Path) -> None:
    cert_file, key_file, cert = write_pair(tmp_path / "pki", ["plant.example"])
    settings = Settings(
        data_dir=tmp_path / "data", https=True, tls_cert_file=cert_file, tls_key_file=key_file
    )
    got = server_certificate(settings)
    assert (got.cert_file, got.key_file) == (cert_file, key_file)
    assert got.fingerprint == fingerprint(cert)
    assert not got.generated
    assert not (tmp_path / "data" / "tls").exists()  # nothing self-signed was made


def test_bad_certificate_files_name_the_setting(tmp_path: Path) -> None:
    cert_file, key_file, _ = write_pair(tmp_path / "a", ["a.example"])
    _, other_key, _ = write_pair(tmp_path / "b", ["b.example"])
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")

    def error(**files: Path) -> BadInput:
        with pytest.raises(BadInput) as info:
            server_certificate(Settings(data_dir=tmp_path / "d", https=True, **files))
        return info.value

    e = error(tls_cert_file=tmp_path / "missing.crt", tls_key_file=key_file)
    assert e.field == "tls_cert_file"
    assert "cannot read" in e.message
    e = error(tls_cert_file=junk, tls_key_file=key_file)
    assert e.field == "tls_cert_file"
    assert "no PEM certificate" in e.message
    e = error(tls_cert_file=cert_file, tls_key_file=junk)
    assert e.field == "tls_key_file"
    assert "no PEM private key" in e.message
    e = error(tls_cert_file=cert_file, tls_key_file=other_key)
    assert e.field == "tls_key_file"
    assert "does not belong" in e.message
    e = error(tls_cert_file=cert_file)
    assert e.field == "tls_key_file"
    e = error(tls_key_file=key_file)
    assert e.field == "tls_cert_file"


def test_start_prints_the_fingerprint(tmp_path: Path) -> None:
    out = io.StringIO()
    assert tls_options(Settings(data_dir=tmp_path, https=False), out) is None
    cert = tls_options(Settings(data_dir=tmp_path, https=True), out)
    assert cert is not None
    assert f"SHA-256 fingerprint {cert.fingerprint}" in out.getvalue()
    assert "self-signed, made now" in out.getvalue()


# ---- a real HTTPS server --------------------------------------------------------------------


def add_cookie_route(app: FastAPI) -> None:
    @app.get("/api/v1/test-cookie", include_in_schema=False)
    def cookie(response: Response) -> dict[str, bool]:
        response.set_cookie("plain", "1", httponly=True, samesite="strict")
        response.set_cookie("already", "2", secure=True)
        return {"ok": True}


@pytest.fixture
def https_platform(tmp_path: Path) -> Iterator[Platform]:
    plat = Platform(Settings(data_dir=tmp_path / "data", mqtt_mode="off", https=True))
    yield plat
    plat.close()


def test_https_server_answers_over_tls_with_hsts(https_platform: Platform) -> None:
    cert = tls_options(https_platform.settings, io.StringIO())
    assert cert is not None
    _info, key = https_platform.registry.create_tenant("acme")
    app = create_app(platform=https_platform)
    add_cookie_route(app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ssl_certfile=cert.cert_file,
            ssl_keyfile=cert.key_file,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        base = f"https://localhost:{port}"
        with httpx.Client(verify=ssl.create_default_context(cafile=cert.cert_file)) as c:
            health = c.get(f"{base}/health")
            assert health.status_code == 200
            assert health.headers["strict-transport-security"] == HSTS
            assert health.headers["x-content-type-options"] == "nosniff"
            assert health.headers["x-frame-options"] == "DENY"
            assert health.headers["referrer-policy"] == "no-referrer"
            assert "cache-control" not in health.headers  # not an API answer
            r = c.get(f"{base}/api/v1/tenant", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
            assert r.json()["name"] == "acme"
            assert r.headers["cache-control"] == "no-store"
            assert r.headers["strict-transport-security"] == HSTS
            # Ingest is answered before the middleware stack and carries the headers too.
            ingest = c.post(f"{base}/api/v1/ingest", headers={"Authorization": "Bearer nope"})
            assert ingest.status_code == 401
            assert ingest.headers["strict-transport-security"] == HSTS
            cookies = c.get(f"{base}/api/v1/test-cookie").headers.get_list("set-cookie")
            assert len(cookies) == 2
            for value in cookies:
                attrs = [a.strip().lower() for a in value.split(";")]
                assert attrs.count("secure") == 1, value
            assert "httponly" in cookies[0].lower()
            assert "samesite=strict" in cookies[0].lower()
        # Without the certificate the client refuses: it is not trusted by default.
        with httpx.Client() as c, pytest.raises(httpx.ConnectError):
            c.get(f"{base}/health")
    finally:
        server.should_exit = True
        thread.join(10)


def test_plain_http_has_no_hsts_but_the_other_headers(client: TestClient) -> None:
    health = client.get("/health")
    assert "strict-transport-security" not in health.headers
    assert health.headers["x-content-type-options"] == "nosniff"
    assert health.headers["x-frame-options"] == "DENY"
    assert client.get("/api/v1/tenant").headers["cache-control"] == "no-store"  # a 401 too


def test_cookie_secure_only_on_https(tmp_path: Path) -> None:
    for https in (False, True):
        plat = Platform(Settings(data_dir=tmp_path / str(https), mqtt_mode="off", https=https))
        try:
            app = create_app(platform=plat)
            add_cookie_route(app)
            with TestClient(app) as c:
                plain = c.get("/api/v1/test-cookie").headers.get_list("set-cookie")[0]
                assert ("; Secure" in plain) is https
        finally:
            plat.close()


def test_secure_cookie_adds_the_attribute_once() -> None:
    assert secure_cookie(b"a=1; Path=/") == b"a=1; Path=/; Secure"
    assert secure_cookie(b"a=1; secure; HttpOnly") == b"a=1; secure; HttpOnly"
    assert secure_cookie(b"secure=1") == b"secure=1; Secure"  # a cookie named 'secure'


# ---- MQTTS ----------------------------------------------------------------------------------


def test_embedded_broker_serves_the_provided_certificate(tmp_path: Path) -> None:
    cert_file, key_file, cert = write_pair(tmp_path / "pki", ["localhost", "127.0.0.1"])
    tls_port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        mqtt_port=free_port(),
        mqtt_tls_port=tls_port,
        tls_cert_file=cert_file,
        tls_key_file=key_file,
    )
    plat = Platform(settings)
    try:
        info, _ = plat.registry.create_tenant("acme")
        plat.registry.create_device(info.id, "press-01")
        dev_cert, dev_key = plat.credentials.issue_certificate(info.id, "press-01")
        (tmp_path / "dev.pem").write_bytes(dev_cert)
        (tmp_path / "dev.key").write_bytes(dev_key)
        os.chmod(tmp_path / "dev.key", 0o600)

        async def scenario() -> bytes:
            assert plat.mqtt is not None
            await plat.mqtt.start()
            try:
                # A device trusts the provided certificate (its CA) and shows its own.
                ctx = ssl.create_default_context(cafile=str(cert_file))
                ctx.load_cert_chain(tmp_path / "dev.pem", tmp_path / "dev.key")
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", tls_port, ssl=ctx, server_hostname="localhost"
                )
                der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                writer.close()
                return bytes(der)
            finally:
                await plat.mqtt.stop()

        der = asyncio.run(asyncio.wait_for(scenario(), 30))
        assert der == cert.public_bytes(serialization.Encoding.DER)
    finally:
        plat.close()
