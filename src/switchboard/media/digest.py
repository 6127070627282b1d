"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616 algorithms, RFC 8760 for SIP).

Both sides: the registrar challenges (:func:`challenge`, :func:`verify`) with MD5 and
SHA-256, one ``WWW-Authenticate`` per algorithm (RFC 8760 §2.4, strongest first); a
gateway leg answers a carrier's challenge (:func:`authorization`). Nonces are stateless:
``<issued-at hex>.<hmac(secret, issued-at)>`` so any node restart invalidates them and no
table grows under a flood. Time and randomness are parameters.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
NONCE_LIFETIME = 300.0  # seconds a nonce is accepted


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode("utf-8")).hexdigest()


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="x", nonce="y", qop=auth`` → ("Digest", {"realm": "x", ...})."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    for m in re.finditer(r'([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))', rest):
        params[m[1].lower()] = m[2] if m[2] is not None else m[3]
    return scheme, params


def make_nonce(secret: bytes, now: float) -> str:
    stamp = f"{int(now):x}"
    mac = hmac.new(secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{stamp}.{mac}"


def nonce_valid(secret: bytes, nonce: str, now: float, lifetime: float = NONCE_LIFETIME) -> bool:
    stamp, _, mac = nonce.partition(".")
    try:
        issued = int(stamp, 16)
    except ValueError:
        return False
    good = hmac.new(secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
    return hmac.compare_digest(good, mac) and 0 <= now - issued <= lifetime


def challenge(
    realm: str, nonce: str, *, stale: bool = False, algorithms: tuple[str, ...] = ("SHA-256", "MD5")
) -> list[str]:
    """``WWW-Authenticate`` values, one per algorithm in the given order (RFC 8760 §2.4
    says strongest first; some clients only ever answer the first one)."""
    st = ", stale=TRUE" if stale else ""
    return [
        f'Digest realm="{realm}", nonce="{nonce}", algorithm={alg}, qop="auth"{st}'
        for alg in algorithms
    ]


def response_value(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
) -> str:
    """RFC 7616 §3.4.1 ``response``: KD(H(A1), nonce:nc:cnonce:qop:H(A2)) (RFC 2069 form without qop)."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


@dataclass(frozen=True)
class Credentials:
    """A parsed ``Authorization`` header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    qop: str | None
    nc: str | None
    cnonce: str | None


def parse_authorization(value: str) -> Credentials | None:
    scheme, p = parse_auth_params(value)
    if scheme.lower() != "digest":
        return None
    try:
        alg = p.get("algorithm", "MD5").upper()
        if alg not in ALGORITHMS:
            return None
        return Credentials(
            p["username"], p["realm"], p["nonce"], p["uri"], p["response"].lower(), alg,
            p.get("qop"), p.get("nc"), p.get("cnonce"),
        )  # fmt: skip
    except KeyError:
        return None


def verify(creds: Credentials, *, method: str, password: str) -> bool:
    """True when ``creds.response`` proves knowledge of ``password``."""
    expected = response_value(
        algorithm=creds.algorithm,
        username=creds.username,
        realm=creds.realm,
        password=password,
        method=method,
        uri=creds.uri,
        nonce=creds.nonce,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )
    return hmac.compare_digest(expected, creds.response)


def authorization(
    challenge_value: str,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    realm: str = "",
) -> str | None:
    """The ``Authorization``/``Proxy-Authorization`` value answering one challenge, or
    None when the challenge uses an algorithm we do not know or (``realm`` given) comes
    from another realm — credentials are not handed to whoever asks."""
    scheme, p = parse_auth_params(challenge_value)
    if scheme.lower() != "digest" or "nonce" not in p:
        return None
    if realm and p.get("realm", "") != realm:
        return None
    alg = p.get("algorithm", "MD5").upper()
    if alg not in ALGORITHMS:
        return None
    realm = p.get("realm", "")
    qop = None
    if "qop" in p:
        qops = [q.strip() for q in p["qop"].split(",")]
        if "auth" not in qops:
            return None
        qop = "auth"
    nc = "00000001"
    resp = response_value(
        algorithm=alg, username=username, realm=realm, password=password, method=method,
        uri=uri, nonce=p["nonce"], qop=qop, nc=nc, cnonce=cnonce,
    )  # fmt: skip
    parts = [
        f'username="{username}"', f'realm="{realm}"', f'nonce="{p["nonce"]}"', f'uri="{uri}"',
        f'response="{resp}"', f"algorithm={alg}",
    ]  # fmt: skip
    if qop:
        parts += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
    if "opaque" in p:
        parts.append(f'opaque="{p["opaque"]}"')
    return "Digest " + ", ".join(parts)
