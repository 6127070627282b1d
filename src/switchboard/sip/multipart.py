"""``multipart/mixed`` SIP bodies (RFC 5621): an SDP offer next to other parts, such as
the PIDF-LO location document an emergency call carries by value (RFC 6442 §4.1, the
``Geolocation: <cid:…>`` header naming the part by its Content-ID).

Parsing is the standard library's MIME parser (``email``); building writes the parts
between a fresh boundary (RFC 2046 §5.1.1). Pure: no IO.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Part:
    """One body part: its Content-Type, its other MIME headers, its bytes."""

    content_type: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def split(content_type: str, body: bytes) -> list[Part] | None:
    """The parts of a ``multipart/*`` body (None when it is not a well-formed one)."""
    raw = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    try:
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    except (ValueError, TypeError):
        return None
    if not msg.is_multipart() or msg.defects:
        return None
    parts: list[Part] = []
    for sub in msg.get_payload():
        if isinstance(sub, str) or sub.is_multipart():
            return None
        payload = sub.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        others = tuple((k, str(v)) for k, v in sub.items() if k.lower() != "content-type")
        parts.append(Part(sub.get_content_type(), others, payload))
    return parts or None


def join(parts: list[Part], boundary: str) -> tuple[str, bytes]:
    """The Content-Type value and the body of ``parts`` as ``multipart/mixed``."""
    out = bytearray()
    for p in parts:
        out += b"--" + boundary.encode() + b"\r\nContent-Type: " + p.content_type.encode()
        for k, v in p.headers:
            out += b"\r\n" + k.encode() + b": " + v.encode()
        out += b"\r\n\r\n" + p.body + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return f"multipart/mixed;boundary={boundary}", bytes(out)
