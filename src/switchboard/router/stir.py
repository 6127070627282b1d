"""STIR/SHAKEN: the SIP ``Identity`` header, its PASSporT, and what a verifier concludes.

* RFC 8224 (SIP ``Identity``): ``Identity: <JWS>;info=<https://…/cert.pem>;alg=ES256;ppt=shaken``
  carries a PASSporT in the full JWS compact serialization; §6.2.2 gives the answers a
  verifier refuses with (403 Stale Date, 428 Use Identity Header, 436 Bad Identity Info,
  437 Unsupported Credential, 438 Invalid Identity Header); §8.3 says how telephone
  numbers are canonicalised before they are compared with ``orig``/``dest``.
* RFC 8225 (PASSporT): a JWS (RFC 7515) with the protected header ``{"alg":"ES256",
  "ppt":"shaken","typ":"passport","x5u":URL}`` and the claims ``orig`` (``{"tn":…}``),
  ``dest`` (``{"tn":[…]}``) and ``iat``; §9 gives the serialisation the signer uses (keys
  in lexicographic order, no whitespace). ES256 is ECDSA P-256 with SHA-256 and the
  signature as the 64-byte ``r || s`` (RFC 7518 §3.4).
* RFC 8588 (SHAKEN extension): ``attest`` (A full, B partial, C gateway attestation) and
  ``origid`` (a UUID naming the originating point).
* ATIS-1000074 / 3GPP TS 24.229 ``verstat``: the verifier's verdict, passed to the callee
  as a parameter of the caller's number in ``P-Asserted-Identity``:
  ``TN-Validation-Passed``, ``TN-Validation-Failed`` or ``No-TN-Validation`` (nothing
  could be verified: no Identity header, or the certificate could not be obtained).

Pure: no IO, no clock (``now`` is passed in: wall-clock seconds for ``iat`` and
certificate validity). The certificate is fetched by :mod:`switchboard.router.stir_fetch`
and checked here with :func:`validate_chain`. All cryptography is the ``cryptography``
package's: ECDSA, X.509 parsing and path validation (its ``x509.verification``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509 import verification

PASSED = "TN-Validation-Passed"
FAILED = "TN-Validation-Failed"
NO_VALIDATION = "No-TN-Validation"
VERSTATS = (PASSED, FAILED, NO_VALIDATION)
ATTESTATIONS = ("A", "B", "C")
# RFC 8224 §6.2.2 / §12: an iat older than this (seconds) is stale; a little clock skew
# into the future is tolerated the same way.
DEFAULT_MAX_AGE = 60
MAX_HEADER = 4096  # an Identity header longer than this is not a SHAKEN PASSporT
_VISUAL = re.compile(r"[-.()\s]")


class StirError(ValueError):
    """The Identity header or its PASSporT cannot be used. ``status``/``reason`` are the
    RFC 8224 §6.2.2 answer a verifier refusing the call gives; ``code`` names the
    failure for logs, metrics and the CDR."""

    def __init__(self, code: str, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.status = status
        self.reason = reason


def _b64d(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise StirError("bad_encoding", 438, "Invalid Identity Header", "not base64url") from None


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def canonical_tn(number: str) -> str:
    """RFC 8224 §8.3: a telephone number as compared with ``orig``/``dest``: URI
    parameters dropped, visual separators removed, no leading ``+``."""
    n = number.split(";", 1)[0]
    n = _VISUAL.sub("", n)
    return n[1:] if n.startswith("+") else n


@dataclass(frozen=True, slots=True)
class IdentityHeader:
    """One parsed ``Identity`` header value (RFC 8224 §4.1)."""

    token: str
    info: str
    alg: str = "ES256"
    ppt: str = ""


def parse_identity(value: str) -> IdentityHeader:
    """``<JWS>;info=<URI>;alg=ES256;ppt=shaken`` → its parts (StirError when malformed)."""
    if len(value) > MAX_HEADER:
        raise StirError("too_long", 438, "Invalid Identity Header")
    token, _, rest = value.strip().partition(";")
    token = token.strip()
    if not token or token.count(".") != 2:
        raise StirError("not_a_jws", 438, "Invalid Identity Header")
    info = ""
    params: dict[str, str] = {}
    # The info URI is in angle brackets and may itself contain ';' (RFC 8224 §4.1).
    rest = rest.strip()
    while rest:
        name, eq, after = rest.partition("=")
        name = name.strip().lower()
        after = after.lstrip()
        if eq and after.startswith("<"):
            end = after.find(">")
            if end < 0:
                raise StirError("bad_info", 436, "Bad Identity Info", "unterminated <")
            val = after[1:end]
            rest = after[end + 1 :].lstrip().removeprefix(";").lstrip()
        else:
            val, _, rest = after.partition(";")
            val = val.strip().strip('"')
        params[name] = val
        if name == "info":
            info = val
    alg = params.get("alg", "ES256")
    return IdentityHeader(token, info, alg, params.get("ppt", ""))


@dataclass(frozen=True, slots=True)
class Passport:
    """A decoded PASSporT (not yet verified)."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes  # BASE64URL(header) "." BASE64URL(payload), what was signed
    signature: bytes  # r || s

    @property
    def x5u(self) -> str:
        return str(self.header.get("x5u", ""))

    @property
    def attest(self) -> str:
        a = self.claims.get("attest", "")
        return a if a in ATTESTATIONS else ""

    @property
    def origid(self) -> str:
        return str(self.claims.get("origid", ""))

    @property
    def orig_tn(self) -> str:
        orig = self.claims.get("orig")
        return str(orig.get("tn", "")) if isinstance(orig, dict) else ""

    @property
    def dest_tns(self) -> list[str]:
        dest = self.claims.get("dest")
        tns = dest.get("tn", []) if isinstance(dest, dict) else []
        if isinstance(tns, str):
            tns = [tns]
        return [str(t) for t in tns] if isinstance(tns, list) else []


def decode_passport(token: str) -> Passport:
    """The full-form JWS of RFC 8225 §7 → header, claims, signature (StirError if it is
    not one: compact form — an empty payload — is not used by SHAKEN)."""
    h64, p64, s64 = token.split(".")
    if not p64:
        raise StirError("compact_form", 438, "Invalid Identity Header", "no payload")
    try:
        header = json.loads(_b64d(h64))
        claims = json.loads(_b64d(p64))
    except (ValueError, UnicodeDecodeError):
        raise StirError("bad_json", 438, "Invalid Identity Header") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise StirError("bad_json", 438, "Invalid Identity Header")
    if header.get("alg") != "ES256":
        raise StirError("unsupported_alg", 437, "Unsupported Credential", str(header.get("alg")))
    if header.get("typ", "passport") != "passport":
        raise StirError("not_passport", 438, "Invalid Identity Header")
    sig = _b64d(s64)
    if len(sig) != 64:
        raise StirError("bad_signature", 438, "Invalid Identity Header", "ES256 needs 64 bytes")
    return Passport(header, claims, f"{h64}.{p64}".encode("ascii"), sig)


def check_claims(
    p: Passport,
    ident: IdentityHeader,
    orig: str,
    dest: str,
    now: float,
    max_age: float = DEFAULT_MAX_AGE,
) -> None:
    """RFC 8224 §6.2 steps: ``x5u`` the header's ``info``, ``iat`` fresh, ``orig``/``dest``
    the call's numbers (canonical, §8.3). Raises StirError with the failure."""
    if ident.info and p.x5u and ident.info != p.x5u:
        raise StirError("info_mismatch", 436, "Bad Identity Info", "info is not the x5u")
    if not p.x5u.startswith("https://"):
        raise StirError("bad_x5u", 436, "Bad Identity Info", "x5u must be https")
    iat = p.claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise StirError("bad_iat", 438, "Invalid Identity Header", "iat is not a number")
    if abs(now - iat) > max_age:
        raise StirError("stale", 403, "Stale Date", f"iat {now - iat:+.0f} s")
    if not p.orig_tn or canonical_tn(p.orig_tn) != canonical_tn(orig):
        raise StirError("orig_mismatch", 438, "Invalid Identity Header", "orig is not the caller")
    want = canonical_tn(dest)
    if not any(canonical_tn(t) == want for t in p.dest_tns):
        raise StirError("dest_mismatch", 438, "Invalid Identity Header", "dest is not the callee")


def verify_signature(p: Passport, key: ec.EllipticCurvePublicKey) -> None:
    """ES256 over the signing input (RFC 7515 §5.2; RFC 7518 §3.4) or StirError."""
    r = int.from_bytes(p.signature[:32], "big")
    s = int.from_bytes(p.signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), p.signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise StirError("bad_signature", 438, "Invalid Identity Header", "signature") from None


# ------------------------------------------------------------------ certificates
@dataclass(frozen=True, slots=True)
class Credential:
    """A certificate fetched from an ``x5u`` and validated against the trust anchors:
    the key that verifies PASSporTs and how long it may (not_before..not_after, the
    whole chain's intersection). ``error`` set: the chain did not validate (every
    PASSporT naming it fails)."""

    key: ec.EllipticCurvePublicKey | None
    not_before: float = 0.0
    not_after: float = 0.0
    error: StirError | None = None


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """PEM (one or more certificates, the signer's first) or one DER certificate."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        return []


def validate_chain(
    data: bytes, anchors: Sequence[x509.Certificate], now: float, *, max_depth: int = 4
) -> Credential:
    """Path validation (RFC 5280 §6, by ``cryptography``'s verifier) of the certificate
    served at an ``x5u`` up to one of ``anchors`` (the STI-CA roots). The end-entity
    certificate needs no particular extended key usage (SHAKEN certificates carry a
    TNAuthList, not a server name); CA certificates must be proper CAs."""
    certs = load_certificates(data)
    if not certs:
        return Credential(None, error=StirError("bad_certificate", 436, "Bad Identity Info",
                                                "not a certificate"))  # fmt: skip
    leaf, rest = certs[0], certs[1:]
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return Credential(None, error=StirError("unsupported_key", 437, "Unsupported Credential",
                                                "ES256 needs a P-256 key"))  # fmt: skip
    if not anchors:
        return Credential(None, error=StirError("untrusted", 437, "Unsupported Credential",
                                                "no trust anchors configured"))  # fmt: skip
    when = datetime.fromtimestamp(now, UTC)
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(anchors)))
            .time(when)
            .max_chain_depth(max_depth)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        chain = verifier.verify(leaf, rest).chain
    except verification.VerificationError as exc:
        return Credential(None, error=StirError("untrusted", 437, "Unsupported Credential",
                                                str(exc)[:200]))  # fmt: skip
    nb = max(c.not_valid_before_utc.timestamp() for c in chain)
    na = min(c.not_valid_after_utc.timestamp() for c in chain)
    return Credential(key, nb, na)


def credential_key(cred: Credential, now: float) -> ec.EllipticCurvePublicKey:
    """The credential's key if it may be used at ``now`` (else StirError)."""
    if cred.error is not None:
        raise cred.error
    if cred.key is None or not cred.not_before <= now <= cred.not_after:
        raise StirError("expired_certificate", 437, "Unsupported Credential", "outside validity")
    return cred.key


# ------------------------------------------------------------------ the verdict
@dataclass(frozen=True, slots=True)
class Verdict:
    """What the verification concluded about one call."""

    verstat: str
    attest: str = ""
    origid: str = ""
    error: StirError | None = None

    @property
    def code(self) -> str:
        return self.error.code if self.error is not None else ("ok" if self.verstat == PASSED
                                                               else "none")  # fmt: skip

    def header_lines(self) -> list[bytes]:
        """What the router tells the media node (docs/compliance.md "STIR/SHAKEN")."""
        lines = [b"X-Switchboard-Verstat: " + self.verstat.encode()]
        if self.attest:
            lines.append(b"X-Switchboard-Attestation: " + self.attest.encode())
        return lines


NOT_VERIFIED = Verdict(NO_VALIDATION)


@dataclass(frozen=True, slots=True)
class Presented:
    """An INVITE's Identity, decoded: what the verifier needs before the certificate."""

    ident: IdentityHeader
    passport: Passport

    @property
    def x5u(self) -> str:
        return self.passport.x5u or self.ident.info


def present(value: str) -> Presented:
    """Parse an Identity header value and decode its PASSporT (StirError if malformed)."""
    ident = parse_identity(value)
    if ident.alg != "ES256":
        raise StirError("unsupported_alg", 437, "Unsupported Credential", ident.alg)
    if ident.ppt and ident.ppt != "shaken":
        raise StirError("unsupported_ppt", 438, "Invalid Identity Header", ident.ppt)
    return Presented(ident, decode_passport(ident.token))


def verify(
    pres: Presented,
    cred: Credential,
    orig: str,
    dest: str,
    now: float,
    max_age: float = DEFAULT_MAX_AGE,
) -> Verdict:
    """The full check of one presented PASSporT with its (validated) credential."""
    p = pres.passport
    try:
        check_claims(p, pres.ident, orig, dest, now, max_age)
        verify_signature(p, credential_key(cred, now))
    except StirError as exc:
        return Verdict(FAILED, p.attest, p.origid, exc)
    if not p.attest:
        return Verdict(FAILED, "", p.origid, StirError("bad_attest", 438,
                                                       "Invalid Identity Header"))  # fmt: skip
    return Verdict(PASSED, p.attest, p.origid)


# ------------------------------------------------------------------ signing
def load_signing_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """The operator's PASSporT key (PEM, unencrypted): a P-256 key or ValueError."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("not an EC P-256 private key (ES256)")
    return key


def _canonical_json(obj: Mapping[str, Any]) -> bytes:
    # RFC 8225 §9: keys in lexicographic order, no whitespace, UTF-8.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(
    key: ec.EllipticCurvePrivateKey,
    x5u: str,
    attest: str,
    orig: str,
    dest: str,
    origid: str,
    iat: int,
) -> str:
    """The ``Identity`` header value for a call from ``orig`` to ``dest`` (RFC 8224 §4.1,
    RFC 8588 §6): a full-form SHAKEN PASSporT signed with ES256."""
    if attest not in ATTESTATIONS:
        raise ValueError(f"attestation must be A, B or C, not {attest!r}")
    header = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": x5u}
    claims = {
        "attest": attest,
        "dest": {"tn": [canonical_tn(dest)]},
        "iat": int(iat),
        "orig": {"tn": canonical_tn(orig)},
        "origid": origid,
    }
    signing_input = _b64e(_canonical_json(header)) + "." + _b64e(_canonical_json(claims))
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{_b64e(sig)};info=<{x5u}>;alg=ES256;ppt=shaken"


@dataclass(frozen=True, slots=True)
class AttestRule:
    """``"A:+4930"``: calling numbers starting with +4930 are signed with attestation A;
    ``"C"`` (no prefix) matches every number."""

    attest: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class AttestationRules:
    """A trunk's signing rules, first match wins; no match: ``default``."""

    rules: tuple[AttestRule, ...] = field(default_factory=tuple)
    default: str = "C"

    def attestation(self, calling: str) -> str:
        n = canonical_tn(calling)
        for r in self.rules:
            if n.startswith(r.prefix):
                return r.attest
        return self.default


def parse_rules(entries: Sequence[str], *, key: str) -> AttestationRules:
    """``["A:+4930", "B:+49", "C"]`` → rules (ValueError naming ``key`` when malformed)."""
    rules: list[AttestRule] = []
    for e in entries:
        attest, _, prefix = e.partition(":")
        attest = attest.strip().upper()
        if attest not in ATTESTATIONS:
            raise ValueError(f"{key}: {e!r}: the attestation must be A, B or C")
        p = canonical_tn(prefix.strip())
        if prefix.strip() and not p.isdigit():
            raise ValueError(f"{key}: {e!r}: {prefix!r} is not a number prefix")
        rules.append(AttestRule(attest, p))
    return AttestationRules(tuple(rules))
