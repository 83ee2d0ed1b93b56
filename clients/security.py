"""TLS for the clients: channel credentials from PEM files, and why a handshake failed.

gRPC reports a failed handshake only as UNAVAILABLE, and when the server is
the side that rejects it (a missing, expired or untrusted client
certificate, or a client that speaks no TLS), the client sees only "Socket
closed". `diagnose` repeats the handshake with Python's ssl module, which
reports the certificate check that failed or the alert the server sent.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from dataclasses import dataclass

import grpc

# OpenSSL verify codes of a certificate that does not match the name or
# address the client connected to.
_NAME_MISMATCH_CODES = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
_EXPIRED_CODE = 10  # X509_V_ERR_CERT_HAS_EXPIRED


class CredentialsError(Exception):
    """A TLS file cannot be read or used; the message names the flag and file."""


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files and name a client connects with over TLS."""

    # CA certificates that the server's certificate must be signed by.
    ca: str
    # The client's certificate chain and private key, both or neither, for a
    # server that requires client certificates (mutual TLS).
    cert: str | None = None
    key: str | None = None
    # Name to check the server's certificate against instead of the host
    # part of the server address.
    server_name: str | None = None


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise CredentialsError(
            f"cannot read {flag} {path}: {error.strerror or error}"
        ) from error


def _ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """Return a client context that checks the server as gRPC does, or raise."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(["h2"])
    try:
        context.load_verify_locations(cafile=tls.ca)
    except (ssl.SSLError, OSError) as error:
        raise CredentialsError(
            f"cannot use --tls-ca {tls.ca}: {_reason(error)}; give one or more "
            "PEM CA certificates"
        ) from error
    if tls.cert is not None:
        try:
            context.load_cert_chain(tls.cert, tls.key)
        except (ssl.SSLError, OSError) as error:
            raise CredentialsError(
                f"cannot use --tls-cert {tls.cert} with --tls-key {tls.key}: "
                f"{_reason(error)}; give the PEM certificate chain and the PEM "
                "private key that belongs to it"
            ) from error
    return context


def _reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return error.reason.replace("_", " ").lower()
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """Build TLS channel credentials from the PEM files of `tls`.

    The files are checked with Python's ssl module first, so that a missing
    file, a broken PEM or a key that does not match the certificate is
    reported naming the file, before any connection is tried.
    """
    _ssl_context(tls)
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, "--tls-ca"),
        private_key=_read(tls.key, "--tls-key") if tls.key else None,
        certificate_chain=_read(tls.cert, "--tls-cert") if tls.cert else None,
    )


def channel_options(tls: TlsFiles) -> list[tuple[str, str]]:
    """Return the channel options that `tls` needs besides its credentials."""
    if tls.server_name is None:
        return []
    return [("grpc.ssl_target_name_override", tls.server_name)]


def split_address(address: str) -> tuple[str, int] | None:
    """Split HOST:PORT or [IPV6]:PORT; return None for other gRPC targets."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or not host or "/" in host:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def diagnose(address: str, tls: TlsFiles | None, timeout: float) -> str | None:
    """Return why a channel to `address` fails at the TLS level, or None.

    Call it after the channel failed to connect. It opens one TCP connection
    and repeats the handshake the channel would make, with `tls` or, for a
    plaintext channel, checks whether the server serves TLS. None means that
    TLS is not the problem, or that the server could not be reached at all.
    """
    target = split_address(address)
    if target is None:
        return None
    if tls is None:
        if _serves_tls(target, timeout):
            return (
                f"the server at {address} serves TLS, and this client connected "
                "without it: give --tls-ca with the CA certificate that signed the "
                "server's certificate, and, if the server asks for client "
                "certificates, --tls-cert and --tls-key"
            )
        return None
    failed = f"the TLS handshake with the server at {address} failed"
    server_name = tls.server_name or target[0]
    try:
        context = _ssl_context(tls)
        with socket.create_connection(target, timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as connection:
                # With TLS 1.3 the server checks the client certificate after
                # the client has finished the handshake, and a rejection
                # arrives as an alert on the first read. An accepted client
                # gets the server's HTTP/2 settings instead.
                received = connection.recv(1)
    except CredentialsError as error:
        return str(error)
    except ssl.SSLCertVerificationError as error:
        if error.verify_code in _NAME_MISMATCH_CODES:
            hint = (
                f"the certificate is not issued for {server_name!r}; connect by "
                "a name or address in its SAN, or give that name with "
                "--tls-server-name"
            )
        elif error.verify_code == _EXPIRED_CODE:
            hint = "the server needs a renewed certificate"
        else:
            hint = (
                f"check that --tls-ca {tls.ca} holds the CA that signed the "
                "server's certificate"
            )
        return (
            f"{failed}: the server's certificate did not verify "
            f"({error.verify_message}); {hint}"
        )
    except ssl.SSLError as error:
        reason = error.reason or ""
        if "ALERT" in reason:
            alert = reason.split("ALERT_", 1)[-1].replace("_", " ").lower()
            if tls.cert is None:
                return (
                    f"{failed}: the server sent the alert '{alert}'; it may "
                    "require a client certificate: give --tls-cert and --tls-key"
                )
            return (
                f"{failed}: the server rejected the client certificate "
                f"--tls-cert {tls.cert} with the alert '{alert}'; use a "
                "certificate that is valid now and signed by a CA the server "
                "trusts (its --tls-client-ca)"
            )
        return (
            f"{failed} ({_reason(error)}); the server may serve plaintext: if so, "
            "drop --tls-ca, --tls-cert and --tls-key"
        )
    except (ConnectionResetError, BrokenPipeError):
        return _closed_after_handshake(failed, tls)
    except OSError:
        # Refused, unreachable or timed out: not a TLS problem.
        return None
    if not received:
        return _closed_after_handshake(failed, tls)
    return None


def _closed_after_handshake(failed: str, tls: TlsFiles) -> str:
    """Explain a server that closed the connection without an alert.

    gRPC servers (BoringSSL) reject a client certificate that way, so the
    client's own certificate is checked here for the likely causes.
    """
    if tls.cert is None:
        return (
            f"{failed}: the server closed the connection, probably because it "
            "requires a client certificate: give --tls-cert and --tls-key"
        )
    rejected = (
        f"{failed}: the server closed the connection, probably because it "
        f"rejected the client certificate --tls-cert {tls.cert}"
    )
    validity = certificate_validity(tls.cert)
    if validity is None:
        return f"{rejected}; check that a CA the server trusts signed it"
    not_before, not_after = validity
    now = datetime.datetime.now(datetime.timezone.utc)
    if now > not_after:
        return f"{rejected}, which expired at {not_after:%Y-%m-%d %H:%M} UTC"
    if now < not_before:
        return (
            f"{rejected}, which is valid only from {not_before:%Y-%m-%d %H:%M} "
            "UTC; check this machine's clock"
        )
    return (
        f"{rejected}; the certificate is valid now, so check that a CA the "
        "server trusts (its --tls-client-ca) signed it"
    )


def certificate_validity(
    path: str,
) -> tuple[datetime.datetime, datetime.datetime] | None:
    """Return notBefore and notAfter of the first certificate in a PEM file.

    Returns None when the file cannot be read or parsed. Python's ssl module
    has no public call that decodes a certificate file, so this walks the
    DER encoding (RFC 5280, section 4.1) as far as the validity field.
    """
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            text = file.read()
        begin = text.index("-----BEGIN CERTIFICATE-----")
        end = text.index("-----END CERTIFICATE-----", begin) + len(
            "-----END CERTIFICATE-----"
        )
        der = ssl.PEM_cert_to_DER_cert(text[begin:end])
        _, start, _ = _der_item(der, 0)  # Certificate
        _, start, _ = _der_item(der, start)  # TBSCertificate
        tag, _, position = _der_item(der, start)
        if tag == 0xA0:  # explicit version; absent in version 1 certificates
            tag, _, position = _der_item(der, position)  # serialNumber
        for _ in range(2):  # signature algorithm, issuer
            _, _, position = _der_item(der, position)
        _, position, _ = _der_item(der, position)  # validity
        times = []
        for _ in range(2):
            tag, start, position = _der_item(der, position)
            times.append(_der_time(tag, der[start:position]))
        return times[0], times[1]
    except (OSError, ValueError, IndexError):
        return None


def _der_item(der: bytes, position: int) -> tuple[int, int, int]:
    """Return the tag, content start and content end of the item at `position`."""
    tag = der[position]
    length = der[position + 1]
    start = position + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    if start + length > len(der):
        raise ValueError("truncated DER item")
    return tag, start, start + length


def _der_time(tag: int, content: bytes) -> datetime.datetime:
    text = content.decode("ascii")
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ; RFC 5280 puts YY in 1950-2049
        parsed = datetime.datetime.strptime(text, "%y%m%d%H%M%SZ")
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        parsed = datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"DER tag {tag:#x} is not a time")
    return parsed.replace(tzinfo=datetime.timezone.utc)


def _serves_tls(target: tuple[str, int], timeout: float) -> bool:
    """Return whether the server at `target` completes a TLS handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(target, timeout=timeout) as raw:
            with context.wrap_socket(raw):
                return True
    except (ssl.SSLError, OSError):
        return False
