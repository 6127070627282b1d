"""SRTP (RFC 3711) for one RTP stream, through libsrtp (the ``pylibsrtp`` binding).

Two libsrtp sessions per stream: one protecting what we send with our master key, one
unprotecting what the peer sends with the key it gave in its ``a=crypto`` line (RFC 4568
keys each direction separately). libsrtp does the cipher (AES-CM), the authentication
tag (HMAC-SHA1, 80 or 32 bits) and the replay window (128 packets): a replayed or forged
packet raises, and the endpoint counts and drops it — never more.
"""

from __future__ import annotations

from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}

__all__ = ["PROFILES", "SrtpError", "SrtpStream"]


class SrtpStream:
    """Protect outgoing and unprotect incoming RTP/RTCP of one stream."""

    __slots__ = ("keys", "rx", "suite", "tx")

    def __init__(self, suite: str, local_key: bytes, remote_key: bytes) -> None:
        profile = PROFILES[suite]
        self.suite = suite
        self.keys = (local_key, remote_key)
        self.tx = Session(
            Policy(key=local_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        )
        self.rx = Session(
            Policy(key=remote_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        )
