"""A test PKI for serving the imitation site over HTTPS, made fresh with ``cryptography``.

``make_pki(folder)`` writes PEM files: a CA (self-signed, ``CA:true``, allowed to sign
certificates), a server certificate signed by it for 127.0.0.1 (subjectAltName
``IP:127.0.0.1`` and ``DNS:localhost``) with its key, and a second CA that has nothing to do
with the first, for tests that hand a client the wrong CA. ``certificate`` picks the
variant of the server certificate: ``"good"``, ``"expired"`` (valid until yesterday) or
``"wrong_host"`` (valid, but only for ``example.invalid``). EC P-256 keys: making all of it
takes a few milliseconds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERTIFICATES = ("good", "expired", "wrong_host")
OTHER_HOST = "example.invalid"
_LOCAL_NAMES: tuple[x509.GeneralName, ...] = (
    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
    x509.DNSName("localhost"),
)
# Backdated a little, so that a client whose clock is a second behind still accepts it.
_BACKDATE = timedelta(hours=1)
_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class Authority:
    """A CA's certificate and key, able to sign server certificates."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class TestPKI:
    """Where ``make_pki`` wrote the PEM files."""

    __test__ = False  # not a pytest test class, whatever its name

    ca_file: Path  # the CA that signed the server certificate: what clients should trust
    cert_file: Path  # the server certificate
    key_file: Path  # its private key (unencrypted)
    other_ca_file: Path  # an unrelated CA: trusting only it must fail verification
    certificate: str  # the variant of the server certificate, one of CERTIFICATES


def make_pki(folder: Path, certificate: str = "good") -> TestPKI:
    """Make a CA, a server certificate of the given variant and another CA, into ``folder``."""
    if certificate not in CERTIFICATES:
        raise ValueError(f"certificate must be one of {CERTIFICATES}, not {certificate!r}")
    folder.mkdir(parents=True, exist_ok=True)
    ca = make_ca("flsync fakesite test CA")
    now = datetime.now(UTC)
    if certificate == "expired":
        leaf, key = make_leaf(ca, not_before=now - 4 * _LIFETIME, not_after=now - timedelta(days=1))
    elif certificate == "wrong_host":
        leaf, key = make_leaf(ca, names=(x509.DNSName(OTHER_HOST),))
    else:
        leaf, key = make_leaf(ca)
    pki = TestPKI(
        ca_file=folder / "ca.pem",
        cert_file=folder / "server.pem",
        key_file=folder / "server-key.pem",
        other_ca_file=folder / "other-ca.pem",
        certificate=certificate,
    )
    pki.ca_file.write_bytes(_cert_pem(ca.certificate))
    pki.cert_file.write_bytes(_cert_pem(leaf))
    pki.key_file.write_bytes(_key_pem(key))
    pki.other_ca_file.write_bytes(_cert_pem(make_ca("unrelated test CA").certificate))
    return pki


def make_ca(common_name: str) -> Authority:
    """A self-signed CA certificate that may sign certificates (and nothing else)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        _builder(name, name, key.public_key(), now - _BACKDATE, now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def make_leaf(
    ca: Authority,
    names: tuple[x509.GeneralName, ...] = _LOCAL_NAMES,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for ``names`` signed by ``ca``, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    first = names[0]
    common_name = str(first.value) if isinstance(first, x509.IPAddress) else first.value
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_key = ca.key.public_key()
    certificate = (
        _builder(
            ca.certificate.subject,
            subject,
            key.public_key(),
            not_before or now - _BACKDATE,
            not_after or now + _LIFETIME,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # Strict verifiers (Python 3.13's default context) want the issuer's key id.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return certificate, key


def _builder(
    issuer: x509.Name,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .issuer_name(issuer)
        .subject_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
