"""TLS for the server: credentials from PEM files, and the identity of a client.

With a client CA (mutual TLS), every client presents a certificate signed by
it, and the names in that certificate are the client's identity. A producer
may only register under one of those names, and a cart belongs to the
certificate that created it.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass

import grpc

from .core import MarketError


class CredentialsError(RuntimeError):
    """A TLS file cannot be read or used; the message names the flag and file."""


class PermissionDenied(MarketError):
    """The client's certificate does not allow the request."""


@dataclass(frozen=True)
class Peer:
    """The verified certificate of a client, as the TLS handshake saw it."""

    # The subject's common name (CN), or None when the subject has none.
    common_name: str | None
    # The DNS names of the subject alternative name (SAN) extension. IP
    # addresses, URIs and e-mail addresses in the SAN are not names here.
    dns_names: tuple[str, ...]
    # SHA-256 of the certificate in PEM form, in hex. It distinguishes
    # certificates that carry the same names.
    fingerprint: str

    @property
    def names(self) -> tuple[str, ...]:
        """The common name, then the DNS names, without repeats."""
        names = (self.common_name,) if self.common_name else ()
        return tuple(dict.fromkeys(names + self.dns_names))


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise CredentialsError(
            f"cannot read {flag} {path}: {error.strerror or error}"
        ) from error


def server_credentials(
    cert_path: str, key_path: str, client_ca_path: str | None = None
) -> grpc.ServerCredentials:
    """Build TLS server credentials from PEM files.

    With `client_ca_path`, the server requires a client certificate signed by
    one of the CAs in that file and rejects the handshake without one.

    The files are checked with Python's ssl module first, so that a missing
    file, a broken PEM or a key that does not match the certificate stops
    the server at start with a message naming the file, rather than failing
    every handshake later.
    """
    certificate = _read(cert_path, "--tls-cert")
    key = _read(key_path, "--tls-key")
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as error:
        raise CredentialsError(
            f"cannot use --tls-cert {cert_path} with --tls-key {key_path}: "
            f"{error.reason or error}; give the PEM certificate chain and the "
            "PEM private key that belongs to it"
        ) from error
    client_ca = None
    if client_ca_path is not None:
        client_ca = _read(client_ca_path, "--tls-client-ca")
        try:
            check.load_verify_locations(cafile=client_ca_path)
        except ssl.SSLError as error:
            raise CredentialsError(
                f"cannot use --tls-client-ca {client_ca_path}: "
                f"{error.reason or error}; give one or more PEM CA certificates"
            ) from error
    return grpc.ssl_server_credentials(
        [(key, certificate)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _texts(values) -> list[str]:
    return [value.decode("utf-8", "replace") for value in values or ()]


def peer_identity(context: grpc.ServicerContext | None) -> Peer | None:
    """Return the verified client certificate of a call, or None without one.

    A call has a client certificate only when the server requires one
    (mutual TLS), and none when `context` is None (a direct call). gRPC reports the subject CN in the auth context property
    'x509_common_name' and the SAN in 'x509_subject_alternative_name'. That
    property mixes DNS names with IP addresses and URIs, so the DNS names are
    taken from 'peer_dns', which contains only the SAN's DNS names.
    """
    if context is None:
        return None
    properties = context.auth_context()
    pem = properties.get("x509_pem_cert")
    if not pem:
        return None
    common_names = _texts(properties.get("x509_common_name"))
    return Peer(
        common_name=common_names[0] if common_names else None,
        dns_names=tuple(_texts(properties.get("peer_dns"))),
        fingerprint=hashlib.sha256(pem[0]).hexdigest(),
    )


def owner(peer: Peer | None) -> str | None:
    """Return the owner key of what `peer` creates, or None without mutual TLS."""
    return peer.fingerprint if peer is not None else None


def check_producer_name(peer: Peer | None, name: str) -> None:
    """Raise PermissionDenied unless `peer` may register producer `name`.

    Without a client certificate any name is allowed.
    """
    if peer is None or name in peer.names:
        return
    listed = ", ".join(repr(n) for n in peer.names) or "no names"
    raise PermissionDenied(
        f"producer name {name!r} is not in the client certificate, which has "
        f"{listed} in its subject CN and SAN DNS names; register under one of "
        "those names or use a certificate issued for this one"
    )
