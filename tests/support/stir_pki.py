"""A SHAKEN test PKI made at test time with ``cryptography`` (no key is committed): an
STI-CA root, an intermediate, the service provider's signing certificate (P-256, with a
TNAuthList extension naming its SPC, as ATIS-1000080 certificates carry), and a second,
unrelated root whose certificates nobody trusts. Plus a local HTTPS server that serves
certificates at x5u URLs (the TLS certificate comes from tests/support/tls_certs.py)."""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from tests.support.tls_certs import Pki, make_pki

TN_AUTH_LIST = ObjectIdentifier("1.3.6.1.5.5.7.1.26")  # RFC 8226 §9
# TNAuthorizationList ::= SEQUENCE OF TNEntry; TNEntry spc [0] EXPLICIT IA5String "1234"
_SPC_1234 = bytes.fromhex("3008a0061604") + b"1234"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    path_length: int | None = None,
    days: float = 2,
    start_days: float = -1,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name = issuer[0].subject if issuer else _name(cn)
    signer = issuer[1] if issuer else key
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=start_days))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(_usage(ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    if not ca:
        b = b.add_extension(x509.UnrecognizedExtension(TN_AUTH_LIST, _SPC_1234), critical=False)
    return b.sign(signer, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass
class StiPki:
    """Roots, the provider's key, and the PEM bodies an x5u URL serves."""

    root_pem: bytes  # the trust anchor
    key: ec.EllipticCurvePrivateKey  # the service provider's signing key
    key_pem: bytes
    chain_pem: bytes  # signing certificate + intermediate (what x5u serves)
    rogue_key: ec.EllipticCurvePrivateKey
    rogue_chain_pem: bytes  # a certificate from a CA no one trusts
    expired_key: ec.EllipticCurvePrivateKey
    expired_chain_pem: bytes  # signed by the trusted CA, no longer valid


def make_sti_pki() -> StiPki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Test STI-CA root", root_key, None, ca=True, path_length=1, days=30)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("Test STI-CA", inter_key, (root, root_key), ca=True, path_length=0, days=20)
    sp_key = ec.generate_private_key(ec.SECP256R1())
    sp = _cert("SHAKEN 1234", sp_key, (inter, inter_key), ca=False)
    rogue_root_key = ec.generate_private_key(ec.SECP256R1())
    rogue_root = _cert("Unknown CA", rogue_root_key, None, ca=True, path_length=0, days=30)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _cert("SHAKEN 9999", rogue_key, (rogue_root, rogue_root_key), ca=False)
    old_key = ec.generate_private_key(ec.SECP256R1())
    old = _cert("SHAKEN 1234 old", old_key, (inter, inter_key), ca=False, days=-1, start_days=-5)
    return StiPki(
        root_pem=_pem(root),
        key=sp_key,
        key_pem=sp_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        chain_pem=_pem(sp, inter),
        rogue_key=rogue_key,
        rogue_chain_pem=_pem(rogue),
        expired_key=old_key,
        expired_chain_pem=_pem(old, inter),
    )


class CertServer:
    """An HTTPS server on 127.0.0.1 serving ``files`` (path → body); counts requests and
    can hold every answer ``delay`` seconds (a slow STI-CR)."""

    def __init__(self, tls: Pki, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        self.delay = 0.0
        self._release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if outer.delay:
                    outer._release.wait(outer.delay)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pem-certificate-chain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls.server.cert, tls.server.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def release(self) -> None:
        self._release.set()


@contextmanager
def cert_server(directory: Path, files: dict[str, bytes]) -> Iterator[tuple[CertServer, Pki]]:
    """A running :class:`CertServer` and the TLS PKI whose CA (``pki.ca``) trusts it."""
    tls = make_pki(directory)
    srv = CertServer(tls, files)
    srv.thread.start()
    try:
        yield srv, tls
    finally:
        srv.release()
        srv.httpd.shutdown()
        srv.httpd.server_close()
