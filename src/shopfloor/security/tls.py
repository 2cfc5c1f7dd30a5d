"""Server certificates for HTTPS and MQTTS: the operator's own, or a self-signed one.

With ``tls_cert_file``/``tls_key_file`` set, those files are checked (PEM, key matches the
certificate) and served as they are. Without them, a self-signed certificate is made on first
start in ``<data_dir>/tls/`` and reused on later starts, so clients that pinned its fingerprint
keep working; it is made again only when it expires within ``RENEW_BEFORE``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput

log = logging.getLogger(__name__)

VALID_FOR: Final = dt.timedelta(days=825)  # the longest validity clients accept (CA/B rules)
RENEW_BEFORE: Final = dt.timedelta(days=30)
CERT_NAME: Final = "server.crt"
KEY_NAME: Final = "server.key"


@dataclass(frozen=True, slots=True)
class ServerCert:
    cert_file: Path
    key_file: Path
    fingerprint: str  # SHA-256 of the leaf certificate (DER), as AA:BB:..., for pinning
    not_after: dt.datetime
    self_signed: bool
    generated: bool  # made by this call (first start or renewal)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def server_certificate(settings: Settings, now: dt.datetime | None = None) -> ServerCert:
    """The certificate the HTTPS server (and MQTTS, when provided) serves."""
    now = now or dt.datetime.now(dt.UTC)
    if settings.tls_cert_file is not None or settings.tls_key_file is not None:
        return load_provided(settings)
    return ensure_self_signed(settings.data_dir / "tls", _host_names(settings), now)


def load_provided(settings: Settings) -> ServerCert:
    """The operator's certificate and key, checked; BadInput names the setting at fault."""
    if settings.tls_cert_file is None:
        raise BadInput("tls_key_file is set but tls_cert_file is not; set both", "tls_cert_file")
    if settings.tls_key_file is None:
        raise BadInput("tls_cert_file is set but tls_key_file is not; set both", "tls_key_file")
    cert = _load_cert(settings.tls_cert_file, "tls_cert_file")
    key = _load_key(settings.tls_key_file, "tls_key_file")
    if not _matches(cert, key):
        raise BadInput(
            f"the key in {settings.tls_key_file} does not belong to the certificate in "
            f"{settings.tls_cert_file}",
            "tls_key_file",
        )
    return ServerCert(
        settings.tls_cert_file,
        settings.tls_key_file,
        fingerprint(cert),
        cert.not_valid_after_utc,
        cert.issuer == cert.subject,
        generated=False,
    )


def ensure_self_signed(folder: Path, hosts: list[str], now: dt.datetime) -> ServerCert:
    """Reuse the self-signed certificate in ``folder`` while it is sound, else make one."""
    cert_file, key_file = folder / CERT_NAME, folder / KEY_NAME
    reason = _reuse_problem(cert_file, key_file, now)
    if reason is None:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        return ServerCert(
            cert_file, key_file, fingerprint(cert), cert.not_valid_after_utc, True, False
        )
    if reason != "none yet":
        log.warning("making a new self-signed TLS certificate: the old one %s", reason)
    cert, key = make_self_signed(hosts, now)
    folder.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_file, key_pem)
    _write_atomic(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("self-signed TLS certificate %s, SHA-256 %s", cert_file, fingerprint(cert))
    return ServerCert(cert_file, key_file, fingerprint(cert), cert.not_valid_after_utc, True, True)


def make_self_signed(
    hosts: list[str], now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An EC P-256 certificate for ``hosts`` (names and IP addresses), valid VALID_FOR."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Shopfloor (self-signed)"),
        ]
    )
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # clients with a slightly slow clock
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # A leaf, not a CA (Firefox refuses a CA certificate as a server's); clients trust
        # this very file, or pin its fingerprint.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _host_names(settings: Settings) -> list[str]:
    """localhost, 127.0.0.1, this machine's name and the bind address (unless a wildcard)."""
    names = ["localhost", "127.0.0.1", socket.gethostname(), settings.http_host]
    seen: list[str] = []
    for n in names:
        n = n.strip().strip("[]")
        if n and n not in ("0.0.0.0", "::") and n not in seen:
            seen.append(n)
    return seen


def _reuse_problem(cert_file: Path, key_file: Path, now: dt.datetime) -> str | None:
    """Why the stored certificate cannot be reused, or None when it can."""
    if not cert_file.exists() and not key_file.exists():
        return "none yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return f"could not be read ({type(exc).__name__})"
    if not _matches(cert, key):
        return "does not match its key"
    if cert.not_valid_after_utc - RENEW_BEFORE <= now:
        return f"expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def _load_cert(path: Path, setting: str) -> x509.Certificate:
    data = _read(path, setting)
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise BadInput(f"{path} holds no PEM certificate", setting) from None
    return chain[0]  # the leaf comes first in a chain file


def _load_key(path: Path, setting: str) -> PrivateKeyTypes:
    data = _read(path, setting)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BadInput(
            f"{path} holds an encrypted key; the server cannot ask for a password, "
            "store it unencrypted with mode 0600",
            setting,
        ) from None
    except ValueError:
        raise BadInput(f"{path} holds no PEM private key", setting) from None


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}", setting) from None


def _matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))
    except (AttributeError, ValueError):  # a key kind without a public half
        return False


def _write_private(path: Path, data: bytes) -> None:
    _write_atomic(path, data, 0o600)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write beside ``path`` and rename over it, so a crash never leaves half a file; the
    file is created with ``mode`` (a key is never readable by others, not even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)  # the umask may have taken bits off
    os.replace(tmp, path)


# ---- HTTP response headers ------------------------------------------------------------------

HSTS: Final = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_ALWAYS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
NO_STORE: Final = (b"cache-control", b"no-store")


def security_headers(https: bool, api: bool) -> list[tuple[bytes, bytes]]:
    """The headers every response carries: HSTS only over HTTPS (browsers ignore it on plain
    HTTP, and announcing it there would be a lie), no caching of API answers."""
    headers = list(_ALWAYS)
    if https:
        headers.append(HSTS)
    if api:
        headers.append(NO_STORE)
    return headers


def secure_cookie(value: bytes) -> bytes:
    """A Set-Cookie value with the Secure attribute (added when missing)."""
    attrs = [a.strip().lower() for a in value.split(b";")[1:]]
    return value if b"secure" in attrs else value + b"; Secure"
