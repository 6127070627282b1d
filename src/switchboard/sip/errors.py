"""Typed SIP errors: each carries the response to send and whose fault it was.

Modelled on h11's ``RemoteProtocolError``: the exception says *who* is to blame
(``"peer"`` sent bad bytes, ``"local"`` means our own state or configuration) and
*what* to answer (RFC 3261 §21 status code and reason phrase), so the transport
adapter can reply without knowing why the core failed.  A peer's bytes never raise
anything but a subclass of :class:`SipError`.

The helper functions at the bottom raise; ``raise too_many_hops()`` reads well and
behaves the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NoReturn

Blame = Literal["peer", "local"]


class SipError(Exception):
    """Base class of every SIP core error.

    Attributes:
        status: response code to send (RFC 3261 §21).
        reason: reason phrase to send with it.
        blame: ``"peer"`` (bad input) or ``"local"`` (our state or config).
        headers: extra header fields the response should carry, e.g. ``Unsupported``
            for 420 (RFC 3261 §8.2.2.3).
    """

    status: int = 500
    reason: str = "Server Internal Error"
    blame: Blame = "local"

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        reason: str | None = None,
        blame: Blame | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        if blame is not None:
            self.blame = blame
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)
        super().__init__(message or f"{self.status} {self.reason}")


class SipParseError(SipError):
    """Malformed message, header or URI from a peer: answer 400 (RFC 3261 §21.4.1)."""

    status = 400
    reason = "Bad Request"
    blame: Blame = "peer"


class UnsupportedUriScheme(SipParseError):
    """A Request-URI scheme we cannot handle: answer 416 (RFC 3261 §8.2.2.1)."""

    status = 416
    reason = "Unsupported URI Scheme"


class VersionNotSupported(SipParseError):
    """A SIP-Version other than SIP/2.0: answer 505 (RFC 3261 §21.5.6)."""

    status = 505
    reason = "Version Not Supported"


class BadExtension(SipError):
    """Require/Proxy-Require names an option tag we lack: 420 with ``Unsupported``
    listing them (RFC 3261 §8.2.2.3, §20.32)."""

    status = 420
    reason = "Bad Extension"
    blame: Blame = "peer"


class CallDoesNotExist(SipError):
    """No dialog or transaction matches the request: 481 (RFC 3261 §12.2.2, §9.2)."""

    status = 481
    reason = "Call/Transaction Does Not Exist"
    blame: Blame = "peer"


class LoopDetected(SipError):
    """The request has already passed through this proxy: 482 (RFC 3261 §16.3 step 4)."""

    status = 482
    reason = "Loop Detected"
    blame: Blame = "peer"


class TooManyHops(SipError):
    """Max-Forwards reached zero: 483 (RFC 3261 §16.3 step 3)."""

    status = 483
    reason = "Too Many Hops"
    blame: Blame = "peer"


class MessageTooLarge(SipError):
    """A message bigger than we accept: 513 (RFC 3261 §21.5.7)."""

    status = 513
    reason = "Message Too Large"
    blame: Blame = "peer"


class FramingError(SipError):
    """The TCP byte stream cannot be split into messages (RFC 3261 §18.3).

    Oversized messages answer 513; a missing or invalid Content-Length on a stream
    answers 400.  Either way the connection cannot be resynchronised and should be
    closed after the response is sent.
    """

    status = 513
    reason = "Message Too Large"
    blame: Blame = "peer"


def unsupported_uri_scheme(scheme: str) -> NoReturn:
    """Raise 416 for a URI scheme other than sip, sips or tel."""
    raise UnsupportedUriScheme(f"unsupported URI scheme {scheme!r}")


def bad_extension(option_tags: Iterable[str]) -> NoReturn:
    """Raise 420 listing the unsupported option tags in an ``Unsupported`` header."""
    tags = list(option_tags)
    raise BadExtension(
        f"unsupported extensions: {', '.join(tags)}",
        headers=[("Unsupported", ", ".join(tags))],
    )


def call_does_not_exist(what: str = "") -> NoReturn:
    """Raise 481 for a request outside any known dialog or transaction."""
    raise CallDoesNotExist(what or "no matching dialog or transaction")


def loop_detected(what: str = "") -> NoReturn:
    """Raise 482 when this proxy already forwarded the request (§16.3 step 4)."""
    raise LoopDetected(what or "request loops through this proxy")


def too_many_hops() -> NoReturn:
    """Raise 483 when Max-Forwards is zero on a request to forward (§16.3 step 3)."""
    raise TooManyHops("Max-Forwards exhausted")


def message_too_large(size: int, limit: int) -> NoReturn:
    """Raise 513 for a message of ``size`` bytes over the ``limit``."""
    raise MessageTooLarge(f"message of {size} bytes exceeds limit of {limit}")
