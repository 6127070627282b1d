"""SDP (RFC 4566) parsing/serialising and RFC 3264 offer/answer. Pure: no IO, no clock."""

from switchboard.sdp.errors import NegotiationError, SdpError
from switchboard.sdp.offer_answer import (
    DEFAULT_CODECS,
    PCMA,
    PCMU,
    CodecSpec,
    Negotiated,
    answer_offer,
    create_offer,
    process_answer,
)
from switchboard.sdp.session import Connection, Media, Origin, RtpMap, SessionDescription, parse_sdp

__all__ = [
    "DEFAULT_CODECS",
    "PCMA",
    "PCMU",
    "CodecSpec",
    "Connection",
    "Media",
    "Negotiated",
    "NegotiationError",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "answer_offer",
    "create_offer",
    "parse_sdp",
    "process_answer",
]
