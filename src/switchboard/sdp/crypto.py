"""SDES keying for SRTP: the ``a=crypto`` attribute (RFC 4568) and the SRTP policy.

``a=crypto:<tag> <crypto-suite> inline:<base64 key||salt>[|lifetime][|MKI:length]``
(§9.1). Only the two suites every SIP SRTP implementation has are taken:
AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (RFC 4568 §6.2; 16-byte master key,
14-byte master salt, 30 bytes of key material). Session parameters other than the
defaults (UNENCRYPTED_SRTP, KDR ...) and several keys per line (MKI) are declined: the
line is ignored, as §5.1.2 allows an answerer to do with what it does not support.

Policies: ``off`` (plain RTP only; an offer of RTP/SAVP alone is rejected),
``optional`` (SRTP when the peer offers or accepts it), ``mandatory`` (SRTP or nothing).
Pure: the caller provides the random key material.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
KEY_LENGTH = 30  # 16-byte master key + 14-byte master salt (RFC 3711 §8.2, RFC 4568 §6.2)
POLICIES = ("off", "optional", "mandatory")
SAVP_PROTOS = ("RTP/SAVP", "RTP/SAVPF")


@dataclass(frozen=True)
class Crypto:
    """One usable ``a=crypto`` line."""

    tag: int
    suite: str
    key: bytes  # master key || master salt, KEY_LENGTH bytes

    def attribute(self) -> str:
        """The attribute value (after ``a=crypto:``)."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


def parse_crypto(value: str) -> Crypto | None:
    """An ``a=crypto`` value → :class:`Crypto`, or None when it is malformed or uses
    something we do not support (unknown suite, session parameters, several keys)."""
    parts = value.split()
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 9:
        return None
    tag, suite, key_params = int(parts[0]), parts[1], parts[2]
    if suite not in SUITES or ";" in key_params or not key_params.startswith("inline:"):
        return None
    fields = key_params[len("inline:") :].split("|")
    try:
        key = base64.b64decode(fields[0], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != KEY_LENGTH:
        return None
    for extra in fields[1:]:
        if ":" in extra:  # MKI:length — one key per line only
            return None
    return Crypto(tag, suite, key)


def offered_cryptos(values: list[str]) -> list[Crypto]:
    """The usable crypto lines of an ``m=`` section, in the offerer's preference order."""
    return [c for c in (parse_crypto(v) for v in values) if c is not None]


def check_policy(policy: str, *, where: str = "srtp") -> str:
    if policy not in POLICIES:
        raise ValueError(f"{where}: expected one of {', '.join(POLICIES)}, got {policy!r}")
    return policy
