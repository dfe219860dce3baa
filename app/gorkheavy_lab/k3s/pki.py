"""The server's certificate authorities and certificates under ``<data-dir>/server/tls/``, named as K3s names
them: ``server-ca`` signs serving certificates, ``client-ca`` signs client certificates (``client-admin`` for
the kubeconfig, ``system:node:<name>`` for each agent). ECDSA P-256 keys, as K3s generates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )


@dataclass
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    pem: bytes

    @classmethod
    def create(cls, common_name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            _builder(name, name, key, CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key, cert_pem(cert))

    @classmethod
    def load_or_create(cls, directory: Path, base: str, prefix: str) -> Authority:
        crt, key_file = directory / f"{base}.crt", directory / f"{base}.key"
        if crt.is_file() and key_file.is_file():
            pem = crt.read_bytes()
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):  # pragma: no cover - we only write EC keys
                msg = f"{key_file}: not an EC key"
                raise TypeError(msg)
            return cls(x509.load_pem_x509_certificate(pem), key, pem)
        authority = cls.create(f"{prefix}@{int(time.time())}")
        _write(key_file, key_pem(authority.key), 0o600)
        _write(crt, authority.pem, 0o644)
        return authority

    def issue(
        self,
        common_name: str,
        *,
        organization: str | None = None,
        client: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and key (PEM); the certificate PEM is followed by this CA's, as K3s bundles."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = []
        if organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        builder = (
            _builder(x509.Name(attrs), self.cert.subject, key, LEAF_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns)]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert_pem(cert) + self.pem, key_pem(key)


@dataclass
class ServerPKI:
    directory: Path
    server_ca: Authority
    client_ca: Authority

    @classmethod
    def load_or_create(cls, data_dir: Path) -> ServerPKI:
        tls = data_dir / "server" / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        os.chmod(tls, 0o700)
        return cls(
            tls,
            Authority.load_or_create(tls, "server-ca", "k3s-server-ca"),
            Authority.load_or_create(tls, "client-ca", "k3s-client-ca"),
        )

    def admin(self) -> tuple[bytes, bytes]:
        """``client-admin.crt``/``.key`` (system:admin in system:masters), created once and kept."""
        crt, key = self.directory / "client-admin.crt", self.directory / "client-admin.key"
        if crt.is_file() and key.is_file():
            return crt.read_bytes(), key.read_bytes()
        cert_data, key_data = self.client_ca.issue("system:admin", organization="system:masters", client=True)
        _write(key, key_data, 0o600)
        _write(crt, cert_data, 0o644)
        return cert_data, key_data

    def serving(self, dns: tuple[str, ...], ips: tuple[str, ...]) -> tuple[Path, Path]:
        """The apiserver's serving certificate for this start's names and addresses (rewritten each start)."""
        cert_data, key_data = self.server_ca.issue("k3s", organization="k3s", dns=dns, ips=ips)
        crt, key = (
            self.directory / "serving-kube-apiserver.crt",
            self.directory / "serving-kube-apiserver.key",
        )
        _write(key, key_data, 0o600)
        _write(crt, cert_data, 0o644)
        return crt, key

    def kubelet_client(self) -> tuple[Path, Path]:
        """``client-kube-apiserver.crt``/``.key``: the API server's client certificate towards kubelets
        (system:apiserver in system:masters, as K3s issues it), created once and kept."""
        crt, key = self.directory / "client-kube-apiserver.crt", self.directory / "client-kube-apiserver.key"
        if not (crt.is_file() and key.is_file()):
            cert_data, key_data = self.client_ca.issue(
                "system:apiserver", organization="system:masters", client=True
            )
            _write(key, key_data, 0o600)
            _write(crt, cert_data, 0o644)
        return crt, key

    def node_client(self, node_name: str) -> tuple[bytes, bytes]:
        return self.client_ca.issue(f"system:node:{node_name}", organization="system:nodes", client=True)


def write_file(path: Path, data: bytes, mode: int) -> None:
    _write(path, data, mode)
