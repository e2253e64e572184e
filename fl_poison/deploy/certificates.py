"""A private certificate authority and the TLS certificates it signs, for the SuperLink and SuperNodes.

Flower's SuperLink serves its one HTTP port (Fleet, Control and ServerAppIo APIs) over TLS with
``--ssl-ca-certfile ca.crt --ssl-certfile server.crt --ssl-keyfile server.key``; SuperNodes and
the ``flwr`` CLI check it against ``ca.crt`` (``--root-certificates``, ``root-certificates`` in a
connection). The server certificate must name every host name or IP address that nodes use to
reach the SuperLink (subject alternative names). A SuperNode may serve its own ClientAppIo API
over TLS as well (``--ssl-certfile node-<i>.crt`` etc.); its certificates name the loopback
addresses, where its ClientApp processes connect. Keys are ECDSA P-384, written unencrypted
with permissions 0600: keep ``ca.key`` off the nodes.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_FILE = "ca.crt"
SERVER_FILE = "server.crt"


@dataclass(frozen=True)
class Authority:
    """A certificate authority: its certificate and the private key that signs with it."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-384 private key."""
    return ec.generate_private_key(ec.SECP384R1())


def subject_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Subject alternative names for ``hosts``: IP addresses as such, everything else as DNS names."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def create_authority(common_name: str, valid_days: int) -> Authority:
    """A self-signed CA certificate that may sign server certificates (not other CAs).

    Parameters
    ----------
    common_name : str
        The CA's name in the certificates it signs.
    valid_days : int
        How long the certificate is valid, from now.
    """
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
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
        .sign(key, hashes.SHA384())
    )
    return Authority(certificate, key)


def issue_server_certificate(
    authority: Authority, common_name: str, hosts: Sequence[str], valid_days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate signed by ``authority`` and its new private key.

    Parameters
    ----------
    authority : Authority
        The CA that signs.
    common_name : str
        The certificate's subject name.
    hosts : Sequence[str]
        Every host name or IP address clients use to reach the server (at least one).
    valid_days : int
        How long the certificate is valid, from now.
    """
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or IP address")
    key = new_key()
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(subject_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
        .sign(authority.key, hashes.SHA384())
    )
    return certificate, key


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` as unencrypted PEM (PKCS#8), readable by its owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret(path, data)


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file created with permissions 0600 (replacing an old one)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)


def write_certificate(path: Path, certificate: x509.Certificate) -> None:
    """Write ``certificate`` as PEM."""
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def write_certificates(out: Path, server_hosts: Sequence[str], num_nodes: int = 0, valid_days: int = 365) -> list[Path]:
    """Create a CA, a SuperLink certificate and ``num_nodes`` SuperNode certificates in ``out``.

    Writes ``ca.crt``/``ca.key``, ``server.crt``/``server.key`` (valid for ``server_hosts`` and
    the loopback addresses) and ``node-<i>.crt``/``node-<i>.key`` for ``i`` in ``0 .. num_nodes-1``
    (valid for the loopback addresses, for a SuperNode's own ClientAppIo API).

    Parameters
    ----------
    out : Path
        The folder to write into (created if missing).
    server_hosts : Sequence[str]
        Host names and IP addresses SuperNodes and the ``flwr`` CLI use to reach the SuperLink.
    num_nodes : int
        How many SuperNode certificates to issue.
    valid_days : int
        Validity of every certificate, from now.

    Returns
    -------
    list[Path]
        The files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    authority = create_authority("fl-poison lab CA", valid_days)
    write_certificate(out / CA_FILE, authority.certificate)
    write_private_key(out / "ca.key", authority.key)
    written = [out / CA_FILE, out / "ca.key"]
    issued = [("server", [*server_hosts, *LOOPBACK_HOSTS])]
    issued += [(f"node-{index}", list(LOOPBACK_HOSTS)) for index in range(num_nodes)]
    for name, hosts in issued:
        certificate, key = issue_server_certificate(authority, f"fl-poison {name}", hosts, valid_days)
        write_certificate(out / f"{name}.crt", certificate)
        write_private_key(out / f"{name}.key", key)
        written += [out / f"{name}.crt", out / f"{name}.key"]
    return written
