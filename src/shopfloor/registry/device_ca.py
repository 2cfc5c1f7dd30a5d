"""The platform's device CA: signs device client certificates and the broker's TLS certificate.

Created on first use under ``ca_dir`` (``ca.key`` readable by its owner only, ``ca.crt`` for
brokers and devices to trust). Keys are ECDSA P-256: small, fast to make, and accepted by
Mosquitto, amqtt (Python's ssl) and common device TLS stacks.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shopfloor.core.errors import BadInput

CA_VALID: Final = timedelta(days=3650)
DEVICE_VALID: Final = timedelta(days=825)  # the longest leaf lifetime common TLS stacks accept
# Clocks on devices are often a little behind; a certificate valid "from now" would be refused.
BACKDATE: Final = timedelta(minutes=5)
CN_MAX: Final = 64  # X.520 upper bound on a common name; cryptography enforces it

_create_lock = threading.Lock()


def fingerprint(cert_der: bytes) -> str:
    """The sha256 of a certificate's DER encoding, lowercase hex: how credentials find it."""
    return hashlib.sha256(cert_der).hexdigest()


def load_certificate(cert_pem: bytes) -> x509.Certificate:
    """A PEM (or DER) certificate, or BadInput saying it is not one."""
    try:
        if b"-----BEGIN" in cert_pem:
            return x509.load_pem_x509_certificate(cert_pem)
        return x509.load_der_x509_certificate(cert_pem)
    except ValueError as exc:
        raise BadInput(f"not an X.509 certificate: {exc}", "certificate") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: a key must never be readable by others, even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class DeviceCA:
    """A self-signed CA under ``ca_dir``; created on first use, then loaded from there."""

    def __init__(self, ca_dir: Path) -> None:
        self.ca_dir = ca_dir
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._cert: x509.Certificate | None = None

    @property
    def key_path(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def ca_cert_path(self) -> Path:
        """The CA certificate (PEM) that brokers use to verify device client certificates."""
        self._ensure()
        return self.ca_dir / "ca.crt"

    @property
    def certificate(self) -> x509.Certificate:
        return self._ensure()[1]

    def _ensure(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if self._key is not None and self._cert is not None:
            return self._key, self._cert
        with _create_lock:
            cert_path = self.ca_dir / "ca.crt"
            if not self.key_path.exists():
                self._create(cert_path)
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise BadInput(f"{self.key_path} is not an EC private key", "ca_dir")
            self._key = key
            self._cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return self._key, self._cert

    def _create(self, cert_path: Path) -> None:
        self.ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Shopfloor device CA")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        # The certificate first: a key without its certificate would be an unusable CA.
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(self.key_path, _key_pem(key))

    def _leaf(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        sans: Sequence[x509.GeneralName] = (),
    ) -> tuple[bytes, bytes]:
        if not 1 <= len(common_name) <= CN_MAX:
            raise BadInput(
                f"certificate common name must be 1-{CN_MAX} characters: {common_name!r}"
                " (use shorter tenant and device names, or a token or password)",
                "device",
            )
        ca_key, ca_cert = self._ensure()
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + DEVICE_VALID)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issue_device_certificate(self, common_name: str) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) of a TLS client certificate; the key is never stored here."""
        return self._leaf(common_name, ExtendedKeyUsageOID.CLIENT_AUTH)

    def server_certificate(self, hostnames: Sequence[str]) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) for the broker's TLS port; IP addresses become IP SANs."""
        if not hostnames:
            raise BadInput("a server certificate needs at least one hostname", "hostnames")
        sans: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return self._leaf(hostnames[0], ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def signed_by_me(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` carries a valid signature of this CA."""
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
