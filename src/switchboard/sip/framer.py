"""Split a TCP byte stream into SIP messages (RFC 3261 §18.3, RFC 5626 §4.4.1).

On a stream, Content-Length is mandatory and is the only way to find where the
body ends.  The framer buffers at most ``max_size`` bytes: a message (headers plus
body) larger than that, or a header block that never ends within it, raises
:class:`FramingError` (513) and the connection must be closed — a stream cannot be
resynchronised.  CRLF keep-alives between messages are skipped and counted: a
double CRLF ("ping") must be answered with a single CRLF ("pong"), so each ping is
also reported in :attr:`StreamFramer.pings` for the adapter to answer.
"""

from __future__ import annotations

import re

from switchboard.sip.errors import FramingError

_CL_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_FOLDED_CL_RE = re.compile(rb"[ \t]*\r\n[ \t]+")


class StreamFramer:
    """Feed bytes in, get whole messages out.

    ``feed(data)`` returns the complete messages (``bytes``, each one start line,
    headers and exactly Content-Length body bytes) found so far.  Attributes:

    * ``keepalives`` — keep-alives skipped so far (a CRLFCRLF ping counts once);
    * ``pings`` — CRLFCRLF pings seen since last read; the adapter answers each with
      ``b"\\r\\n"`` (RFC 5626 §4.4.1) and resets it with :meth:`take_pings`.
    """

    def __init__(self, max_size: int = 65535) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self.keepalives = 0
        self.pings = 0
        self._failed: FramingError | None = None
        self._after_crlf = False

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf)

    def take_pings(self) -> int:
        """Return and reset the number of CRLFCRLF pings to answer."""
        n, self.pings = self.pings, 0
        return n

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data`` and return every message now complete.

        Raises :class:`FramingError` for an oversized message or a missing/invalid
        Content-Length; after that the framer stays failed (the stream is lost).
        """
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        buf += data
        out: list[bytes] = []
        try:
            while buf:
                # Keep-alives (§7.5 leading CRLF, RFC 5626 §4.4.1): a CRLF is consumed
                # at once; a second CRLF right after it (even in a later read) makes
                # the pair a CRLFCRLF ping that the adapter must answer.
                first = buf[0]
                if first == 13 or first == 10:
                    if first == 13:
                        if len(buf) < 2:
                            break  # lone CR: wait for its LF
                        if buf[1] != 10:
                            raise FramingError(
                                "stray CR in stream", status=400, reason="Bad Request"
                            )
                        del buf[:2]
                    else:
                        del buf[:1]  # bare LF, tolerated like CRLF
                    if self._after_crlf:
                        self.pings += 1
                        self._after_crlf = False
                    else:
                        self.keepalives += 1
                        self._after_crlf = True
                    continue
                self._after_crlf = False
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > self.max_size:
                        raise FramingError(
                            f"header block exceeds {self.max_size} bytes without ending"
                        )
                    break
                head_len = end + 4
                if head_len > self.max_size:
                    raise FramingError(f"header block of {head_len} bytes exceeds {self.max_size}")
                length = self._content_length(bytes(buf[: end + 2]))
                total = head_len + length
                if total > self.max_size:
                    raise FramingError(f"message of {total} bytes exceeds {self.max_size}")
                if len(buf) < total:
                    break
                out.append(bytes(buf[:total]))
                del buf[:total]
        except FramingError as exc:
            self._failed = exc
            buf.clear()
            raise
        return out

    @staticmethod
    def _content_length(head: bytes) -> int:
        if b"\r\n " in head or b"\r\n\t" in head:
            head = _FOLDED_CL_RE.sub(b" ", head)
        values = {m.group(1).strip() for m in _CL_RE.finditer(head)}
        if not values:
            raise FramingError(
                "Content-Length missing on a stream transport (RFC 3261 §18.3)",
                status=400,
                reason="Bad Request",
            )
        if len(values) > 1:
            raise FramingError(
                "conflicting Content-Length headers", status=400, reason="Bad Request"
            )
        raw = values.pop()
        if not raw.isdigit() or len(raw) > 10:
            raise FramingError(f"bad Content-Length {raw!r}", status=400, reason="Bad Request")
        return int(raw)
