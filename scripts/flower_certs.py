"""Throw-away credentials for a TLS Flower deployment on loopback (scripts/flower-local.sh).

    python scripts/flower_certs.py FOLDER [--nodes NAME ...] [--hosts HOST ...] [--days D]

writes into FOLDER (created, private to the user):

- ``ca.crt``: a self-signed CA certificate (its private key is never written, so no
  further certificate can be signed with it once this command returns);
- ``server.pem`` / ``server.key``: the SuperLink's certificate, signed by that CA, for
  the given hosts (default 127.0.0.1 and localhost), and its private key (PEM);
- ``NAME`` / ``NAME.pub`` for every ``--nodes`` name: a SuperNode authentication key
  pair on NIST P-384 in OpenSSH format, which is what Flower 1.42 reads:
  `flower-supernode --auth-supernode-private-key NAME` (``load_ssh_private_key``,
  EC keys only) and `flwr supernode register NAME.pub` (``load_ssh_public_key``, a
  NIST EC curve).

The file names are the ones Flower's TLS guide uses (ca.crt, server.pem, server.key).
These credentials are for tests and the loopback demo: a real federation uses the
certificates its own CA issues (docs/flower.md, Transport security). Never commit them.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CURVE = ec.SECP384R1()


def _write(path: Path, data: bytes, private: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_tls(folder: Path, hosts: list[str], days: float = 2.0) -> None:
    """ca.crt, server.pem and server.key in ``folder`` for ``hosts``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(CURVE)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lorm throw-away CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(CURVE)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    pem = serialization.Encoding.PEM
    _write(folder / "ca.crt", ca_cert.public_bytes(pem))
    _write(folder / "server.pem", server_cert.public_bytes(pem))
    _write(folder / "server.key", server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), private=True)


def make_node_key(folder: Path, name: str) -> None:
    """``name`` (private) and ``name.pub`` in ``folder``: an EC P-384 pair, OpenSSH format."""
    key = ec.generate_private_key(CURVE)
    ssh = serialization.Encoding.OpenSSH
    _write(folder / name, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()), private=True)
    _write(folder / f"{name}.pub", key.public_key().public_bytes(
        ssh, serialization.PublicFormat.OpenSSH) + b"\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--hosts", nargs="+", default=["127.0.0.1", "localhost"],
                        help="names the server certificate is for (first: its common name)")
    parser.add_argument("--nodes", nargs="*", default=[],
                        help="SuperNode key pairs to write (file names)")
    parser.add_argument("--no-tls", action="store_true",
                        help="write only the node key pairs")
    parser.add_argument("--days", type=float, default=2.0, help="certificate lifetime")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    args.folder.chmod(0o700)
    if not args.no_tls:
        make_tls(args.folder, args.hosts, args.days)
    for name in args.nodes:
        make_node_key(args.folder, name)


if __name__ == "__main__":
    main()
