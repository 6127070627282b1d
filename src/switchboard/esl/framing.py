"""Client → server packet framing of the inbound Event Socket (``read_packet``).

Rules (mod_event_socket.c:1208-1360):

* ``\\r`` and ``\\n`` before the first character of a packet are discarded.
* A header block ends at the second ``\\n``; ``\\r`` between them does not reset the
  count, so ``\\n\\n``, ``\\r\\n\\r\\n`` and ``\\n\\r\\n`` all end a packet.
* The first line is the command, cut at its first CR/LF. Later lines are ``Name: value``
  headers split at the first ``:`` with the spaces after it skipped.
* A ``content-length`` header (case-insensitive) makes the packet carry that many body
  bytes. A negative value or one above 16 MiB (``MAX_CONTENT_LENGTH``) drops the
  connection without a reply: :class:`BadContentLength`.
* A header block that grows past the cap without ending is :class:`HeaderBlockTooLarge`
  (FreeSWITCH force-terminates at 10 MiB; we cap lower, configurably).

:class:`PacketReader` is sans-IO: ``feed(bytes) -> list[Packet]``; it raises a
:class:`FramingError` — the connection's fault, answered by closing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CONTENT_LENGTH = 16 * 1024 * 1024  # mod_event_socket.c:38
DEFAULT_MAX_HEADER_BYTES = 64 * 1024  # a command line with headers; FS allows 10 MiB

_END_OF_BLOCK = re.compile(rb"\n\r*\n")


class FramingError(Exception):
    """The peer's bytes cannot be framed; the connection is dropped without a reply.

    ``packets`` holds the whole packets that preceded the bad bytes in the same feed:
    they are still processed (and answered) before the drop, as FreeSWITCH reads one
    packet at a time.
    """

    packets: list[Packet]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.packets = []


class HeaderBlockTooLarge(FramingError):
    """No end of header block within the configured cap."""


class BadContentLength(FramingError):
    """``content-length`` not a number, negative, or above :data:`MAX_CONTENT_LENGTH`."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One client packet: the command line, its headers (in order) and its body."""

    command: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """First header of that name, compared case-insensitively (FS: ``strcasecmp``)."""
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def parse_block(block: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Split a header block (without its terminator) into the command and headers."""
    lines = block.split(b"\n")
    command = _decode(lines[0].split(b"\r", 1)[0])
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        line = line.rstrip(b"\r")
        name, sep, value = line.partition(b":")
        if not sep or not name:
            continue  # FS ignores a line without a colon
        headers.append((_decode(name).strip(), _decode(value.lstrip(b" "))))
    return command, headers


class PacketReader:
    """Incremental packet reader (sans-IO). Feed bytes, get whole packets."""

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int = MAX_CONTENT_LENGTH,
    ) -> None:
        self._buf = bytearray()
        self._max_header = max_header_bytes
        self.max_body_bytes = min(max_body_bytes, MAX_CONTENT_LENGTH)
        # A packet whose header block is complete and which waits for its body.
        self._pending: tuple[str, list[tuple[str, str]], int] | None = None
        self._scan_from = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        """Add bytes; return every packet they complete, in order."""
        self._buf += data
        out: list[Packet] = []
        try:
            self._parse(out)
        except FramingError as exc:
            exc.packets = out
            raise
        return out

    def _parse(self, out: list[Packet]) -> None:
        while True:
            if self._pending is not None:
                command, headers, length = self._pending
                if len(self._buf) < length:
                    return
                body = bytes(self._buf[:length])
                del self._buf[:length]
                self._pending = None
                out.append(Packet(command, tuple(headers), body))
                continue
            # Discard CR/LF before the first character of a packet (:1268-1275).
            start = 0
            while start < len(self._buf) and self._buf[start] in (0x0A, 0x0D):
                start += 1
            if start:
                del self._buf[:start]
                self._scan_from = 0
            if not self._buf:
                return
            match = _END_OF_BLOCK.search(self._buf, self._scan_from)
            if match is None:
                if len(self._buf) > self._max_header:
                    raise HeaderBlockTooLarge(
                        f"header block exceeds {self._max_header} bytes without ending"
                    )
                # An unfinished terminator can only start at the last LF: rescan from there.
                self._scan_from = max(0, self._buf.rfind(b"\n"))
                return
            if match.start() > self._max_header:
                raise HeaderBlockTooLarge(f"header block exceeds {self._max_header} bytes")
            block = bytes(self._buf[: match.start()])
            del self._buf[: match.end()]
            self._scan_from = 0
            command, headers = parse_block(block)
            length = self._content_length(headers)
            if length:
                self._pending = (command, headers, length)
            else:
                out.append(Packet(command, tuple(headers)))

    def _content_length(self, headers: list[tuple[str, str]]) -> int:
        for name, value in headers:
            if name.lower() == "content-length":
                text = value.strip()
                if not re.fullmatch(r"-?\d{1,12}", text):
                    raise BadContentLength(f"content-length {value!r} is not a number")
                length = int(text)
                if length < 0 or length > min(self.max_body_bytes, MAX_CONTENT_LENGTH):
                    raise BadContentLength(f"content-length {length} out of range")
                return length
        return 0
