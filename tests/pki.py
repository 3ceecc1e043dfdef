"""Throwaway certificate authorities and certificates for the TLS tests (EC P-256: fast)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
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
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf for 127.0.0.1, ::1 and localhost, usable as a server and as a client
        (one certificate per service, presented both ways)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, written as PEM files."""

    cert_file: Path
    key_file: Path

    @classmethod
    def write(cls, authority: Authority, common_name: str, folder: Path) -> Identity:
        cert, key = authority.issue(common_name)
        identity = cls(folder / f"{common_name}.crt", folder / f"{common_name}.key")
        identity.cert_file.write_bytes(cert_pem(cert))
        identity.key_file.write_bytes(key_pem(key))
        return identity

    def cert_bytes(self) -> bytes:
        return self.cert_file.read_bytes()

    def key_bytes(self) -> bytes:
        return self.key_file.read_bytes()


@dataclass(frozen=True)
class Pki:
    """The mesh's CA with a service and a client identity, and a stranger: an identity
    from another CA, which the mesh must refuse."""

    authority: Authority
    ca_file: Path
    service: Identity
    client: Identity
    stranger: Identity

    @classmethod
    def create(cls, folder: Path) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        authority = Authority.create("cloudshelf test CA")
        ca_file = folder / "ca.crt"
        ca_file.write_bytes(cert_pem(authority.cert))
        return cls(
            authority,
            ca_file,
            Identity.write(authority, "service", folder),
            Identity.write(authority, "client", folder),
            Identity.write(Authority.create("someone else's CA"), "stranger", folder),
        )

    def server_env(self) -> dict[str, str]:
        """A service serving mTLS, and calling its peers over mTLS with the same files."""
        return {
            "CLOUDSHELF_TLS_CERT_FILE": str(self.service.cert_file),
            "CLOUDSHELF_TLS_KEY_FILE": str(self.service.key_file),
            "CLOUDSHELF_TLS_CA_FILE": str(self.ca_file),
        }
