"""SIP over TLS (RFC 3261 §26.2.1, §18): TLS contexts for listening and dialling sockets.

TLS is a :class:`~switchboard.net.tcp.TcpTransport` with contexts (``tls=True``): the
bytes inside are framed exactly like TCP (§18.3). Contexts come from Python's :mod:`ssl`
(OpenSSL): TLS 1.2 at least, the library's default ciphers, certificates from PEM files.

* Server side: the certificate chain and key a peer sees; with ``verify_client`` the peer
  must present a certificate signed by ``ca`` (mutual TLS).
* Client side: the peer's certificate is verified against ``ca`` (the system store when
  empty) and its name/IP (§26.3.1) unless ``verify_server`` is off; ``cert``/``key`` are
  presented when the peer asks for them (mutual TLS towards a carrier).

Contexts are plain values: a reload builds new ones and swaps them in, so connections
already up keep theirs (no call is dropped by a certificate rotation).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a peer has to complete the handshake (a silent peer holds a socket otherwise)."""


class TlsConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the key and file."""


@dataclass(frozen=True)
class TlsFiles:
    """Where the PEM files are and what to verify; ``where`` prefixes error messages."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    verify_client: bool = False
    verify_server: bool = True
    where: str = "tls"
    # ask callers for a certificate without requiring one (verified against ``ca`` when
    # presented): mutual TLS required per trunk, not for every caller
    request_client: bool = False


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The context of a listening TLS socket. Raises :class:`TlsConfigError`."""
    if not files.cert or not files.key:
        raise TlsConfigError(f"{files.where}: a tls: listen address needs tls_cert and tls_key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, files)
    if files.verify_client or files.request_client:
        if not files.ca:
            what = "tls_verify_client" if files.verify_client else "mutual TLS on a trunk"
            raise TlsConfigError(f"{files.where}: {what} needs tls_ca")
        _load_ca(ctx, files)
        ctx.verify_mode = ssl.CERT_REQUIRED if files.verify_client else ssl.CERT_OPTIONAL
    return ctx


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """The context of an outgoing TLS connection. Raises :class:`TlsConfigError`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.verify_server:
        if files.ca:
            _load_ca(ctx, files)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if files.cert and files.key:
        _load_chain(ctx, files)
    return ctx


def _load_chain(ctx: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"{files.where}: cannot load tls_cert {files.cert!r} / tls_key {files.key!r}: {exc}"
        ) from None


def _load_ca(ctx: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        ctx.load_verify_locations(cafile=files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"{files.where}: cannot load tls_ca {files.ca!r}: {exc}") from None
