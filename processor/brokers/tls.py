"""Throwaway TLS material for the secured test broker: a CA and certificates it signs, written as PEM files.

Keys are EC P-256 (fast to generate, understood by Java's PEM key stores and Python's ssl module) and unencrypted
(Kafka accepts an unencrypted PKCS#8 key in a `ssl.keystore.type=PEM` file). Certificates are valid from an hour
ago for two days: long enough for any test session, short enough that a leaked file is worthless.

Needs the `cryptography` package (in the `dev` extra); nothing in the processor's runtime path imports this module.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
_VALIDITY = dt.timedelta(days=2)
_BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA: its key and certificate (in memory)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate as PEM (what clients put in their trust store)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedCert:
    """A key and the certificate a CA issued for it, plus the issuing CA certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    ca_cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def chain_pem(self) -> bytes:
        """The certificate followed by the CA certificate, as PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM) + self.ca_cert.public_bytes(
            serialization.Encoding.PEM
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - _BACKDATE, now + _VALIDITY


def make_ca(common_name: str = "ccmeter test CA") -> CertificateAuthority:
    """A fresh self-signed CA allowed to sign end-entity certificates only (pathlen 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, cert)


def _subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue_cert(ca: CertificateAuthority, common_name: str, hosts: Sequence[str] = DEFAULT_HOSTS) -> IssuedCert:
    """A certificate for `common_name` signed by `ca`, usable as a TLS server and client certificate.

    `hosts` become subjectAltName entries (IP addresses as iPAddress, anything else as dNSName); hostname
    verification checks those, never the CN.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(_subject_alt_names(hosts), critical=False)
    return IssuedCert(key, builder.sign(ca.key, hashes.SHA256()), ca.cert)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a CA and one certificate it issued (for a broker or a client)."""

    ca_file: Path  # the CA certificate: a trust store
    cert_file: Path  # certificate + CA chain
    key_file: Path  # unencrypted PKCS#8 private key
    keystore_file: Path  # key + certificate chain in one file: Kafka's `ssl.keystore.type=PEM`
    common_name: str


def write_tls_files(
    directory: Path, common_name: str, hosts: Sequence[str] = DEFAULT_HOSTS, *, ca: CertificateAuthority | None = None
) -> TlsFiles:
    """Create (or reuse) a CA, issue a certificate for `common_name`, and write both as PEM files in `directory`."""
    ca = ca or make_ca()
    issued = issue_cert(ca, common_name, hosts)
    directory.mkdir(parents=True, exist_ok=True)
    stem = common_name.replace(" ", "-")
    files = TlsFiles(
        ca_file=directory / "ca.pem",
        cert_file=directory / f"{stem}.crt.pem",
        key_file=directory / f"{stem}.key.pem",
        keystore_file=directory / f"{stem}.keystore.pem",
        common_name=common_name,
    )
    files.ca_file.write_bytes(ca.cert_pem)
    files.cert_file.write_bytes(issued.chain_pem)
    files.key_file.write_bytes(issued.key_pem)
    files.key_file.chmod(0o600)
    files.keystore_file.write_bytes(issued.key_pem + issued.chain_pem)
    files.keystore_file.chmod(0o600)
    return files
