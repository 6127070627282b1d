"""SDP errors, typed by what the user agent answers (RFC 3261 §21)."""

from __future__ import annotations


class SdpError(ValueError):
    """The SDP cannot be parsed: answer 400 Bad Request (the body is malformed)."""

    status = 400
    reason = "Bad Request"


class NegotiationError(ValueError):
    """The offer is valid but nothing in it is acceptable: 488 Not Acceptable Here."""

    status = 488
    reason = "Not Acceptable Here"
