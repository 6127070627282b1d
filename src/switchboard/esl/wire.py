"""Server → client frames of the FreeSWITCH inbound Event Socket, byte-exact.

Every frame is a header block of ``Name: value\\n`` lines ended by a blank line, then,
when the block has ``Content-Length: N``, exactly N bytes of body
(mod_event_socket.c). FreeSWITCH never sends ``\\r\\n``; neither do we.

* :func:`fs_urlencode` — ``switch_url_encode_opt`` (switch_utils.c:3494-3537): ``%XX``
  with uppercase hex for bytes outside 0x20-0x7E and the unsafe set, and no double
  encoding of an existing ``%XX`` (uppercase hex only).
* :func:`plain_event` / :func:`json_event` / :func:`xml_event` — the inner event body
  (``switch_event_serialize`` / ``_serialize_json`` / ``_xmlize``), and
  :func:`event_frame` the outer frame with ``Content-Length`` before ``Content-Type``
  (mod_event_socket.c:1449).
* Replies: :func:`command_reply`, :func:`bgapi_reply`, :func:`api_response`, and the
  fixed greeting / disconnect notices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

# Characters FreeSWITCH always escapes (switch_utils.h:47, SWITCH_URL_UNSAFE).
_UNSAFE = frozenset(b'\r\n #%&+:;<=>?@[\\]^`{|}"')
_ESCAPE = [f"%{b:02X}" if (b < 0x20 or b > 0x7E or b in _UNSAFE) else chr(b) for b in range(256)]

UNDEF = "_undef_"
FORMATS = ("plain", "json", "xml")

GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"  # 67 bytes
KILLED_LOST_EVENTS = "killed listener because of lost events\n"  # mod_event_socket.c:386-410
SHUTDOWN = "The system is being shut down.\n"

AUTH_REQUEST = b"Content-Type: auth/request\n\n"  # mod_event_socket.c:2728
RUDE_REJECTION = (
    b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
)


class EventLike(Protocol):
    """What the encoder and the subscription logic need from an event."""

    @property
    def name(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def body(self) -> str | None: ...


def fs_urlencode(value: str) -> str:
    """URL-encode a header value exactly as FreeSWITCH does."""
    if _NEEDS_ESCAPE.search(value) is None:  # fast path: most values need nothing
        return value
    return _NEEDS_ESCAPE.sub(_escape_match, value)


# One character that FreeSWITCH escapes: a byte outside 0x20-0x7E (so every non-ASCII
# character), a character of the unsafe set, or a '%' that does not start an uppercase
# %XX sequence (an existing one passes through: no double encoding).
_NEEDS_ESCAPE = re.compile(r'[^\x20-\x7e]|[ #&+:;<=>?@\[\\\]^`{|}"]|%(?![0-9A-F]{2})')
# The same set minus NUL: the separator of :func:`plain_event`'s one-pass escaping.
_NEEDS_ESCAPE_BULK = re.compile(r'[^\x00\x20-\x7e]|[ #&+:;<=>?@\[\\\]^`{|}"]|%(?![0-9A-F]{2})')


class _EscapeTable(dict[str, str]):
    """Character → its %XX form, computed once per character (bounded)."""

    def __missing__(self, ch: str) -> str:
        escaped = "".join(_ESCAPE[b] for b in ch.encode("utf-8", "surrogateescape"))
        if len(self) < 4096:
            self[ch] = escaped
        return escaped


_ESCAPED = _EscapeTable()


def _escape_match(m: re.Match[str]) -> str:
    return _ESCAPED[m.group()]


def _value_text(value: str | Sequence[str]) -> str:
    """Array headers serialise as ``ARRAY::v1|:v2`` (switch_event.c:1150-1175)."""
    if isinstance(value, str):
        return value
    return "ARRAY::" + "|:".join(value)


_BAD_NAME = re.compile(r"[ :\r\n\t]")


_NAME_OK: dict[str, bool] = {}


def _safe_name(name: str) -> bool:
    """Header names must be MIME tokens: go-eventsocket rejects spaces, colons, CR/LF."""
    ok = _NAME_OK.get(name)
    if ok is None:
        ok = bool(name) and _BAD_NAME.search(name) is None
        if len(_NAME_OK) < 8192:  # names repeat; variable names are bounded by this cap
            _NAME_OK[name] = ok
    return ok


def plain_event(headers: Mapping[str, str], body: str | None = None) -> bytes:
    """The inner ``text/event-plain`` block: headers, then ``Content-Length`` + body or
    one more ``\n`` so the block always ends with a blank line (switch_event.c:1528-1640)."""
    names: list[str] = []
    values: list[str] = []
    for name, value in headers.items():
        if name != "Content-Length" and _safe_name(name):
            names.append(name)
            values.append(value if isinstance(value, str) else _value_text(value))
    # Escape every value in one regex pass over the NUL-joined values (NUL never occurs in
    # header values; if one does, fall back to value by value).
    joined = "\x00".join(values)
    if joined.count("\x00") == len(values) - 1:
        escaped = _NEEDS_ESCAPE_BULK.sub(_escape_match, joined).split("\x00")
    else:
        escaped = [fs_urlencode(v) for v in values]
    lines = [f"{n}: {v or UNDEF}\n" for n, v in zip(names, escaped, strict=True)]
    if body:
        raw = body.encode("utf-8", "surrogateescape")
        return (
            "".join(lines).encode("ascii") + f"Content-Length: {len(raw)}\n\n".encode("ascii") + raw
        )
    lines.append("\n")
    return "".join(lines).encode("ascii")


def json_event(headers: Mapping[str, str], body: str | None = None) -> bytes:
    """The ``text/event-json`` body: one unformatted object, every value a string,
    arrays as JSON arrays, body as ``Content-Length`` + ``_body`` (switch_event.c:1819-1870)."""
    obj: dict[str, object] = {}
    for name, value in headers.items():
        if not name or name == "Content-Length":
            continue
        obj[name] = value if isinstance(value, str) else list(value)
    if body:
        obj["Content-Length"] = str(len(body.encode("utf-8", "surrogateescape")))
        obj["_body"] = body
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogateescape"
    )


def _xml_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def xml_event(headers: Mapping[str, str], body: str | None = None) -> bytes:
    """The ``text/event-xml`` body (``switch_event_xmlize``); only for clients that asked."""
    parts = ["<event>\n  <headers>\n"]
    for name, value in headers.items():
        if _safe_name(name) and name != "Content-Length":
            parts.append(f"    <{name}>{fs_urlencode(_value_text(value))}</{name}>\n")
    parts.append("  </headers>\n")
    if body:
        raw_len = len(body.encode("utf-8", "surrogateescape"))
        parts.append(f"  <Content-Length>{raw_len}</Content-Length>\n")
        parts.append(f"  <body>{_xml_escape(body)}</body>\n")
    parts.append("</event>")
    return "".join(parts).encode("utf-8", "surrogateescape")


_CONTENT_TYPE = {"plain": "text/event-plain", "json": "text/event-json", "xml": "text/event-xml"}
_SERIALISER = {"plain": plain_event, "json": json_event, "xml": xml_event}


def event_frame(fmt: str, headers: Mapping[str, str], body: str | None = None) -> bytes:
    """A whole event frame: ``Content-Length`` then ``Content-Type`` (mod_event_socket.c:1449)."""
    inner = _SERIALISER[fmt](headers, body)
    return (
        f"Content-Length: {len(inner)}\nContent-Type: {_CONTENT_TYPE[fmt]}\n\n".encode("ascii")
        + inner
    )


class EncodedEvent:
    """One event, serialised at most once per format however many connections want it."""

    __slots__ = ("_frames", "event")

    def __init__(self, event: EventLike) -> None:
        self.event = event
        self._frames: dict[str, bytes] = {}

    def frame(self, fmt: str) -> bytes:
        cached = self._frames.get(fmt)
        if cached is None:
            cached = event_frame(fmt, self.event.headers, self.event.body)
            self._frames[fmt] = cached
        return cached


def _clean_reply(text: str) -> str:
    # A raw CR/LF would end the header block early and desynchronise every client.
    text = text.replace("\r", " ").replace("\n", " ")
    return (
        text or "-ERR command not found"
    )  # never an empty Reply-Text (mod_event_socket.c:2619-2623)


def command_reply(text: str, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """``Content-Type: command/reply`` with ``Reply-Text`` (not URL-encoded).

    ``extra`` headers make the "~" form used by bgapi/userauth: they follow Reply-Text.
    """
    lines = ["Content-Type: command/reply\n", f"Reply-Text: {_clean_reply(text)}\n"]
    lines += [f"{name}: {_clean_reply(value)}\n" for name, value in extra]
    lines.append("\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def bgapi_reply(job_uuid: str) -> bytes:
    """``+OK Job-UUID: <id>`` plus a ``Job-UUID`` header (mod_event_socket.c:2333-2395)."""
    return command_reply(f"+OK Job-UUID: {job_uuid}", [("Job-UUID", job_uuid)])


def api_response(body: str) -> bytes:
    """``api/response`` with Content-Length; never an empty body (mod_event_socket.c:1560-1600)."""
    raw = (body or "-ERR no reply\n").encode("utf-8", "surrogateescape")
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(raw) + raw


def disconnect_notice(body: str = GOODBYE, controlled_uuid: str | None = None) -> bytes:
    """``text/disconnect-notice`` (send_disconnect, mod_event_socket.c:631-660)."""
    raw = body.encode("utf-8")
    head = "Content-Type: text/disconnect-notice\n"
    if controlled_uuid:
        head += f"Controlled-Session-UUID: {controlled_uuid}\nContent-Disposition: disconnect\n"
    return f"{head}Content-Length: {len(raw)}\n\n".encode() + raw


def linger_notice(controlled_uuid: str, channel_name: str, linger_time: int | None) -> bytes:
    """The notice sent when a controlled channel hangs up and the connection lingers."""
    lt = "-1" if linger_time is None else str(linger_time)  # -1: linger until exit
    return (
        "Content-Type: text/disconnect-notice\n"
        f"Controlled-Session-UUID: {controlled_uuid}\n"
        "Content-Disposition: linger\n"
        f"Channel-Name: {fs_urlencode(channel_name)}\n"
        f"Linger-Time: {lt}\n"
        "Content-Length: 0\n\n"
    ).encode("ascii")


def connect_reply(channel_headers: Mapping[str, str], *, async_mode: bool, full: bool) -> bytes:
    """The answer to ``connect`` in outbound mode (mod_event_socket.c:2022-2047): a
    serialised CHANNEL_DATA event, not a command/reply frame — the channel's headers, then
    at the bottom ``Content-Type: command/reply``, ``Reply-Text: +OK\n`` (URL-encoded like
    every value: ``%2BOK%0A``), ``Socket-Mode`` and ``Control``; one blank line, no
    Content-Length. Clients key on that shape (modesl: a command/reply whose Event-Name is
    CHANNEL_DATA; go-eventsocket: URL-decodes when Reply-Text starts with ``%``)."""
    headers = {k: v for k, v in channel_headers.items() if k not in ("Content-Type", "Reply-Text")}
    headers["Content-Type"] = "command/reply"
    headers["Reply-Text"] = "+OK\n"
    headers["Socket-Mode"] = "async" if async_mode else "static"
    headers["Control"] = "full" if full else "single-channel"
    return plain_event(headers)


def log_data(
    text: str,
    level: int,
    *,
    file: str = "",
    func: str = "",
    line: int = 0,
    user_data: str = "",
    channel: int = 0,
) -> bytes:
    """A ``log/data`` frame (mod_event_socket.c read_packet): the log line as the body,
    its level (0-7), source file, function and line and the channel uuid (``User-Data``)
    as headers. Only ever sent to a connection that asked with ``log <level>``."""
    raw = text.encode("utf-8", "surrogateescape")
    return (
        "Content-Type: log/data\n"
        f"Content-Length: {len(raw)}\n"
        f"Log-Level: {level}\n"
        f"Text-Channel: {channel}\n"
        f"Log-File: {_clean_reply(file) if file else ''}\n"
        f"Log-Func: {_clean_reply(func) if func else ''}\n"
        f"Log-Line: {line}\n"
        f"User-Data: {_clean_reply(user_data) if user_data else ''}\n"
        "\n"
    ).encode("utf-8", "surrogateescape") + raw
